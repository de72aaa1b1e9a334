//! The transaction coordinator (Kafka's TransactionCoordinator and TransactionStateManager):
//! the state of every transactional id whose `__transaction_state` partition this node
//! leads, changed only by appending the new state to that partition and waiting for its
//! ISR, so a coordinator failover loses nothing a client was answered about.
//!
//! The flow of a transaction (Kafka's v1 protocol): InitProducerId gives the id a producer
//! id and a new epoch (fencing older producers, and first aborting a transaction they left
//! open); AddPartitionsToTxn and AddOffsetsToTxn move it to Ongoing; EndTxn writes
//! PrepareCommit or PrepareAbort and answers; the markers are then written to every
//! partition (`markers.rs`) and the state becomes CompleteCommit or CompleteAbort. While a
//! state change or markers are in flight, other requests for the id get
//! CONCURRENT_TRANSACTIONS, which clients retry. A transaction open longer than its
//! timeout is aborted with the epoch bumped, which fences its producer.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;

use super::markers::{MarkerWriter, Markers};
use super::peers::Peers;
use super::records::{self, TxnMetadata, TxnState};
use super::{TxnVersion, TRANSACTION_TOPIC};
use crate::clock::now_ms;
use crate::config::{BrokerConfig, TransactionConfig};
use crate::internal_log::{partition_for, InternalLog};
use crate::metadata::MetadataStore;
use crate::producer_ids::ProducerIds;
use crate::replica_manager::{ReplicaManager, TopicPartition};
use crate::replication::LeadershipListener;

/// Kafka's limit on a transactional id's producer epoch before a new producer id is taken.
const MAX_EPOCH: i16 = i16::MAX - 1;

struct Entry {
    meta: TxnMetadata,
    /// A state change of this id is being written.
    writing: bool,
}

#[derive(Default)]
struct State {
    txns: HashMap<String, Entry>,
    /// `__transaction_state` partitions this node leads and has loaded, with the leader
    /// epoch it loaded them in (the coordinator epoch written into markers).
    owned: HashMap<i32, i32>,
}

/// What a request does to a transactional id's state.
enum Step {
    /// Nothing to write: answer with the current state.
    Keep(TxnMetadata),
    /// Write this state, then answer with it.
    Write(TxnMetadata),
}

/// The answer to InitProducerId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

pub struct TransactionCoordinator {
    this: Weak<TransactionCoordinator>,
    log: InternalLog,
    config: TransactionConfig,
    producer_ids: Arc<ProducerIds>,
    peers: Arc<Peers>,
    markers: MarkerWriter,
    state: Mutex<State>,
    last_timeout_check: Mutex<i64>,
    last_expiry_check: Mutex<i64>,
    pub counts: TxnCounts,
}

/// Transactions this node coordinated since it started (read by the metrics scrape).
#[derive(Debug, Default)]
pub struct TxnCounts {
    pub started: AtomicU64,
    pub committed: AtomicU64,
    pub aborted: AtomicU64,
    pub timed_out: AtomicU64,
}

/// What the metrics scrape reads of the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpenTransactions {
    /// Transactions Ongoing or being completed.
    pub open: usize,
    /// Age of the oldest Ongoing transaction, in ms.
    pub oldest_ms: i64,
}

