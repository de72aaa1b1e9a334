//! The API versions this broker implements. ApiVersions advertises exactly these ranges
//! (never the codec crate's whole range): the minimums follow Kafka 4 (KIP-896), the
//! maximums stop before versions whose semantics Fjord does not implement yet (topic-id
//! fetches, the KIP-848 consumer protocol, share groups).

use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Ctx;

const SUPPORTED: &[(ApiKey, i16, i16, &str)] = &[
    // v13 names topics by id (KIP-516), which Fetch and Metadata do not serve yet.
    (ApiKey::Produce, 3, 12, "produce"),
    (ApiKey::Fetch, 4, 12, "fetch"),
    (ApiKey::ListOffsets, 1, 8, "list_offsets"),
    (ApiKey::Metadata, 0, 12, "metadata"),
    (ApiKey::OffsetCommit, 2, 8, "offset_commit"),
    (ApiKey::OffsetFetch, 1, 8, "offset_fetch"),
    (ApiKey::FindCoordinator, 0, 4, "find_coordinator"),
    (ApiKey::JoinGroup, 0, 9, "join_group"),
    (ApiKey::Heartbeat, 0, 4, "heartbeat"),
    (ApiKey::LeaveGroup, 0, 5, "leave_group"),
    (ApiKey::SyncGroup, 0, 5, "sync_group"),
    (ApiKey::DescribeGroups, 0, 5, "describe_groups"),
    (ApiKey::ListGroups, 0, 5, "list_groups"),
    (ApiKey::ApiVersions, 0, 4, "api_versions"),
    (ApiKey::CreateTopics, 2, 7, "create_topics"),
    (ApiKey::DeleteTopics, 1, 6, "delete_topics"),
    (ApiKey::DeleteRecords, 0, 2, "delete_records"),
    (ApiKey::InitProducerId, 0, 4, "init_producer_id"),
    (ApiKey::OffsetForLeaderEpoch, 2, 4, "offset_for_leader_epoch"),
    (ApiKey::DescribeConfigs, 1, 4, "describe_configs"),
    (ApiKey::AlterConfigs, 0, 2, "alter_configs"),
    (ApiKey::CreatePartitions, 0, 3, "create_partitions"),
    (ApiKey::DeleteGroups, 0, 2, "delete_groups"),
    (ApiKey::IncrementalAlterConfigs, 0, 1, "incremental_alter_configs"),
    (ApiKey::DescribeCluster, 0, 1, "describe_cluster"),
    (ApiKey::ElectLeaders, 0, 2, "elect_leaders"),
    (ApiKey::AlterPartitionReassignments, 0, 1, "alter_partition_reassignments"),
    (ApiKey::ListPartitionReassignments, 0, 0, "list_partition_reassignments"),
    (ApiKey::DescribeQuorum, 0, 2, "describe_quorum"),
    (ApiKey::DescribeLogDirs, 1, 4, "describe_log_dirs"),
    // EndTxn v5, TxnOffsetCommit v5 and Produce v12 belong to transaction.version 2
    // (KIP-890), which the finalized features advertise.
    (ApiKey::AddPartitionsToTxn, 0, 5, "add_partitions_to_txn"),
    (ApiKey::AddOffsetsToTxn, 0, 4, "add_offsets_to_txn"),
    (ApiKey::EndTxn, 0, 5, "end_txn"),
    (ApiKey::TxnOffsetCommit, 0, 5, "txn_offset_commit"),
    (ApiKey::WriteTxnMarkers, 1, 1, "write_txn_markers"),
    (ApiKey::DescribeProducers, 0, 0, "describe_producers"),
    (ApiKey::DescribeTransactions, 0, 0, "describe_transactions"),
    (ApiKey::ListTransactions, 0, 1, "list_transactions"),
    // SaslHandshake v0 is followed by bare SASL tokens instead of SaslAuthenticate requests;
    // librdkafka requires v0 in the range before it authenticates at all.
    (ApiKey::SaslHandshake, 0, 1, "sasl_handshake"),
    (ApiKey::SaslAuthenticate, 0, 2, "sasl_authenticate"),
    (ApiKey::DescribeUserScramCredentials, 0, 0, "describe_user_scram_credentials"),
    (ApiKey::AlterUserScramCredentials, 0, 0, "alter_user_scram_credentials"),
    (ApiKey::DescribeClientQuotas, 0, 1, "describe_client_quotas"),
    // Answered SECURITY_DISABLED: there is no authorizer (api/acls.rs).
    (ApiKey::DescribeAcls, 1, 3, "describe_acls"),
    (ApiKey::CreateAcls, 1, 3, "create_acls"),
    (ApiKey::DeleteAcls, 1, 3, "delete_acls"),
];

/// The versions of one API this broker implements, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    pub fn contains(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

pub fn supported(api: ApiKey) -> Option<VersionRange> {
    SUPPORTED.iter().find(|s| s.0 == api).map(|s| VersionRange { min: s.1, max: s.2 })
}

pub fn name(api: ApiKey) -> &'static str {
    SUPPORTED.iter().find(|s| s.0 == api).map(|s| s.3).unwrap_or("unknown")
}

pub fn advertised() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, min, max, _)| {
            ApiVersion::default().with_api_key(*k as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect()
}

/// The feature clients read from ApiVersions: `transaction.version` 2 (KIP-890), which
/// makes Kafka's 4.x clients use the version 2 transaction protocol.
pub const TRANSACTION_VERSION: i16 = 2;

/// Features never change on a running Fjord cluster: one epoch for their whole life (a
/// client only takes finalized features whose epoch is newer than what it has).
const FINALIZED_FEATURES_EPOCH: i64 = 1;

pub async fn handle(_ctx: &Ctx<'_>, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    let name = StrBytes::from_static_str("transaction.version");
    ApiVersionsResponse::default()
        .with_api_keys(advertised())
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(name.clone())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION)])
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(name)
            .with_min_version_level(TRANSACTION_VERSION)
            .with_max_version_level(TRANSACTION_VERSION)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn ranges_are_within_what_the_codec_supports() {
        for (k, min, max, _) in SUPPORTED {
            let r = k.valid_versions();
            assert!(r.min <= *min && *max <= r.max, "{k:?} {min}..{max} vs {r}");
        }
        let _ = ApiVersionsResponse::VERSIONS;
    }
}
