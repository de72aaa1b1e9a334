//! Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups. Thin adapters over the group coordinator.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{str, Ctx};
use crate::group::coordinator::{JoinRequest, LeaveResult, LeavingMember, MemberAssignment, Protocol};

fn opt(s: Option<String>) -> Option<StrBytes> {
    s.map(StrBytes::from_string)
}

/// The broker leading the partition of `key` in `__consumer_offsets` (key type 0, a
/// group) or `__transaction_state` (key type 1, a transactional id), as (id, host, port).
async fn coordinator_of(ctx: &Ctx<'_>, key_type: i8, key: &str) -> Result<(i32, String, i32), ResponseError> {
    let b = ctx.broker;
    let (t, p) = match key_type {
        0 => (b.topics.ensure_offsets_topic().await?, b.groups.partition_of(key)),
        1 => (b.topics.ensure_transaction_topic().await?, b.txns.partition_of(key)),
        _ => return Err(ResponseError::InvalidRequest),
    };
    let leader = t.partition(p).map(|p| p.leader).unwrap_or(-1);
    let broker = b.metadata.broker(leader).filter(|m| !m.fenced).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let e = broker.endpoint(&ctx.listener).ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((leader, e.host.clone(), e.port))
}

pub async fn find_coordinator(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.version >= 4 { req.coordinator_keys.clone() } else { vec![req.key.clone()] };
    let mut found = Vec::with_capacity(keys.len());
    for k in &keys {
        found.push(coordinator_of(ctx, req.key_type, k.as_str()).await);
    }
    if ctx.version >= 4 {
        let coordinators = keys
            .into_iter()
            .zip(found)
            .map(|(k, r)| {
                let c = Coordinator::default().with_key(k);
                match r {
                    Ok((id, host, port)) => c.with_node_id(BrokerId(id)).with_host(str(&host)).with_port(port),
                    Err(e) => c.with_error_code(ctx.err(e)).with_node_id(BrokerId(-1)).with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match found.pop().expect("one key") {
        Ok((id, host, port)) => {
            FindCoordinatorResponse::default().with_node_id(BrokerId(id)).with_host(str(&host)).with_port(port)
        }
        Err(e) => {
            FindCoordinatorResponse::default().with_error_code(ctx.err(e)).with_node_id(BrokerId(-1)).with_port(-1)
        }
    }
}

pub async fn join(ctx: &Ctx<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    if let Err(e) = ctx.broker.groups.check(req.group_id.as_str()) {
        return JoinGroupResponse::default()
            .with_error_code(ctx.err(e))
            .with_generation_id(-1)
            .with_protocol_name(Some(StrBytes::default()));
    }
    let r = ctx
        .broker
        .groups
        .join(JoinRequest {
            group_id: req.group_id.to_string(),
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|s| s.to_string()),
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            // v0 had no rebalance timeout: it was the session timeout.
            rebalance_timeout_ms: if ctx.version == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata })
                .collect(),
            require_known_member_id: ctx.version >= 4,
        })
        .await;
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_group_instance_id(opt(m.instance_id))
                .with_metadata(m.metadata)
        })
        .collect();
    let error = r.error.map(|e| ctx.err(e)).unwrap_or(0);
    JoinGroupResponse::default()
        .with_error_code(error)
        .with_generation_id(r.generation)
        .with_protocol_type(opt(r.protocol_type))
        // Before v7 the protocol name was not nullable.
        .with_protocol_name(Some(StrBytes::from_string(r.protocol_name.unwrap_or_default())))
        .with_leader(StrBytes::from_string(r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(StrBytes::from_string(r.member_id))
        .with_members(members)
}

pub async fn sync(ctx: &Ctx<'_>, req: SyncGroupRequest) -> SyncGroupResponse {
    if let Err(e) = ctx.broker.groups.check(req.group_id.as_str()) {
        return SyncGroupResponse::default().with_error_code(ctx.err(e));
    }
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| MemberAssignment { member_id: a.member_id.to_string(), assignment: a.assignment })
        .collect();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let r = ctx
        .broker
        .groups
        .sync(req.group_id.as_str(), req.generation_id, req.member_id.as_str(), instance.as_deref(), assignments)
        .await;
    let error = r.error.map(|e| ctx.err(e)).unwrap_or(0);
    SyncGroupResponse::default()
        .with_error_code(error)
        .with_protocol_type(opt(r.protocol_type))
        .with_protocol_name(opt(r.protocol_name))
        .with_assignment(r.assignment)
}

pub async fn heartbeat(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    if let Err(e) = ctx.broker.groups.check(req.group_id.as_str()) {
        return HeartbeatResponse::default().with_error_code(ctx.err(e));
    }
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let r = ctx.broker.groups.heartbeat(
        req.group_id.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        instance.as_deref(),
    );
    HeartbeatResponse::default().with_error_code(ctx.code(r))
}

pub async fn leave(ctx: &Ctx<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<LeavingMember> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeavingMember { member_id: req.member_id.to_string(), instance_id: None }]
    };
    if let Err(e) = ctx.broker.groups.check(req.group_id.as_str()) {
        return LeaveGroupResponse::default().with_error_code(ctx.err(e));
    }
    match ctx.broker.groups.leave(req.group_id.as_str(), members) {
        Err(e) => LeaveGroupResponse::default().with_error_code(ctx.err(e)),
        Ok(results) => {
            if ctx.version < 3 {
                let code = results.into_iter().next().map(|r| ctx.code(r.result)).unwrap_or(0);
                return LeaveGroupResponse::default().with_error_code(code);
            }
            let members = results
                .into_iter()
                .map(|LeaveResult { member_id: id, instance_id: inst, result: r }| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(opt(inst))
                        .with_error_code(ctx.code(r))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
    }
}

pub async fn list(ctx: &Ctx<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter(|g| {
            req.states_filter.is_empty() || req.states_filter.iter().any(|s| s.as_str().eq_ignore_ascii_case(g.state))
        })
        .filter(|_| {
            req.types_filter.is_empty() || req.types_filter.iter().any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(str(g.state))
                .with_group_type(str("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe(ctx: &Ctx<'_>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            if let Err(e) = ctx.broker.groups.check(gid.as_str()) {
                return DescribedGroup::default()
                    .with_group_id(gid)
                    .with_error_code(ctx.err(e))
                    .with_authorized_operations(i32::MIN);
            }
            let described = ctx.broker.groups.with_group(gid.as_str(), |g| {
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(str(&m.id))
                            .with_group_instance_id(m.instance_id.as_deref().map(str))
                            .with_client_id(str(&m.client_id))
                            .with_client_host(str(&m.client_host))
                            .with_member_metadata(m.metadata_for(g.protocol.as_deref()))
                            .with_member_assignment(m.assignment.clone())
                    })
                    .collect();
                DescribedGroup::default()
                    .with_group_state(str(g.state.name()))
                    .with_protocol_type(str(g.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(str(g.protocol.as_deref().unwrap_or("")))
                    .with_members(members)
            });
            described
                .unwrap_or_else(|| DescribedGroup::default().with_group_state(str("Dead")))
                .with_group_id(gid)
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = req
        .groups_names
        .into_iter()
        .map(|g| {
            let r = ctx.broker.groups.delete_group(g.as_str());
            DeletableGroupResult::default().with_group_id(g).with_error_code(ctx.code(r))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
