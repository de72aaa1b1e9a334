//! InitProducerId for idempotent producers. Each call hands out a fresh producer id at
//! epoch 0: a producer that asks again (KIP-360 epoch bump after an error) simply starts a
//! new sequence, which is always safe. Transactional ids wait for the transactions work.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use super::Ctx;

pub async fn init(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        return resp.with_error_code(ctx.err(ResponseError::TransactionalIdAuthorizationFailed));
    }
    match ctx.broker.topics.next_producer_id().await {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => resp.with_error_code(ctx.err(e)),
    }
}
