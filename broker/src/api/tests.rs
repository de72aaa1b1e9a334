//! Request-path tests against a real broker state on a temp dir: every API at every
//! advertised version answers a well-formed request, and random or mutated frames never
//! panic the broker (they get an error response or a closed connection).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{handle, versions, ProtocolError};
use crate::broker::Broker;
use crate::config::{BrokerConfig, Property};

async fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let pairs: Vec<Property> = [
        ("node.id", "1"),
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        ("log.dirs", dir.to_str().unwrap()),
        ("offsets.topic.num.partitions", "3"),
        ("group.initial.rebalance.delay.ms", "0"),
        ("offsets.topic.replication.factor", "1"),
    ]
    .iter()
    .map(|(k, v)| Property::new(*k, *v))
    .collect();
    crate::server::start(BrokerConfig::from_properties(&pairs).unwrap()).await.unwrap().broker
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn frame<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, req: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(s("test")));
    let mut b = BytesMut::new();
    header.encode(&mut b, key.request_header_version(version)).unwrap();
    req.encode(&mut b, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    b.freeze()
}

/// A representative, well-formed request for every implemented API at `version`.
fn sample(key: ApiKey, v: i16) -> Option<Bytes> {
    let topic = TopicName(s("t"));
    let batch = Bytes::from(crate::storage::batch::tests::encode(3, kafka_protocol::records::Compression::None, 1000));
    Some(match key {
        ApiKey::ApiVersions if v >= 3 => frame(
            key,
            v,
            &ApiVersionsRequest::default().with_client_software_name(s("x")).with_client_software_version(s("1")),
        ),
        ApiKey::ApiVersions => frame(key, v, &ApiVersionsRequest::default()),
        ApiKey::Metadata => frame(
            key,
            v,
            &MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(topic))])),
        ),
        ApiKey::Produce => frame(
            key,
            v,
            &ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
                produce_request::TopicProduceData::default().with_name(topic).with_partition_data(vec![
                    produce_request::PartitionProduceData::default().with_index(0).with_records(Some(batch)),
                ]),
            ]),
        ),
        ApiKey::Fetch => frame(
            key,
            v,
            &FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
                fetch_request::FetchTopic::default().with_topic(topic).with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20),
                ]),
            ]),
        ),
        ApiKey::ListOffsets => frame(
            key,
            v,
            &ListOffsetsRequest::default().with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic)
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2)])]),
        ),
        ApiKey::CreateTopics => frame(
            key,
            v,
            &CreateTopicsRequest::default().with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s("new")))
                .with_num_partitions(2)
                .with_replication_factor(1)]),
        ),
        ApiKey::DescribeConfigs => frame(
            key,
            v,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t")),
            ]),
        ),
        ApiKey::FindCoordinator => frame(
            key,
            v,
            &if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])
            } else {
                FindCoordinatorRequest::default().with_key(s("g"))
            },
        ),
        ApiKey::OffsetFetch => frame(
            key,
            v,
            &if v >= 8 {
                OffsetFetchRequest::default()
                    .with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s("g")))
                        .with_topics(None)])
            } else {
                OffsetFetchRequest::default().with_group_id(GroupId(s("g"))).with_topics(None)
            },
        ),
        ApiKey::OffsetCommit => frame(
            key,
            v,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic)
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(1)
                    ])]),
        ),
        ApiKey::ListGroups => frame(key, v, &ListGroupsRequest::default()),
        ApiKey::DescribeGroups => frame(key, v, &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))])),
        ApiKey::InitProducerId => frame(key, v, &InitProducerIdRequest::default()),
        ApiKey::DescribeCluster => frame(key, v, &DescribeClusterRequest::default()),
        ApiKey::Heartbeat => {
            frame(key, v, &HeartbeatRequest::default().with_group_id(GroupId(s("g"))).with_member_id(s("m")))
        }
        ApiKey::LeaveGroup => frame(
            key,
            v,
            &if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(s("m"))])
            } else {
                LeaveGroupRequest::default().with_group_id(GroupId(s("g"))).with_member_id(s("m"))
            },
        ),
        ApiKey::JoinGroup => frame(
            key,
            v,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s(&format!("jg{v}"))))
                .with_session_timeout_ms(10000)
                .with_rebalance_timeout_ms(10000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"m"))]),
        ),
        ApiKey::OffsetForLeaderEpoch => frame(
            key,
            v,
            &OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default().with_topic(topic).with_partitions(
                    vec![offset_for_leader_epoch_request::OffsetForLeaderPartition::default().with_leader_epoch(0)],
                ),
            ]),
        ),
        ApiKey::DeleteRecords => frame(
            key,
            v,
            &DeleteRecordsRequest::default().with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic)
                .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default().with_offset(0)])]),
        ),
        ApiKey::CreatePartitions => frame(
            key,
            v,
            &CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default().with_name(topic).with_count(2),
            ]),
        ),
        ApiKey::IncrementalAlterConfigs => frame(
            key,
            v,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1000")))]),
            ]),
        ),
        ApiKey::AlterConfigs => frame(
            key,
            v,
            &AlterConfigsRequest::default()
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))]),
        ),
        ApiKey::DeleteGroups => {
            frame(key, v, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("nope"))]))
        }
        ApiKey::DeleteTopics => frame(
            key,
            v,
            &if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(TopicName(s("new"))))
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("new"))])
            },
        ),
        ApiKey::SyncGroup => {
            frame(key, v, &SyncGroupRequest::default().with_group_id(GroupId(s("g"))).with_member_id(s("m")))
        }
        ApiKey::DescribeQuorum => frame(key, v, &DescribeQuorumRequest::default()),
        ApiKey::ElectLeaders => frame(
            key,
            v,
            &ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default().with_topic(topic).with_partitions(vec![0]),
            ])),
        ),
        ApiKey::AlterPartitionReassignments => frame(
            key,
            v,
            &AlterPartitionReassignmentsRequest::default().with_allow_replication_factor_change(true).with_topics(
                vec![alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(topic)
                    .with_partitions(vec![alter_partition_reassignments_request::ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(vec![BrokerId(1)]))])],
            ),
        ),
        ApiKey::ListPartitionReassignments => frame(key, v, &ListPartitionReassignmentsRequest::default()),
        ApiKey::DescribeLogDirs => frame(key, v, &DescribeLogDirsRequest::default()),
        ApiKey::AddPartitionsToTxn => {
            let topics = vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(topic)
                .with_partitions(vec![0])];
            frame(
                key,
                v,
                &if v >= 4 {
                    AddPartitionsToTxnRequest::default().with_transactions(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                            .with_transactional_id(TransactionalId(s("tx")))
                            .with_producer_id(ProducerId(1))
                            .with_verify_only(true)
                            .with_topics(topics),
                    ])
                } else {
                    AddPartitionsToTxnRequest::default()
                        .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
                        .with_v3_and_below_producer_id(ProducerId(1))
                        .with_v3_and_below_topics(topics)
                },
            )
        }
        ApiKey::AddOffsetsToTxn => frame(
            key,
            v,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(1))
                .with_group_id(GroupId(s("g"))),
        ),
        ApiKey::EndTxn => frame(
            key,
            v,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(1))
                .with_committed(true),
        ),
        ApiKey::TxnOffsetCommit => frame(
            key,
            v,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("g")))
                .with_producer_id(ProducerId(1))
                .with_generation_id(-1)
                .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic)
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default().with_committed_offset(1)
                    ])]),
        ),
        ApiKey::WriteTxnMarkers => frame(
            key,
            v,
            &WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(1))
                    .with_transaction_result(true)
                    .with_topics(vec![write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(topic)
                        .with_partition_indexes(vec![0])]),
            ]),
        ),
        ApiKey::ListTransactions => frame(key, v, &ListTransactionsRequest::default().with_duration_filter(-1)),
        ApiKey::DescribeTransactions => frame(
            key,
            v,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s("tx"))]),
        ),
        ApiKey::DescribeProducers => frame(
            key,
            v,
            &DescribeProducersRequest::default().with_topics(vec![describe_producers_request::TopicRequest::default()
                .with_name(topic)
                .with_partition_indexes(vec![0])]),
        ),
        ApiKey::DescribeUserScramCredentials => frame(key, v, &DescribeUserScramCredentialsRequest::default()),
        ApiKey::AlterUserScramCredentials => frame(key, v, &AlterUserScramCredentialsRequest::default()),
        ApiKey::DescribeClientQuotas => frame(key, v, &DescribeClientQuotasRequest::default()),
        ApiKey::DescribeAcls => frame(key, v, &DescribeAclsRequest::default()),
        ApiKey::CreateAcls => frame(
            key,
            v,
            &CreateAclsRequest::default().with_creations(vec![create_acls_request::AclCreation::default()]),
        ),
        ApiKey::DeleteAcls => frame(
            key,
            v,
            &DeleteAclsRequest::default().with_filters(vec![delete_acls_request::DeleteAclsFilter::default()]),
        ),
        ApiKey::SaslHandshake => frame(key, v, &SaslHandshakeRequest::default().with_mechanism(s("PLAIN"))),
        ApiKey::SaslAuthenticate => {
            frame(key, v, &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0u\0p")))
        }
        _ => return None,
    })
}

