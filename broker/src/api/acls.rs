//! CreateAcls, DescribeAcls and DeleteAcls without an authorizer: answered
//! SECURITY_DISABLED, as Kafka answers them when `authorizer.class.name` is unset, so
//! `kafka-acls.sh` says security is disabled instead of pretending to store rules nothing
//! enforces. (The authorizer is not built; `authorizer.class.name` is an unknown key, so a
//! broker is never started believing it has one.)

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};

use super::{str, Ctx};

const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

pub async fn create(ctx: &Ctx<'_>, req: CreateAclsRequest) -> CreateAclsResponse {
    let results = req
        .creations
        .iter()
        .map(|_| {
            AclCreationResult::default()
                .with_error_code(ctx.err(ResponseError::SecurityDisabled))
                .with_error_message(Some(str(NO_AUTHORIZER)))
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub async fn describe(ctx: &Ctx<'_>, _req: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(ctx.err(ResponseError::SecurityDisabled))
        .with_error_message(Some(str(NO_AUTHORIZER)))
}

pub async fn delete(ctx: &Ctx<'_>, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let results = req
        .filters
        .iter()
        .map(|_| {
            DeleteAclsFilterResult::default()
                .with_error_code(ctx.err(ResponseError::SecurityDisabled))
                .with_error_message(Some(str(NO_AUTHORIZER)))
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