impl TransactionCoordinator {
    pub fn new(
        config: Arc<BrokerConfig>,
        metadata: Arc<MetadataStore>,
        replicas: Arc<ReplicaManager>,
        producer_ids: Arc<ProducerIds>,
    ) -> Arc<Self> {
        let peers = Arc::new(Peers::new(config.clone(), metadata));
        Arc::new_cyclic(|this| TransactionCoordinator {
            this: this.clone(),
            log: InternalLog::new(replicas, TRANSACTION_TOPIC),
            config: config.txn.clone(),
            producer_ids,
            markers: MarkerWriter::new(peers.clone()),
            peers,
            state: Mutex::new(State::default()),
            last_timeout_check: Mutex::new(0),
            last_expiry_check: Mutex::new(0),
            counts: TxnCounts::default(),
        })
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.state_log_num_partitions)
    }

    /// Whether this node coordinates `transactional_id` now.
    pub fn check(&self, transactional_id: &str) -> Result<(), ResponseError> {
        if self.state.lock().owned.contains_key(&self.partition_of(transactional_id)) {
            Ok(())
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// Apply `decide` to the id's current state and, if it asks for a new state, write it
    /// and wait for the ISR before making it current.
    async fn update(
        &self,
        transactional_id: &str,
        decide: impl FnOnce(Option<&TxnMetadata>, i64) -> Result<Step, ResponseError>,
    ) -> Result<TxnMetadata, ResponseError> {
        let p = self.partition_of(transactional_id);
        let now = now_ms();
        let next = {
            let mut st = self.state.lock();
            if !st.owned.contains_key(&p) {
                return Err(ResponseError::NotCoordinator);
            }
            let entry = st.txns.get(transactional_id);
            if entry.is_some_and(|e| e.writing) {
                return Err(ResponseError::ConcurrentTransactions);
            }
            match decide(entry.map(|e| &e.meta), now)? {
                Step::Keep(m) => return Ok(m),
                Step::Write(m) => {
                    match st.txns.get_mut(transactional_id) {
                        Some(e) => e.writing = true,
                        None => {
                            // Held as Dead until written, so a concurrent request waits.
                            let mut placeholder = m.clone();
                            placeholder.state = TxnState::Dead;
                            st.txns.insert(transactional_id.to_string(), Entry { meta: placeholder, writing: true });
                        }
                    }
                    m
                }
            }
        };
        let written = match self.log.append(p, records::encode_batch(transactional_id, Some(&next), now)) {
            Ok(wait) => wait.replicated().await,
            Err(e) => Err(e),
        };
        let mut st = self.state.lock();
        match written {
            Ok(()) => {
                if st.owned.contains_key(&p) {
                    st.txns.insert(transactional_id.to_string(), Entry { meta: next.clone(), writing: false });
                }
                Ok(next)
            }
            Err(e) => {
                match st.txns.get_mut(transactional_id) {
                    Some(entry) if entry.meta.state == TxnState::Dead => {
                        st.txns.remove(transactional_id);
                    }
                    Some(entry) => entry.writing = false,
                    None => {}
                }
                Err(e)
            }
        }
    }

    /// InitProducerId with a transactional id: a producer id for a new id, or the next
    /// epoch of the existing one (fencing its earlier producers). A transaction the earlier
    /// producer left open is aborted first; the client retries meanwhile.
    pub async fn init_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
    ) -> Result<ProducerIdAndEpoch, ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        self.check(transactional_id)?;
        // A new id when this transactional id has none or has used up its epochs.
        let fresh =
            self.fresh_producer_id_if(transactional_id, |m| m.is_none_or(|m| m.producer_epoch >= MAX_EPOCH)).await?;
        let mut abort_first = false;
        let result = self
            .update(transactional_id, |current, now| {
                let Some(m) = current else {
                    let id = fresh.ok_or(ResponseError::ConcurrentTransactions)?;
                    return Ok(Step::Write(TxnMetadata {
                        transactional_id: transactional_id.to_string(),
                        producer_id: id,
                        producer_epoch: 0,
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        last_update_ms: now,
                        start_ms: -1,
                        next_producer_id: -1,
                        previous_producer_id: -1,
                    }));
                };
                if let Some(e) = expected {
                    if e.producer_id >= 0 && (e.producer_id != m.producer_id || e.producer_epoch != m.producer_epoch) {
                        return Err(ResponseError::ProducerFenced);
                    }
                }
                match m.state {
                    s if s.is_preparing() => Err(ResponseError::ConcurrentTransactions),
                    TxnState::Ongoing => {
                        abort_first = true;
                        Err(ResponseError::ConcurrentTransactions)
                    }
                    _ => {
                        let mut next = m.clone();
                        if m.producer_epoch >= MAX_EPOCH {
                            next.producer_id = fresh.ok_or(ResponseError::ConcurrentTransactions)?;
                            next.producer_epoch = 0;
                        } else {
                            next.producer_epoch += 1;
                        }
                        next.timeout_ms = timeout_ms;
                        next.state = TxnState::Empty;
                        next.partitions.clear();
                        next.last_update_ms = now;
                        next.start_ms = -1;
                        Ok(Step::Write(next))
                    }
                }
            })
            .await;
        if abort_first {
            self.spawn_abort(transactional_id, "a new producer initialized the transactional id");
        }
        result.map(|m| ProducerIdAndEpoch { producer_id: m.producer_id, producer_epoch: m.producer_epoch })
    }

    /// A new producer id if `needed` says so of the id's current state. Taken before the
    /// state change that uses it: a producer id can only be had asynchronously, and
    /// `update` decides under the state's lock.
    async fn fresh_producer_id_if(
        &self,
        transactional_id: &str,
        needed: impl FnOnce(Option<&TxnMetadata>) -> bool,
    ) -> Result<Option<i64>, ResponseError> {
        let needed = needed(self.state.lock().txns.get(transactional_id).map(|e| &e.meta));
        Ok(if needed { Some(self.producer_ids.next().await?) } else { None })
    }

    /// The producer's id and epoch are the current ones of the transactional id.
    fn check_producer(m: Option<&TxnMetadata>, producer_id: i64, epoch: i16) -> Result<&TxnMetadata, ResponseError> {
        let m = m.ok_or(ResponseError::InvalidProducerIdMapping)?;
        if m.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(m)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<(), ResponseError> {
        let mut started = false;
        self.update(transactional_id, |current, now| {
            let m = Self::check_producer(current, producer_id, epoch)?;
            if m.state.is_preparing() {
                return Err(ResponseError::ConcurrentTransactions);
            }
            if m.state == TxnState::Dead {
                return Err(ResponseError::InvalidTxnState);
            }
            if m.state == TxnState::Ongoing && partitions.iter().all(|tp| m.partitions.contains(tp)) {
                return Ok(Step::Keep(m.clone()));
            }
            let mut next = m.clone();
            if m.state != TxnState::Ongoing {
                started = true;
                next.start_ms = now;
                next.partitions.clear();
            }
            next.state = TxnState::Ongoing;
            next.partitions.extend(partitions.iter().cloned());
            next.last_update_ms = now;
            Ok(Step::Write(next))
        })
        .await?;
        if started {
            self.counts.started.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// KIP-890's `verify_only`: whether each partition is in the producer's open transaction.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Vec<bool>, ResponseError> {
        self.check(transactional_id)?;
        let st = self.state.lock();
        let m = Self::check_producer(st.txns.get(transactional_id).map(|e| &e.meta), producer_id, epoch)?;
        Ok(partitions.iter().map(|tp| m.state == TxnState::Ongoing && m.partitions.contains(tp)).collect())
    }

    /// KIP-890 verification, asked by a partition leader before the first batch of a
    /// transaction is written there: is the partition in the producer's open transaction?
    /// A version 2 client does not add partitions itself: its partition is added instead.
    /// The coordinator answers from its state, here or over the network. Errors are the
    /// produce request's: a coordinator that cannot answer is NOT_ENOUGH_REPLICAS (the
    /// producer retries), a stale epoch INVALID_PRODUCER_EPOCH, a partition not in the
    /// transaction INVALID_TXN_STATE.
    pub async fn verify_partition(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
        version: TxnVersion,
    ) -> Result<(), ResponseError> {
        use kafka_protocol::messages::add_partitions_to_txn_request::{
            AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
        };
        use kafka_protocol::messages::{
            AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName, TransactionalId,
        };
        use kafka_protocol::protocol::StrBytes;
        let add = version == TxnVersion::V2;
        // Kafka's answers: a version 2 producer retries CONCURRENT_TRANSACTIONS (the
        // previous transaction's markers are still being written), an older one only
        // NOT_ENOUGH_REPLICAS.
        let code = |e: ResponseError| match e {
            ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
            ResponseError::ConcurrentTransactions if add => ResponseError::ConcurrentTransactions,
            ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
            _ => ResponseError::InvalidTxnState,
        };
        let p = self.partition_of(transactional_id);
        if add && self.state.lock().owned.contains_key(&p) {
            let added = self.add_partitions(transactional_id, producer_id, epoch, std::slice::from_ref(tp)).await;
            return added.map_err(code);
        }
        if self.state.lock().owned.contains_key(&p) {
            let found = self.verify_partitions(transactional_id, producer_id, epoch, std::slice::from_ref(tp));
            return match found.map_err(code)?.first() {
                Some(true) => Ok(()),
                _ => Err(ResponseError::InvalidTxnState),
            };
        }
        let leader = self
            .peers
            .metadata
            .topic(TRANSACTION_TOPIC)
            .and_then(|t| t.partition(p).map(|m| m.leader))
            .filter(|l| *l >= 0 && *l != self.peers.node_id())
            .ok_or(ResponseError::NotEnoughReplicas)?;
        let req =
            AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_verify_only(!add)
                .with_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![tp.partition])])]);
        let resp: AddPartitionsToTxnResponse = self
            .peers
            .request(leader, ApiKey::AddPartitionsToTxn, 4, &req)
            .await
            .map_err(|_| ResponseError::NotEnoughReplicas)?;
        if let Some(e) = ResponseError::try_from_code(resp.error_code) {
            return Err(code(e));
        }
        let result = resp
            .results_by_transaction
            .iter()
            .flat_map(|t| t.topic_results.iter())
            .filter(|t| t.name.as_str() == tp.topic)
            .flat_map(|t| t.results_by_partition.iter())
            .find(|r| r.partition_index == tp.partition)
            .map(|r| r.partition_error_code);
        match result {
            Some(0) => Ok(()),
            Some(c) => Err(ResponseError::try_from_code(c).map_or(ResponseError::InvalidTxnState, code)),
            None => Err(ResponseError::InvalidTxnState),
        }
    }

    /// EndTxn: write PrepareCommit or PrepareAbort, answer with the producer id and epoch
    /// the client goes on with, and finish in the background.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        version: TxnVersion,
    ) -> Result<ProducerIdAndEpoch, ResponseError> {
        self.check(transactional_id)?;
        // Version 2 bumps the epoch: one that is used up needs a new producer id.
        let fresh = self
            .fresh_producer_id_if(transactional_id, |m| {
                version == TxnVersion::V2 && m.is_some_and(|m| m.producer_epoch >= MAX_EPOCH)
            })
            .await?;
        let mut prepared = false;
        let m = self
            .update(transactional_id, |current, now| {
                let step = match version {
                    TxnVersion::V1 => end_v1(Self::check_producer(current, producer_id, epoch)?, commit, now)?,
                    TxnVersion::V2 => end_v2(current, producer_id, epoch, commit, fresh, now)?,
                };
                prepared = matches!(&step, Step::Write(_));
                Ok(step)
            })
            .await?;
        if prepared {
            self.spawn_complete(transactional_id.to_string());
        }
        Ok(if m.next_producer_id >= 0 {
            ProducerIdAndEpoch { producer_id: m.next_producer_id, producer_epoch: 0 }
        } else {
            ProducerIdAndEpoch { producer_id: m.producer_id, producer_epoch: m.producer_epoch }
        })
    }

    /// Abort the id's open transaction with its epoch bumped (its producer is fenced).
    fn spawn_abort(&self, transactional_id: &str, why: &'static str) {
        let Some(this) = self.this.upgrade() else { return };
        let tid = transactional_id.to_string();
        spawn(async move {
            let r = this
                .update(&tid, |current, now| match current {
                    Some(m) if m.state == TxnState::Ongoing => {
                        let mut next = m.clone();
                        next.producer_epoch = m.producer_epoch.saturating_add(1);
                        next.state = TxnState::PrepareAbort;
                        next.last_update_ms = now;
                        Ok(Step::Write(next))
                    }
                    Some(m) => Ok(Step::Keep(m.clone())),
                    None => Err(ResponseError::InvalidProducerIdMapping),
                })
                .await;
            match r {
                Ok(m) if m.state == TxnState::PrepareAbort => {
                    tracing::info!(transactional_id = %tid, producer_id = m.producer_id, reason = why, "aborting transaction");
                    this.complete(tid).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(transactional_id = %tid, error = ?e, "could not abort transaction yet"),
            }
        });
    }

    fn spawn_complete(&self, transactional_id: String) {
        if let Some(this) = self.this.upgrade() {
            spawn(async move { this.complete(transactional_id).await });
        }
    }

    /// Write the markers of a prepared transaction, then its Complete state.
    async fn complete(&self, transactional_id: String) {
        let p = self.partition_of(&transactional_id);
        let (m, coordinator_epoch) = {
            let st = self.state.lock();
            let Some(e) = st.txns.get(&transactional_id) else { return };
            let Some(epoch) = st.owned.get(&p) else { return };
            if !matches!(e.meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                return;
            }
            (e.meta.clone(), *epoch)
        };
        let commit = m.state == TxnState::PrepareCommit;
        let markers = Markers {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            commit,
            coordinator_epoch,
            partitions: m.partitions.clone(),
        };
        let still = || self.state.lock().owned.get(&p) == Some(&coordinator_epoch);
        if !self.markers.write(&markers, &still).await {
            return;
        }
        loop {
            let r = self
                .update(&transactional_id, |current, now| match current {
                    Some(c)
                        if c.state == m.state
                            && c.producer_id == m.producer_id
                            && c.producer_epoch == m.producer_epoch =>
                    {
                        let mut next = c.clone();
                        next.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
                        next.partitions.clear();
                        next.last_update_ms = now;
                        if c.next_producer_id >= 0 {
                            next.previous_producer_id = c.producer_id;
                            next.producer_id = c.next_producer_id;
                            next.producer_epoch = 0;
                            next.next_producer_id = -1;
                        }
                        Ok(Step::Write(next))
                    }
                    Some(c) => Ok(Step::Keep(c.clone())),
                    None => Err(ResponseError::InvalidProducerIdMapping),
                })
                .await;
            match r {
                Err(ResponseError::ConcurrentTransactions) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    tracing::warn!(transactional_id = %transactional_id, error = ?e, "completing transaction failed; the next coordinator finishes it");
                    return;
                }
                Ok(_) => {
                    let n = if commit { &self.counts.committed } else { &self.counts.aborted };
                    n.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Abort transactions open past their timeout, and forget ids idle past
    /// `transactional.id.expiration.ms`. Called every 100 ms; works at the configured
    /// intervals.
    pub fn tick(&self) {
        let now = now_ms();
        if due(&self.last_timeout_check, now, self.config.abort_timed_out_interval_ms) {
            let expired: Vec<String> = {
                let st = self.state.lock();
                st.txns
                    .values()
                    .filter(|e| {
                        !e.writing
                            && e.meta.state == TxnState::Ongoing
                            && e.meta.start_ms >= 0
                            && now - e.meta.start_ms > e.meta.timeout_ms as i64
                    })
                    .map(|e| e.meta.transactional_id.clone())
                    .collect()
            };
            for tid in expired {
                self.counts.timed_out.fetch_add(1, Ordering::Relaxed);
                self.spawn_abort(&tid, "transaction.timeout.ms passed");
            }
        }
        if due(&self.last_expiry_check, now, self.config.remove_expired_interval_ms) {
            let idle: Vec<String> = {
                let st = self.state.lock();
                st.txns
                    .values()
                    .filter(|e| {
                        !e.writing
                            && matches!(
                                e.meta.state,
                                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                            )
                            && now - e.meta.last_update_ms > self.config.id_expiration_ms
                    })
                    .map(|e| e.meta.transactional_id.clone())
                    .collect()
            };
            for tid in idle {
                self.expire(&tid);
            }
        }
    }

    /// Write the tombstone of an idle transactional id, so compaction removes it.
    fn expire(&self, transactional_id: &str) {
        let p = self.partition_of(transactional_id);
        {
            let mut st = self.state.lock();
            match st.txns.get_mut(transactional_id) {
                Some(e) if !e.writing => e.writing = true,
                _ => return,
            }
        }
        let Some(this) = self.this.upgrade() else { return };
        let tid = transactional_id.to_string();
        spawn(async move {
            let written = match this.log.append(p, records::encode_batch(&tid, None, now_ms())) {
                Ok(wait) => wait.replicated().await,
                Err(e) => Err(e),
            };
            let mut st = this.state.lock();
            match written {
                Ok(()) => {
                    st.txns.remove(&tid);
                    tracing::info!(transactional_id = %tid, "expired idle transactional id (transactional.id.expiration.ms)");
                }
                Err(_) => {
                    if let Some(e) = st.txns.get_mut(&tid) {
                        e.writing = false;
                    }
                }
            }
        });
    }

    /// This node became leader of `__transaction_state` partition `p`: load its ids and
    /// finish the transactions that were being committed or aborted.
    pub fn load_partition(&self, p: i32) {
        let mut loaded: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        let replayed = self.log.replay(p, &mut |h, recs| {
            if h.is_control() {
                return;
            }
            for r in recs {
                let Some(tid) = r.key.and_then(records::decode_key) else { continue };
                let value = r.value.and_then(|v| records::decode_value(&tid, v));
                loaded.insert(tid, value);
            }
        });
        if let Err(e) = replayed {
            tracing::error!(partition = p, error = %e, "loading transactions failed");
            return;
        }
        let epoch = self.log.replicas().get(TRANSACTION_TOPIC, p).map_or(0, |part| part.lock().leader_epoch);
        let mut finish = Vec::new();
        {
            let mut st = self.state.lock();
            let n = self.config.state_log_num_partitions;
            st.txns.retain(|tid, _| partition_for(tid, n) != p);
            for (tid, m) in loaded {
                let Some(m) = m else { continue };
                if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                    finish.push(tid.clone());
                }
                st.txns.insert(tid, Entry { meta: m, writing: false });
            }
            st.owned.insert(p, epoch);
            tracing::info!(partition = p, transactional_ids = st.txns.len(), "loaded transactions");
        }
        for tid in finish {
            self.spawn_complete(tid);
        }
    }

    /// Leadership of partition `p` moved away: forget its ids.
    pub fn unload_partition(&self, p: i32) {
        let mut st = self.state.lock();
        if st.owned.remove(&p).is_some() {
            let n = self.config.state_log_num_partitions;
            st.txns.retain(|tid, _| partition_for(tid, n) != p);
            tracing::info!(partition = p, "unloaded transactions");
        }
    }

    /// Open transactions coordinated here, for the metrics.
    pub fn open(&self, now: i64) -> OpenTransactions {
        let st = self.state.lock();
        let mut out = OpenTransactions::default();
        for e in st.txns.values() {
            if e.meta.state == TxnState::Ongoing || e.meta.state.is_preparing() {
                out.open += 1;
            }
            if e.meta.state == TxnState::Ongoing && e.meta.start_ms >= 0 {
                out.oldest_ms = out.oldest_ms.max(now - e.meta.start_ms);
            }
        }
        out
    }

    /// Every transactional id this node coordinates, with its state.
    pub fn list(&self) -> Vec<TxnMetadata> {
        self.state.lock().txns.values().filter(|e| e.meta.state != TxnState::Dead).map(|e| e.meta.clone()).collect()
    }

    /// One transactional id's state, if this node coordinates it.
    pub fn describe(&self, transactional_id: &str) -> Result<Option<TxnMetadata>, ResponseError> {
        self.check(transactional_id)?;
        Ok(self.state.lock().txns.get(transactional_id).map(|e| e.meta.clone()).filter(|m| m.state != TxnState::Dead))
    }
}

/// Whether `interval_ms` passed since the last time this returned true.
/// EndTxn of transaction version 1: the epoch stays, a retry carries the same epoch.
fn end_v1(m: &TxnMetadata, commit: bool, now: i64) -> Result<Step, ResponseError> {
    match (m.state, commit) {
        (TxnState::Ongoing, _) => {
            let mut next = m.clone();
            next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
            next.last_update_ms = now;
            Ok(Step::Write(next))
        }
        // A retry of an EndTxn that was done.
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(Step::Keep(m.clone())),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(ResponseError::ConcurrentTransactions),
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// EndTxn of transaction version 2 (KIP-890, Kafka's rules): every EndTxn bumps the epoch,
/// so each transaction has its own and a delayed EndTxn or Produce of an earlier one is
/// fenced instead of landing in a later one. A retry is recognised by its epoch being the
/// one before the bump (or, after an overflow, by the previous producer id); an abort with
/// no partitions added is allowed (the client cannot know whether a Produce added one).
fn end_v2(
    current: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    fresh_producer_id: Option<i64>,
    now: i64,
) -> Result<Step, ResponseError> {
    use TxnState::*;
    let m = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
    let retry_on_bump = m.producer_epoch as i32 == epoch as i32 + 1;
    let retry_on_overflow = m.previous_producer_id == producer_id && epoch == MAX_EPOCH && m.producer_epoch == 0;
    if m.producer_id != producer_id && !retry_on_overflow {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    let retry = retry_on_bump || retry_on_overflow;
    let valid_epoch = match m.state {
        PrepareCommit | PrepareAbort => retry_on_bump,
        CompleteCommit | CompleteAbort => retry || epoch == m.producer_epoch,
        _ => epoch == m.producer_epoch,
    };
    if !valid_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    let prepare = |state: TxnState, no_partitions: bool| -> Result<Step, ResponseError> {
        let mut next = m.clone();
        if m.producer_epoch >= MAX_EPOCH {
            next.next_producer_id = fresh_producer_id.ok_or(ResponseError::ConcurrentTransactions)?;
        }
        next.producer_epoch = m.producer_epoch.saturating_add(1);
        next.state = state;
        if no_partitions {
            next.partitions.clear();
            next.start_ms = now;
        }
        next.last_update_ms = now;
        Ok(Step::Write(next))
    };
    match (m.state, commit) {
        (Ongoing, true) => prepare(PrepareCommit, false),
        (Ongoing, false) => prepare(PrepareAbort, false),
        (CompleteCommit, true) | (CompleteAbort, false) if retry => Ok(Step::Keep(m.clone())),
        (CompleteCommit | CompleteAbort | Empty, false) if !retry => prepare(PrepareAbort, true),
        (PrepareCommit, true) | (PrepareAbort, false) => Err(ResponseError::ConcurrentTransactions),
        _ => Err(ResponseError::InvalidTxnState),
    }
}

fn due(last: &Mutex<i64>, now: i64, interval_ms: u64) -> bool {
    let mut last = last.lock();
    if now - *last >= interval_ms as i64 {
        *last = now;
        true
    } else {
        false
    }
}

/// Background work of the coordinator runs on the node's runtime; leadership callbacks
/// arrive from a runtime thread.
fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(f);
        }
        Err(_) => tracing::error!("no runtime to finish transaction work on"),
    }
}

/// The coordinator follows the leadership of `__transaction_state`.
impl LeadershipListener for TransactionCoordinator {
    fn topic(&self) -> &str {
        TRANSACTION_TOPIC
    }

    fn became_leader(&self, partition: i32) {
        self.load_partition(partition);
    }

    fn resigned(&self, partition: i32) {
        self.unload_partition(partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(state: TxnState, producer_id: i64, epoch: i16) -> TxnMetadata {
        TxnMetadata {
            transactional_id: "t".into(),
            producer_id,
            producer_epoch: epoch,
            timeout_ms: 60_000,
            state,
            partitions: [TopicPartition::new("a", 0)].into_iter().collect(),
            last_update_ms: 0,
            start_ms: 0,
            next_producer_id: -1,
            previous_producer_id: -1,
        }
    }

    fn written(step: Result<Step, ResponseError>) -> TxnMetadata {
        match step {
            Ok(Step::Write(m)) => m,
            Ok(Step::Keep(m)) => panic!("kept {m:?}"),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn version_2_bumps_the_epoch_and_fences_a_delayed_end_txn() {
        let m = meta(TxnState::Ongoing, 7, 3);
        let prepared = written(end_v2(Some(&m), 7, 3, true, None, 10));
        assert_eq!((prepared.state, prepared.producer_epoch), (TxnState::PrepareCommit, 4));
        // The client retries while the markers are written, then after completion.
        assert!(matches!(end_v2(Some(&prepared), 7, 3, true, None, 11), Err(ResponseError::ConcurrentTransactions)));
        let done = TxnMetadata { state: TxnState::CompleteCommit, ..prepared.clone() };
        assert!(matches!(end_v2(Some(&done), 7, 3, true, None, 12), Ok(Step::Keep(_))));
        assert!(matches!(end_v2(Some(&done), 7, 3, false, None, 12), Err(ResponseError::InvalidTxnState)));
        // The next transaction runs with epoch 4: the first transaction's EndTxn, delayed,
        // is fenced instead of ending it (Jepsen's finding against version 1).
        let next = meta(TxnState::Ongoing, 7, 4);
        assert!(matches!(end_v2(Some(&next), 7, 3, true, None, 13), Err(ResponseError::ProducerFenced)));
        assert!(matches!(end_v1(&next, true, 13), Ok(Step::Write(_))), "version 1 cannot tell them apart");
    }

    #[test]
    fn version_2_aborts_with_no_partition_added() {
        for state in [TxnState::Empty, TxnState::CompleteCommit, TxnState::CompleteAbort] {
            let m = written(end_v2(Some(&meta(state, 7, 3)), 7, 3, false, None, 10));
            assert_eq!((m.state, m.producer_epoch), (TxnState::PrepareAbort, 4), "from {state:?}");
            assert!(m.partitions.is_empty());
        }
        assert!(matches!(
            end_v2(Some(&meta(TxnState::Empty, 7, 3)), 7, 3, true, None, 10),
            Err(ResponseError::InvalidTxnState)
        ));
    }

    #[test]
    fn version_2_takes_a_new_producer_id_when_the_epochs_are_used_up() {
        let m = meta(TxnState::Ongoing, 7, MAX_EPOCH);
        assert!(matches!(end_v2(Some(&m), 7, MAX_EPOCH, true, None, 10), Err(ResponseError::ConcurrentTransactions)));
        let prepared = written(end_v2(Some(&m), 7, MAX_EPOCH, true, Some(9), 10));
        assert_eq!((prepared.producer_id, prepared.producer_epoch, prepared.next_producer_id), (7, i16::MAX, 9));
        // Completed, the id is 9 with epoch 0; a retry still carries 7 and MAX_EPOCH.
        let done = TxnMetadata {
            state: TxnState::CompleteCommit,
            producer_id: 9,
            producer_epoch: 0,
            previous_producer_id: 7,
            next_producer_id: -1,
            ..prepared
        };
        assert!(matches!(end_v2(Some(&done), 7, MAX_EPOCH, true, None, 11), Ok(Step::Keep(_))));
        assert!(matches!(
            end_v2(Some(&done), 8, MAX_EPOCH, true, None, 11),
            Err(ResponseError::InvalidProducerIdMapping)
        ));
    }
}
