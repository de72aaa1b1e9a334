//! Request dispatch: decode the header, check the version against what this broker
//! implements, decode the body with `kafka-protocol`, call the handler, encode the reply.
//! One module per API family; each handler is a plain async function of the request.

pub mod acls;
pub mod admin;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod partitions;
pub mod produce;
pub mod producer_id;
pub mod sasl;
pub mod txn;
pub mod users;
pub mod versions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker::Broker;
use crate::metrics::{Metrics, Phases, RemoteTime};
use tracing::Instrument;

/// Why a connection must be closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("request too short to hold a header")]
    Short,
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("malformed {0:?} v{1} request: {2}")]
    Malformed(ApiKey, i16, String),
    #[error("encoding response: {0}")]
    Encode(String),
    #[error("acks=0 produce failed with error {0}; closing so the producer refreshes metadata")]
    AcksZero(i16),
}

/// What a handler sees about the request beyond its body.
pub struct Ctx<'a> {
    pub broker: &'a Arc<Broker>,
    pub version: i16,
    pub client_id: String,
    pub client_host: String,
    /// The listener the request arrived on.
    pub listener: String,
    /// Time the handler spent waiting on others (`remote` in the request metrics).
    pub remote: RemoteTime,
    api: &'static str,
    /// Close the connection once the response is sent (`close_after_reply`).
    close: std::sync::atomic::AtomicBool,
}

impl Ctx<'_> {
    /// Count an error code for the request metrics and return it for the response.
    pub fn err(&self, e: ResponseError) -> i16 {
        self.broker.metrics.request_error(self.api, e.code());
        e.code()
    }
    /// This broker is cut off from the cluster and its answer is stale: the client should
    /// ask another broker next. Clients keep asking a broker they are connected to (and
    /// librdkafka connects only to the brokers it needs), so the connection is closed after
    /// the response, and the client's next Metadata request goes to another broker.
    pub fn close_after_reply(&self) {
        self.close.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn code(&self, r: Result<(), ResponseError>) -> i16 {
        match r {
            Ok(()) => 0,
            Err(e) => self.err(e),
        }
    }
}

/// The partition a request names, checked against the client's view of its leader epoch
/// (-1: no view), or the error code to answer for it.
pub fn leader_partition(
    ctx: &Ctx<'_>,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
) -> Result<crate::replica_manager::PartitionRef, i16> {
    let part = ctx.broker.replicas.get(topic, index).ok_or_else(|| ctx.err(ResponseError::UnknownTopicOrPartition))?;
    let (epoch, leader) = {
        let p = part.lock();
        (p.leader_epoch, p.is_leader())
    };
    if !leader {
        return Err(ctx.err(ResponseError::NotLeaderOrFollower));
    }
    check_epoch(epoch, current_leader_epoch).map_err(|e| ctx.err(e))?;
    Ok(part)
}

/// Compare a client's view of the leader epoch (-1: none) with the partition's.
pub fn check_epoch(leader_epoch: i32, current_leader_epoch: i32) -> Result<(), ResponseError> {
    match current_leader_epoch {
        e if e < 0 || e == leader_epoch => Ok(()),
        e if e > leader_epoch => Err(ResponseError::UnknownLeaderEpoch),
        _ => Err(ResponseError::FencedLeaderEpoch),
    }
}

pub fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn encode_response<R: Encodable + kafka_protocol::protocol::HeaderVersion>(
    correlation_id: i32,
    version: i16,
    resp: &R,
) -> Result<Bytes, ProtocolError> {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| resp.compute_size(version).map(|b| h + b))
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    resp.encode(&mut buf, version).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// KIP-511: an ApiVersions request of a version we do not know is answered with a v0
/// response carrying UNSUPPORTED_VERSION and our ranges, so the client can pick one.
fn unsupported_api_versions(correlation_id: i32) -> Result<Bytes, ProtocolError> {
    let resp = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(versions::advertised());
    encode_response(correlation_id, 0, &resp)
}