const ALL: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::CreateTopics,
    ApiKey::DescribeConfigs,
    ApiKey::FindCoordinator,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::InitProducerId,
    ApiKey::DescribeCluster,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::DeleteRecords,
    ApiKey::CreatePartitions,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::AlterConfigs,
    ApiKey::DeleteGroups,
    ApiKey::DeleteTopics,
    ApiKey::DescribeQuorum,
    ApiKey::ElectLeaders,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::DescribeLogDirs,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::WriteTxnMarkers,
    ApiKey::ListTransactions,
    ApiKey::DescribeTransactions,
    ApiKey::DescribeProducers,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeClientQuotas,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
];

async fn call(b: &Arc<Broker>, f: Bytes) -> Option<Result<Option<Bytes>, ProtocolError>> {
    let out = tokio::time::timeout(
        Duration::from_millis(200),
        handle(b, f, "127.0.0.1", "PLAINTEXT", std::time::Instant::now()),
    )
    .await
    .ok()?;
    Some(out.map(|reply| reply.map(|r| r.frame)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answers_every_advertised_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.topics.create_topic("t", 1, 1, Default::default()).await.unwrap();
    let mut covered = 0;
    for key in ALL {
        let range = versions::supported(*key).unwrap();
        for v in range.min..=range.max {
            let f = sample(*key, v).unwrap_or_else(|| panic!("no sample for {key:?}"));
            match call(&b, f).await {
                Some(Ok(Some(resp))) => {
                    assert!(resp.len() >= 8, "{key:?} v{v}: short response");
                    assert_eq!(&resp[4..8], &7i32.to_be_bytes(), "{key:?} v{v}: correlation id");
                }
                other => panic!("{key:?} v{v}: {other:?}"),
            }
            covered += 1;
        }
    }
    assert_eq!(versions::advertised().len(), ALL.len(), "every advertised API has a sample");
    assert!(covered > 100, "{covered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_versions_version_gets_kip_511_answer() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut f = BytesMut::new();
    f.put_i16(18);
    f.put_i16(99);
    f.put_i32(42);
    f.put_slice(b"\x00\x00garbage");
    let resp = call(&b, f.freeze()).await.unwrap().unwrap().unwrap();
    // size, correlation id, then ApiVersions v0: error code 35 (UNSUPPORTED_VERSION).
    assert_eq!(&resp[4..8], &42i32.to_be_bytes());
    assert_eq!(&resp[8..10], &35i16.to_be_bytes());
    // Any other API at an unknown version, or an unknown API, closes the connection.
    let mut f = BytesMut::new();
    f.put_i16(3);
    f.put_i16(99);
    f.put_i32(1);
    assert!(matches!(call(&b, f.freeze()).await, Some(Err(ProtocolError::UnsupportedVersion(..)))));
    let mut f = BytesMut::new();
    f.put_i16(999);
    f.put_i16(0);
    f.put_i32(1);
    assert!(matches!(call(&b, f.freeze()).await, Some(Err(ProtocolError::UnknownApi(999)))));
}

/// Fuzz the request decoder and handlers: valid frames with random mutations, truncations
/// and extensions, plus pure noise. None may panic. `FJORD_FUZZ_ITERATIONS` scales it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_frames_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.topics.create_topic("t", 1, 1, Default::default()).await.unwrap();
    let iterations: usize = std::env::var("FJORD_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let seeds: Vec<Bytes> = ALL
        .iter()
        .flat_map(|k| {
            let range = versions::supported(*k).unwrap();
            (range.min..=range.max).filter_map(move |v| sample(*k, v))
        })
        .collect();
    let mut outcomes = [0usize; 3];
    for i in 0..iterations {
        let mut f = if i % 10 == 0 {
            let n = rng.random_range(0..64);
            (0..n).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()
        } else {
            seeds[rng.random_range(0..seeds.len())].to_vec()
        };
        match rng.random_range(0..4) {
            0 if !f.is_empty() => {
                let cut = rng.random_range(0..f.len());
                f.truncate(cut)
            }
            1 => f.extend((0..rng.random_range(1..16)).map(|_| rng.random::<u8>())),
            _ => {
                for _ in 0..rng.random_range(1..6) {
                    if f.len() > 4 {
                        // Keep the API key and version mostly intact so bodies get decoded.
                        let at = rng.random_range(4..f.len());
                        f[at] = rng.random();
                    }
                }
            }
        }
        match call(&b, Bytes::from(f)).await {
            Some(Ok(_)) => outcomes[0] += 1,
            Some(Err(_)) => outcomes[1] += 1,
            None => outcomes[2] += 1,
        }
    }
    // The broker still answers a well-formed request afterwards, and t's data is intact.
    let ok = call(&b, sample(ApiKey::Metadata, 12).unwrap()).await;
    assert!(matches!(ok, Some(Ok(Some(_)))));
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_write_internal_topics_or_two_batches() {
    use kafka_protocol::protocol::Decodable;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.topics.create_topic("t", 1, 1, Default::default()).await.unwrap();
    b.topics.ensure_offsets_topic().await.unwrap();
    let one = crate::storage::batch::tests::encode(2, kafka_protocol::records::Compression::None, 1);
    let mut two = one.clone();
    two.extend_from_slice(&one);
    for (topic, records, want) in [("__consumer_offsets", one.clone(), 17i16), ("t", two, 87)] {
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
            produce_request::TopicProduceData::default().with_name(TopicName(s(topic))).with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records))),
            ]),
        ]);
        let resp = call(&b, frame(ApiKey::Produce, 9, &req)).await.unwrap().unwrap().unwrap();
        let mut body = resp.slice(4..);
        ResponseHeader::decode(&mut body, ProduceResponse::header_version(9)).unwrap();
        let r = ProduceResponse::decode(&mut body, 9).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, want, "{topic}");
    }
    let p = b.replicas.get("t", 0).unwrap();
    assert_eq!(p.lock().log.log_end_offset(), 0, "nothing stored");
}