macro_rules! dispatch {
    ($ctx:ident, $buf:ident, $hdr:ident, $api:ident, $version:ident, { $($key:ident => $req:ty => $handler:path),* $(,)? }) => {
        match $api {
            $(ApiKey::$key => {
                let req = <$req>::decode(&mut $buf, $version)
                    .map_err(|e| ProtocolError::Malformed($api, $version, e.to_string()))?;
                let resp = $handler(&$ctx, req).await;
                encode_response($hdr.correlation_id, $version, &resp).map(Some)
            })*
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut $buf, $version)
                    .map_err(|e| ProtocolError::Malformed($api, $version, e.to_string()))?;
                let acks = req.acks;
                let resp = produce::handle(&$ctx, req).await;
                if acks == 0 {
                    // No response to carry an error: close, as Kafka does.
                    let err = resp.responses.iter().flat_map(|t| t.partition_responses.iter()).find(|p| p.error_code != 0);
                    match err {
                        Some(p) => Err(ProtocolError::AcksZero(p.error_code)),
                        None => Ok(None),
                    }
                } else {
                    encode_response($hdr.correlation_id, $version, &resp).map(Some)
                }
            }
            _ => Err(ProtocolError::UnsupportedVersion($api, $version)),
        }
    };
}

/// A response ready to be written, and where the request's time went so far.
pub struct Reply {
    pub frame: Bytes,
    pub timing: Timing,
    /// Close the connection after sending this (see `Ctx::close_after_reply`).
    pub close: bool,
}

/// A request's phases up to its answer; the connection adds the send time.
pub struct Timing {
    api: &'static str,
    queue: Duration,
    local: Duration,
    remote: Duration,
    answered: Instant,
    trace_id: Option<String>,
}

impl Timing {
    /// The response is written (or there is none): record the request.
    pub fn finish(self, metrics: &Metrics) {
        let phases =
            Phases { queue: self.queue, local: self.local, remote: self.remote, send: self.answered.elapsed() };
        metrics.request_done(self.api, phases, self.trace_id);
    }
}

/// Handle one request frame (without its size prefix), read completely at `received`.
/// `Ok(None)` means no response (acks=0 produce); `Err` means the connection must be
/// closed.
pub async fn handle(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    client_host: &str,
    listener: &str,
    received: Instant,
) -> Result<Option<Reply>, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::Short);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApi(key))?;
    let Some(range) = versions::supported(api) else {
        return Err(ProtocolError::UnknownApi(key));
    };
    if !range.contains(version) {
        if api == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let timing = Timing {
                api: versions::name(api),
                queue: received.elapsed(),
                local: Duration::ZERO,
                remote: Duration::ZERO,
                answered: Instant::now(),
                trace_id: None,
            };
            return unsupported_api_versions(correlation_id).map(|frame| Some(Reply { frame, timing, close: false }));
        }
        return Err(ProtocolError::UnsupportedVersion(api, version));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| ProtocolError::Malformed(api, version, e.to_string()))?;
    let api_name = versions::name(api);
    let started = Instant::now();
    let ctx = Ctx {
        broker,
        version,
        client_id: header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        client_host: client_host.to_string(),
        listener: listener.to_string(),
        remote: RemoteTime::default(),
        api: api_name,
        close: std::sync::atomic::AtomicBool::new(false),
    };
    let span = crate::telemetry::request_span(api_name, &ctx.client_id);
    let mut buf = frame;
    let dispatched = async {
        dispatch!(ctx, buf, header, api, version, {
            ApiVersions => ApiVersionsRequest => versions::handle,
            Metadata => MetadataRequest => metadata::handle,
            Fetch => FetchRequest => fetch::handle,
            ListOffsets => ListOffsetsRequest => fetch::list_offsets,
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest => fetch::offset_for_leader_epoch,
            CreateTopics => CreateTopicsRequest => admin::create_topics,
            DeleteTopics => DeleteTopicsRequest => admin::delete_topics,
            CreatePartitions => CreatePartitionsRequest => admin::create_partitions,
            DeleteRecords => DeleteRecordsRequest => admin::delete_records,
            DescribeCluster => DescribeClusterRequest => metadata::describe_cluster,
            DescribeConfigs => DescribeConfigsRequest => configs::describe,
            AlterConfigs => AlterConfigsRequest => configs::alter,
            IncrementalAlterConfigs => IncrementalAlterConfigsRequest => configs::incremental_alter,
            FindCoordinator => FindCoordinatorRequest => groups::find_coordinator,
            JoinGroup => JoinGroupRequest => groups::join,
            SyncGroup => SyncGroupRequest => groups::sync,
            Heartbeat => HeartbeatRequest => groups::heartbeat,
            LeaveGroup => LeaveGroupRequest => groups::leave,
            ListGroups => ListGroupsRequest => groups::list,
            DescribeGroups => DescribeGroupsRequest => groups::describe,
            DeleteGroups => DeleteGroupsRequest => groups::delete,
            OffsetCommit => OffsetCommitRequest => offsets::commit,
            OffsetFetch => OffsetFetchRequest => offsets::fetch,
            InitProducerId => InitProducerIdRequest => producer_id::init,
            AddPartitionsToTxn => AddPartitionsToTxnRequest => txn::add_partitions,
            AddOffsetsToTxn => AddOffsetsToTxnRequest => txn::add_offsets,
            EndTxn => EndTxnRequest => txn::end,
            TxnOffsetCommit => TxnOffsetCommitRequest => txn::offset_commit,
            WriteTxnMarkers => WriteTxnMarkersRequest => txn::write_markers,
            ListTransactions => ListTransactionsRequest => txn::list,
            DescribeTransactions => DescribeTransactionsRequest => txn::describe,
            DescribeProducers => DescribeProducersRequest => txn::describe_producers,
            DescribeQuorum => DescribeQuorumRequest => metadata::describe_quorum,
            ElectLeaders => ElectLeadersRequest => partitions::elect_leaders,
            AlterPartitionReassignments => AlterPartitionReassignmentsRequest => partitions::alter_reassignments,
            ListPartitionReassignments => ListPartitionReassignmentsRequest => partitions::list_reassignments,
            DescribeLogDirs => DescribeLogDirsRequest => partitions::describe_log_dirs,
            SaslHandshake => SaslHandshakeRequest => sasl::handshake_refused,
            AlterUserScramCredentials => AlterUserScramCredentialsRequest => users::alter,
            DescribeUserScramCredentials => DescribeUserScramCredentialsRequest => users::describe,
            DescribeClientQuotas => DescribeClientQuotasRequest => users::describe_client_quotas,
            DescribeAcls => DescribeAclsRequest => acls::describe,
            CreateAcls => CreateAclsRequest => acls::create,
            DeleteAcls => DeleteAclsRequest => acls::delete,
            SaslAuthenticate => SaslAuthenticateRequest => sasl::authenticate_refused,
        })
    };
    let (out, trace_id) = match span {
        Some(s) => (dispatched.instrument(s.span).await, s.trace_id),
        None => (dispatched.await, None),
    };
    let answered = Instant::now();
    let remote = ctx.remote.get();
    let timing = Timing {
        api: api_name,
        queue: started.saturating_duration_since(received),
        local: answered.saturating_duration_since(started).saturating_sub(remote),
        remote,
        answered,
        trace_id,
    };
    if buf.has_remaining() && out.is_ok() {
        tracing::debug!(api = api_name, version, extra = buf.remaining(), "trailing bytes after request body");
    }
    match out {
        Ok(Some(frame)) => Ok(Some(Reply { frame, timing, close: ctx.close.into_inner() })),
        other => {
            timing.finish(&broker.metrics);
            other.map(|_| None)
        }
    }
}

#[cfg(test)]
mod tests;
