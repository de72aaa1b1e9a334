//! The group coordinator for the classic group protocol (JoinGroup/SyncGroup/Heartbeat/
//! LeaveGroup), following Kafka's state machine:
//!
//! Empty -> PreparingRebalance -> CompletingRebalance -> Stable -> PreparingRebalance ...
//!
//! A JoinGroup waits (through a oneshot channel) until every known member has rejoined or
//! the rebalance timeout passes; the leader then receives every member's metadata and
//! sends the assignment in its SyncGroup. A ticker expires sessions and rebalance deadlines.
//! Protocol types other than `consumer` (Kafka Connect's `connect`) are opaque bytes here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::offsets::{self, CommittedOffset, OffsetRecord, TxnProducer};
use super::offsets_store::{CommitWait, OffsetsStore, PendingOffsets};
use super::status::{CommitSample, CommitWindow};
use super::OFFSETS_TOPIC;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::replica_manager::{ReplicaManager, TopicPartition};
use crate::replication::LeadershipListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<JoinedMember>,
    pub skip_assignment: bool,
}

impl JoinResult {
    fn error(e: ResponseError, member_id: &str) -> Self {
        JoinResult { error: Some(e), generation: -1, member_id: member_id.to_string(), ..Default::default() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(e: ResponseError) -> Self {
        SyncResult { error: Some(e), ..Default::default() }
    }
}

/// A JoinGroup as the coordinator sees it.
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    join_tx: Option<oneshot::Sender<JoinResult>>,
    sync_tx: Option<oneshot::Sender<SyncResult>>,
    last_heartbeat: Instant,
}

impl Member {
    pub fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|q| q.name == p))
            .map(|q| q.metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
    /// After a join completes, members that have not sent SyncGroup by this deadline are
    /// removed, so followers never wait forever on a leader that went quiet.
    sync_deadline: Option<Instant>,
    awaiting_sync: std::collections::HashSet<String>,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// Transactional commits (TxnOffsetCommit) by producer id, visible once the
    /// transaction's COMMIT marker reaches the group's offsets partition.
    pub pending_txn: HashMap<i64, PendingOffsets>,
    /// OffsetCommit requests accepted since this node loaded the group.
    pub commits: u64,
    /// The last commit's time (from the log after a load).
    pub last_commit_ms: Option<i64>,
    /// The last commits per partition, for the Burrow-style status.
    pub windows: HashMap<TopicPartition, CommitWindow>,
    /// Since when the group has had no member (wall-clock ms): its offsets expire
    /// `offsets.retention.minutes` after both this and their commit (KIP-211).
    empty_since_ms: Option<i64>,
}

impl Group {
    fn new(id: &str) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            awaiting_sync: Default::default(),
            offsets: BTreeMap::new(),
            pending_txn: HashMap::new(),
            commits: 0,
            last_commit_ms: None,
            windows: HashMap::new(),
            empty_since_ms: None,
        }
    }

    /// The answer to a member that rejoins without causing a rebalance: the current
    /// generation, no member list.
    fn current_generation(&self, member_id: String) -> JoinResult {
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id,
            members: vec![],
            skip_assignment: false,
        }
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.members.values().all(|m| m.protocols.iter().any(|q| q.name == p.name)))
    }

    /// The protocol every member supports that gets the most first-choice votes.
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|p| &p.name)
            .filter(|p| self.members.values().all(|m| m.protocols.iter().any(|q| &q.name == *p)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some(p) = m.protocols.iter().find(|p| candidates.contains(&&p.name)) {
                if let Some(v) = votes.iter_mut().find(|v| *v.1 == p.name) {
                    v.0 += 1;
                }
            }
        }
        // Ties go to the earliest candidate, so reverse before max_by_key keeps the first.
        votes.iter().rev().max_by_key(|v| v.0).map(|v| v.1.clone())
    }

    fn prepare_rebalance(&mut self, initial_delay: Duration) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync_tx.take() {
                let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
            }
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(60));
        let now = Instant::now();
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            self.initial_delay_until = Some(now + initial_delay.min(timeout));
        }
        self.rebalance_deadline = Some(now + timeout);
        self.state = GroupState::PreparingRebalance;
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_tx.is_some())
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let delayed = self.initial_delay_until.is_some_and(|t| now < t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        if (self.all_joined() && !delayed) || timed_out {
            self.complete_join();
        }
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.shift_remove(id)?;
        if let Some(inst) = &m.instance_id {
            if self.static_members.get(inst).is_some_and(|v| v == id) {
                self.static_members.remove(inst);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(m)
    }

    fn complete_join(&mut self) {
        // Static members keep their slot until their session expires (KIP-345); dynamic
        // members that did not rejoin in time are dropped.
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_tx.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removing");
            self.remove_member(&id);
        }
        self.pending.clear();
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let sync_timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(60));
        self.sync_deadline = Some(Instant::now() + sync_timeout);
        self.awaiting_sync = self.members.keys().cloned().collect();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<JoinedMember> = self
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(self.protocol.as_deref()),
            })
            .collect();
        tracing::info!(group = %self.id, generation = self.generation, members = all.len(), protocol = ?self.protocol, "rebalance complete");
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat = Instant::now();
            if let Some(tx) = m.join_tx.take() {
                let _ = tx.send(JoinResult {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader { all.clone() } else { vec![] },
                    skip_assignment: false,
                });
            }
        }
    }

    /// A member left or expired: rebalance the rest.
    fn on_member_gone(&mut self, initial_delay: Duration) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = GroupState::Empty;
                    self.generation += 1;
                    self.protocol = None;
                    self.leader = None;
                } else {
                    self.prepare_rebalance(initial_delay);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(Instant::now()),
            GroupState::Empty => {}
        }
    }
}

/// What became of one member a LeaveGroup named.
pub struct LeaveResult {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub result: Result<(), ResponseError>,
}

pub struct GroupCoordinator {
    /// Where committed offsets are kept: `__consumer_offsets`.
    store: OffsetsStore,
    groups: Mutex<HashMap<String, Group>>,
    initial_delay: Duration,
    min_session: i32,
    max_session: i32,
    offsets_partitions: i32,
    /// `__consumer_offsets` partitions this node leads and has loaded: it coordinates
    /// exactly the groups that hash to them.
    owned: Mutex<std::collections::HashSet<i32>>,
    offsets_retention_ms: i64,
    retention_check_every: Duration,
    last_retention_check: Mutex<Instant>,
}

/// Kafka's `offset.metadata.max.bytes` default.
const MAX_OFFSET_METADATA: usize = 4096;
/// Names are written as int16-length strings in `__consumer_offsets`.
const MAX_NAME_LEN: usize = i16::MAX as usize;

fn member_id(client_id: &str) -> String {
    format!("{}-{}", client_id, uuid::Uuid::new_v4())
}

impl GroupCoordinator {
    pub fn new(config: &BrokerConfig, replicas: Arc<ReplicaManager>) -> Self {
        GroupCoordinator {
            store: OffsetsStore::new(replicas, config.offsets_topic_num_partitions),
            groups: Mutex::new(HashMap::new()),
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session: config.group_min_session_timeout_ms,
            max_session: config.group_max_session_timeout_ms,
            offsets_partitions: config.offsets_topic_num_partitions,
            owned: Mutex::new(std::collections::HashSet::new()),
            offsets_retention_ms: config.offsets_retention_ms,
            retention_check_every: Duration::from_millis(config.offsets_retention_check_interval_ms),
            last_retention_check: Mutex::new(Instant::now()),
        }
    }

    /// Expire the committed offsets of groups that have had no member for
    /// `offsets.retention.minutes`, and whose commit is as old (Kafka's KIP-211 rule),
    /// writing tombstones so that the log cleaner drops them from `__consumer_offsets`.
    fn expire_offsets(&self, now_ms: i64) {
        let retention = self.offsets_retention_ms;
        let per_group: Vec<(String, Vec<TopicPartition>)> = {
            let mut groups = self.groups.lock();
            groups
                .values_mut()
                .filter_map(|g| {
                    if !g.members.is_empty() {
                        g.empty_since_ms = None;
                        return None;
                    }
                    let since = *g.empty_since_ms.get_or_insert(now_ms);
                    if now_ms - since < retention {
                        return None;
                    }
                    let keys: Vec<TopicPartition> = g
                        .offsets
                        .iter()
                        .filter(|(_, o)| now_ms - o.commit_timestamp >= retention)
                        .map(|(tp, _)| tp.clone())
                        .collect();
                    (!keys.is_empty()).then(|| (g.id.clone(), keys))
                })
                .collect()
        };
        for (group, keys) in per_group {
            let tombstones: Vec<OffsetRecord> = keys.iter().map(|tp| OffsetRecord::tombstone(&group, tp)).collect();
            match self.store.append(&group, &tombstones, None) {
                Ok(_) => {
                    if let Some(g) = self.groups.lock().get_mut(&group) {
                        // A commit that raced the tombstones is kept (it is after them in the log).
                        for tp in &keys {
                            if g.offsets.get(tp).is_some_and(|o| now_ms - o.commit_timestamp >= retention) {
                                g.offsets.remove(tp);
                                g.windows.remove(tp);
                            }
                        }
                    }
                    tracing::info!(group = %group, partitions = keys.len(), "expired committed offsets (offsets.retention.minutes)");
                }
                Err(e) => tracing::warn!(group = %group, error = ?e, "could not write offset tombstones"),
            }
        }
    }

    /// The offsets partition a group's state lives in.
    pub fn partition_of(&self, group_id: &str) -> i32 {
        offsets::partition_for(group_id, self.offsets_partitions)
    }

    /// Whether this node coordinates `group_id` now.
    pub fn check(&self, group_id: &str) -> Result<(), ResponseError> {
        if self.owned.lock().contains(&self.partition_of(group_id)) {
            Ok(())
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// This node became leader of offsets partition `p`: rebuild the committed offsets of
    /// its groups from the log (up to its end: as leader, its log is the truth).
    pub fn load_partition(&self, p: i32) {
        match self.store.load(p) {
            Ok(loaded) => {
                let mut groups = self.groups.lock();
                groups.retain(|id, _| self.partition_of(id) != p);
                let n = loaded.len();
                groups.extend(loaded.into_iter().map(|(id, l)| {
                    let mut g = Group::new(&id);
                    g.offsets = l.offsets;
                    g.pending_txn = l.pending;
                    g.last_commit_ms = l.last_commit_ms;
                    (id, g)
                }));
                self.owned.lock().insert(p);
                tracing::info!(partition = p, groups = n, "loaded consumer groups");
            }
            Err(e) => tracing::error!(partition = p, error = %e, "loading consumer groups failed"),
        }
    }

    /// Leadership of offsets partition `p` moved away: forget its groups (members rejoin
    /// at the new coordinator).
    pub fn unload_partition(&self, p: i32) {
        if self.owned.lock().remove(&p) {
            self.groups.lock().retain(|id, _| self.partition_of(id) != p);
            tracing::info!(partition = p, "unloaded consumer groups");
        }
    }

    /// Expire sessions and finish rebalances whose time is up, and committed offsets
    /// past their retention. Called every 100 ms.
    pub fn tick(&self) {
        let now = Instant::now();
        let retention_due = {
            let mut last = self.last_retention_check.lock();
            let due = now.duration_since(*last) >= self.retention_check_every;
            if due {
                *last = now;
            }
            due
        };
        if retention_due {
            self.expire_offsets(crate::clock::now_ms());
        }
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join_tx.is_none()
                        && m.sync_tx.is_none()
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %g.id, member = %id, "session expired");
                g.remove_member(id);
            }
            if !expired.is_empty() {
                g.on_member_gone(Duration::ZERO);
            }
            if g.state == GroupState::CompletingRebalance
                && g.sync_deadline.is_some_and(|d| now >= d)
                && !g.awaiting_sync.is_empty()
            {
                let late: Vec<String> = g.awaiting_sync.drain().collect();
                for id in &late {
                    tracing::info!(group = %g.id, member = %id, "no SyncGroup before the rebalance timeout; removing");
                    g.remove_member(id);
                }
                g.on_member_gone(Duration::ZERO);
            }
            g.maybe_complete_join(now);
        }
        // A group with no members, no pending joins and no committed offsets is gone, as in
        // Kafka (Dead); without this, every group id ever seen would stay in memory.
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty
                && g.members.is_empty()
                && g.pending.is_empty()
                && g.offsets.is_empty()
                && g.pending_txn.is_empty())
        });
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResult {
        let rx = match self.join_inner(req) {
            Ok(rx) => rx,
            Err(r) => return r,
        };
        rx.await.unwrap_or_else(|_| JoinResult::error(ResponseError::UnknownMemberId, ""))
    }

    // The Err is the answer itself, returned at once and never propagated: boxing it would
    // only add an allocation to every rejected join.
    #[allow(clippy::result_large_err)]
    fn join_inner(&self, req: JoinRequest) -> Result<oneshot::Receiver<JoinResult>, JoinResult> {
        if req.group_id.is_empty() {
            return Err(JoinResult::error(ResponseError::InvalidGroupId, &req.member_id));
        }
        if req.session_timeout_ms < self.min_session || req.session_timeout_ms > self.max_session {
            return Err(JoinResult::error(ResponseError::InvalidSessionTimeout, &req.member_id));
        }
        let mut groups = self.groups.lock();
        let g = groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(&req.group_id));
        if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            return Err(JoinResult::error(ResponseError::InconsistentGroupProtocol, &req.member_id));
        }
        let now = Instant::now();
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let (tx, rx) = oneshot::channel();

        let mut id = req.member_id.clone();
        if id.is_empty() {
            id = member_id(&req.client_id);
            if let Some(inst) = &req.group_instance_id {
                // A static member coming back takes over its old slot under a new id.
                if let Some(old_id) = g.static_members.get(inst).cloned() {
                    if let Some(mut old) = g.members.shift_remove(&old_id) {
                        if let Some(t) = old.join_tx.take() {
                            let _ = t.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
                        }
                        let same_protocols = old.protocols == req.protocols;
                        old.id = id.clone();
                        old.protocols = req.protocols.clone();
                        old.last_heartbeat = now;
                        old.session_timeout = session;
                        let was_leader = g.leader.as_deref() == Some(old_id.as_str());
                        g.members.insert(id.clone(), old);
                        g.static_members.insert(inst.clone(), id.clone());
                        if was_leader {
                            g.leader = Some(id.clone());
                        }
                        if g.state == GroupState::Stable && same_protocols && !was_leader {
                            return Err(g.current_generation(id));
                        }
                        let m = g.members.get_mut(&id).unwrap();
                        m.join_tx = Some(tx);
                        if g.state != GroupState::PreparingRebalance {
                            g.prepare_rebalance(self.initial_delay);
                        }
                        g.maybe_complete_join(now);
                        return Ok(rx);
                    }
                }
            } else if req.require_known_member_id {
                g.pending.insert(id.clone(), now + session);
                return Err(JoinResult::error(ResponseError::MemberIdRequired, &id));
            }
        } else if let Some(inst) = &req.group_instance_id {
            if g.static_members.get(inst).is_some_and(|known| *known != id) {
                return Err(JoinResult::error(ResponseError::FencedInstanceId, &id));
            }
        }

        let known = g.members.contains_key(&id);
        let was_pending = g.pending.remove(&id).is_some();
        if !known && !was_pending && !req.member_id.is_empty() {
            return Err(JoinResult::error(ResponseError::UnknownMemberId, &id));
        }
        if known {
            let m = g.members.get_mut(&id).unwrap();
            let unchanged = m.protocols == req.protocols;
            // A follower rejoining a stable group with the same metadata needs no rebalance.
            if g.state == GroupState::Stable && unchanged && g.leader.as_deref() != Some(id.as_str()) {
                m.last_heartbeat = now;
                return Err(g.current_generation(id));
            }
            m.protocols = req.protocols;
            m.session_timeout = session;
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
            m.last_heartbeat = now;
            if let Some(old) = m.join_tx.replace(tx) {
                let _ = old.send(JoinResult::error(ResponseError::RebalanceInProgress, &id));
            }
        } else {
            if g.members.is_empty() {
                g.protocol_type = Some(req.protocol_type.clone());
            }
            if let Some(inst) = &req.group_instance_id {
                g.static_members.insert(inst.clone(), id.clone());
            }
            g.members.insert(
                id.clone(),
                Member {
                    id: id.clone(),
                    instance_id: req.group_instance_id.clone(),
                    client_id: req.client_id,
                    client_host: req.client_host,
                    session_timeout: session,
                    rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                    protocols: req.protocols,
                    assignment: Bytes::new(),
                    join_tx: Some(tx),
                    sync_tx: None,
                    last_heartbeat: now,
                },
            );
            if g.state == GroupState::PreparingRebalance {
                if let Some(until) = g.initial_delay_until {
                    // New members during the initial delay extend it, as Kafka's
                    // InitialDelayedJoin does, bounded by the rebalance deadline.
                    let extended = (now + self.initial_delay).min(g.rebalance_deadline.unwrap_or(until));
                    g.initial_delay_until = Some(until.max(extended));
                }
            }
        }
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(self.initial_delay);
        }
        g.maybe_complete_join(now);
        Ok(rx)
    }

    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member: &str,
        instance_id: Option<&str>,
        assignments: Vec<MemberAssignment>,
    ) -> SyncResult {
        let rx = {
            let mut groups = self.groups.lock();
            let Some(g) = groups.get_mut(group_id) else {
                return SyncResult::error(ResponseError::UnknownMemberId);
            };
            if let Some(inst) = instance_id {
                if g.static_members.get(inst).is_some_and(|m| m != member) {
                    return SyncResult::error(ResponseError::FencedInstanceId);
                }
            }
            if !g.members.contains_key(member) {
                return SyncResult::error(ResponseError::UnknownMemberId);
            }
            if generation != g.generation {
                return SyncResult::error(ResponseError::IllegalGeneration);
            }
            let ok = |g: &Group, a: Bytes| SyncResult {
                error: None,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol.clone(),
                assignment: a,
            };
            match g.state {
                GroupState::Empty => return SyncResult::error(ResponseError::UnknownMemberId),
                GroupState::PreparingRebalance => return SyncResult::error(ResponseError::RebalanceInProgress),
                GroupState::Stable => {
                    let a = g.members[member].assignment.clone();
                    g.members.get_mut(member).unwrap().last_heartbeat = Instant::now();
                    return ok(g, a);
                }
                GroupState::CompletingRebalance => {}
            }
            g.awaiting_sync.remove(member);
            let (tx, rx) = oneshot::channel();
            g.members.get_mut(member).unwrap().sync_tx = Some(tx);
            if g.leader.as_deref() == Some(member) {
                let mut by_member: HashMap<String, Bytes> =
                    assignments.into_iter().map(|a| (a.member_id, a.assignment)).collect();
                g.state = GroupState::Stable;
                g.sync_deadline = None;
                g.awaiting_sync.clear();
                let mut sends = Vec::new();
                for m in g.members.values_mut() {
                    m.assignment = by_member.remove(&m.id).unwrap_or_default();
                    m.last_heartbeat = Instant::now();
                    if let Some(tx) = m.sync_tx.take() {
                        sends.push((tx, m.assignment.clone()));
                    }
                }
                for (tx, a) in sends {
                    let _ = tx.send(ok(g, a));
                }
            }
            rx
        };
        rx.await.unwrap_or_else(|_| SyncResult::error(ResponseError::RebalanceInProgress))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        if let Some(inst) = instance_id {
            if g.static_members.get(inst).is_some_and(|m| m != member) {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        let state = g.state;
        let gen = g.generation;
        let m = g.members.get_mut(member).ok_or(ResponseError::UnknownMemberId)?;
        if state == GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != gen {
            return Err(ResponseError::IllegalGeneration);
        }
        m.last_heartbeat = Instant::now();
        match state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Remove members (by member id, or by instance id for static members).
    pub fn leave(&self, group_id: &str, members: Vec<LeavingMember>) -> Result<Vec<LeaveResult>, ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let mut out = Vec::new();
        let mut removed_any = false;
        for LeavingMember { member_id: mid, instance_id: inst } in members {
            let target = match &inst {
                Some(i) => match g.static_members.get(i) {
                    Some(known) if mid.is_empty() || *known == mid => Ok(known.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if g.pending.remove(&mid).is_some() => {
                    out.push(LeaveResult { member_id: mid, instance_id: inst, result: Ok(()) });
                    continue;
                }
                None if g.members.contains_key(&mid) => Ok(mid.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    if let Some(mut m) = g.remove_member(&id) {
                        if let Some(tx) = m.join_tx.take() {
                            let _ = tx.send(JoinResult::error(ResponseError::UnknownMemberId, &id));
                        }
                        tracing::info!(group = %g.id, member = %id, "member left");
                        removed_any = true;
                    }
                    out.push(LeaveResult { member_id: mid, instance_id: inst, result: Ok(()) });
                }
                Err(e) => out.push(LeaveResult { member_id: mid, instance_id: inst, result: Err(e) }),
            }
        }
        if removed_any {
            g.on_member_gone(Duration::ZERO);
        }
        Ok(out)
    }

    /// Check a commit's generation and member against the group, as Kafka does. A
    /// transactional commit is not refused for a rebalance in progress: its member and
    /// generation are valid, and the producer has no way to handle REBALANCE_IN_PROGRESS
    /// (Kafka's `validateOffsetCommit` skips the check for it too).
    fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member: &str,
        instance_id: Option<&str>,
        transactional: bool,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
        if generation < 0 && member.is_empty() {
            // A standalone consumer or admin tool: allowed while the group has no members.
            return if g.members.is_empty() { Ok(()) } else { Err(ResponseError::UnknownMemberId) };
        }
        if let Some(inst) = instance_id {
            if g.static_members.get(inst).is_some_and(|m| m != member) {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        if g.state == GroupState::CompletingRebalance && !transactional {
            return Err(ResponseError::RebalanceInProgress);
        }
        let Some(m) = g.members.get_mut(member) else { return Err(ResponseError::UnknownMemberId) };
        m.last_heartbeat = Instant::now();
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// A commit's group id and metadata are valid, and this node coordinates the group.
    fn check_request(&self, group_id: &str, entries: &[OffsetCommit]) -> Result<(), ResponseError> {
        if group_id.is_empty() || group_id.len() > MAX_NAME_LEN {
            return Err(ResponseError::InvalidGroupId);
        }
        if entries.iter().any(|e| e.offset.metadata.len() > MAX_OFFSET_METADATA) {
            return Err(ResponseError::OffsetMetadataTooLarge);
        }
        self.check(group_id)
    }

    /// Durably commit offsets: append them to `__consumer_offsets`, then make them visible.
    pub fn commit(
        &self,
        group_id: &str,
        generation: i32,
        member: &str,
        instance_id: Option<&str>,
        entries: Vec<OffsetCommit>,
    ) -> Result<Option<CommitWait>, ResponseError> {
        self.check_request(group_id, &entries)?;
        self.check_commit(group_id, generation, member, instance_id, false)?;
        if entries.is_empty() {
            return Ok(None);
        }
        let records: Vec<OffsetRecord> =
            entries.iter().map(|e| OffsetRecord::commit(group_id, &e.tp, &e.offset)).collect();
        let wait = self.store.append(group_id, &records, None)?;
        // The lag each commit leaves, for the group's status; a partition this node holds
        // no replica of has no lag to record.
        let lags: Vec<Option<i64>> =
            entries.iter().map(|e| self.store.lag_at(&e.tp.topic, e.tp.partition, e.offset.offset)).collect();
        let now = now_ms();
        let mut groups = self.groups.lock();
        let g = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
        g.commits += 1;
        g.last_commit_ms = Some(now);
        for (e, lag) in entries.into_iter().zip(lags) {
            g.windows.entry(e.tp.clone()).or_default().push(CommitSample { offset: e.offset.offset, lag, at_ms: now });
            g.offsets.insert(e.tp, e.offset);
        }
        Ok(Some(wait))
    }

    /// Commit offsets inside producer `txn`'s transaction (TxnOffsetCommit): written now,
    /// visible once the COMMIT marker arrives (`complete_txn`). KIP-447: a request naming a
    /// generation or member is checked against the group like an OffsetCommit, so a zombie
    /// from an earlier generation is fenced; one naming neither (an old client) is not.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit(
        &self,
        group_id: &str,
        txn: TxnProducer,
        generation: i32,
        member: &str,
        instance_id: Option<&str>,
        entries: Vec<OffsetCommit>,
    ) -> Result<Option<CommitWait>, ResponseError> {
        self.check_request(group_id, &entries)?;
        if generation >= 0 || !member.is_empty() {
            self.check_commit(group_id, generation, member, instance_id, true)?;
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let records: Vec<OffsetRecord> =
            entries.iter().map(|e| OffsetRecord::commit(group_id, &e.tp, &e.offset)).collect();
        let wait = self.store.append(group_id, &records, Some(txn))?;
        let mut groups = self.groups.lock();
        let g = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id));
        let pending = g.pending_txn.entry(txn.producer_id).or_default();
        for e in entries {
            pending.insert(e.tp, e.offset);
        }
        Ok(Some(wait))
    }

    /// A transaction marker for `producer_id` was written to offsets partition `p`: its
    /// pending commits there become committed offsets, or are dropped on abort.
    pub fn complete_txn(&self, p: i32, producer_id: i64, commit: bool) {
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            if offsets::partition_for(&g.id, self.offsets_partitions) != p {
                continue;
            }
            let Some(pending) = g.pending_txn.remove(&producer_id) else { continue };
            if commit {
                g.commits += 1;
                g.last_commit_ms = Some(now_ms());
                g.offsets.extend(pending);
            }
        }
    }

    /// Partitions of `group_id` with a transactional commit not yet committed or aborted
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for them).
    pub fn unstable_partitions(&self, group_id: &str) -> std::collections::HashSet<TopicPartition> {
        let groups = self.groups.lock();
        groups
            .get(group_id)
            .map(|g| g.pending_txn.values().flat_map(|p| p.keys().cloned()).collect())
            .unwrap_or_default()
    }

    /// Committed offsets of a group: all of them, or the given partitions.
    pub fn fetch_offsets(&self, group_id: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.groups.lock().get(group_id).map(|g| g.offsets.clone()).unwrap_or_default()
    }

    pub fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        self.check(group_id)?;
        let keys: Vec<TopicPartition> = {
            let groups = self.groups.lock();
            let g = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
            if !g.members.is_empty() || g.state != GroupState::Empty {
                return Err(ResponseError::NonEmptyGroup);
            }
            g.offsets.keys().cloned().collect()
        };
        let tombstones: Vec<OffsetRecord> = keys.iter().map(|tp| OffsetRecord::tombstone(group_id, tp)).collect();
        if !tombstones.is_empty() {
            self.store.append(group_id, &tombstones, None)?;
        }
        self.groups.lock().remove(group_id);
        Ok(())
    }

    /// Delete every group's committed offsets for a deleted topic, durably (tombstones),
    /// so a topic re-created under the same name starts with no stale offsets.
    pub fn forget_topic(&self, topic: &str) {
        let per_group: Vec<(String, Vec<TopicPartition>)> = {
            let mut groups = self.groups.lock();
            groups
                .values_mut()
                .filter_map(|g| {
                    let keys: Vec<TopicPartition> = g.offsets.keys().filter(|tp| tp.topic == topic).cloned().collect();
                    g.offsets.retain(|tp, _| tp.topic != topic);
                    g.windows.retain(|tp, _| tp.topic != topic);
                    (!keys.is_empty()).then(|| (g.id.clone(), keys))
                })
                .collect()
        };
        for (group, keys) in per_group {
            let tombstones: Vec<OffsetRecord> = keys.iter().map(|tp| OffsetRecord::tombstone(&group, tp)).collect();
            if let Err(e) = self.store.append(&group, &tombstones, None) {
                tracing::warn!(group = %group, topic, error = ?e, "could not write offset tombstones");
            }
        }
    }

    /// Every group, by id.
    pub fn list(&self) -> Vec<GroupListing> {
        let groups = self.groups.lock();
        let mut v: Vec<_> = groups
            .values()
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
            })
            .collect();
        v.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        v
    }

    /// Run `f` on a group, if it exists.
    pub fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&Group) -> T) -> Option<T> {
        self.groups.lock().get(group_id).map(f)
    }

    /// What the metrics report of every group this node coordinates.
    pub fn snapshot(&self) -> Vec<GroupSnapshot> {
        let groups = self.groups.lock();
        groups
            .values()
            .map(|g| GroupSnapshot {
                id: g.id.clone(),
                state: g.state.name(),
                members: g.members.len(),
                commits: g.commits,
                last_commit_ms: g.last_commit_ms,
                partitions: g
                    .offsets
                    .iter()
                    .map(|(tp, c)| PartitionCommits {
                        tp: tp.clone(),
                        offset: c.offset,
                        window: g.windows.get(tp).cloned().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A group as the metrics see it.
pub struct GroupSnapshot {
    pub id: String,
    pub state: &'static str,
    pub members: usize,
    pub commits: u64,
    pub last_commit_ms: Option<i64>,
    pub partitions: Vec<PartitionCommits>,
}

/// A group's committed offset of one partition, and its last commits (for the status).
#[derive(Debug, Clone)]
pub struct PartitionCommits {
    pub tp: TopicPartition,
    pub offset: i64,
    pub window: CommitWindow,
}

/// One offset a member commits.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    pub tp: TopicPartition,
    pub offset: CommittedOffset,
}

/// A protocol a member can use (an assignor for consumers), with its metadata for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A member as the leader's JoinGroup answer lists it.
#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The leader's assignment for one member (SyncGroup).
#[derive(Debug, Clone)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

/// A member a LeaveGroup names: by member id, or by instance id for a static member.
#[derive(Debug, Clone)]
pub struct LeavingMember {
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// A group as ListGroups describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// The coordinator follows the leadership of `__consumer_offsets`: it coordinates the
/// groups of the partitions this node leads.
impl LeadershipListener for GroupCoordinator {
    fn topic(&self) -> &str {
        OFFSETS_TOPIC
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
    use crate::config::Property;
    use std::sync::Arc;

    fn coordinator(delay_ms: u64) -> GroupCoordinator {
        let mut cfg = BrokerConfig::from_properties(&[Property::new("node.id", "1")]).unwrap();
        cfg.group_initial_rebalance_delay_ms = delay_ms;
        let dir = std::env::temp_dir().join(format!("fjord-coordinator-test-{}", uuid::Uuid::new_v4()));
        GroupCoordinator::new(&cfg, Arc::new(ReplicaManager::new(&dir, 1)))
    }

    fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 1_000,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol { name: "range".into(), metadata: Bytes::from_static(b"m") }],
            require_known_member_id: true,
        }
    }

    #[tokio::test]
    async fn two_members_join_sync_and_leave() {
        let c = Arc::new(coordinator(0));
        let first = c.join(join_req("", None)).await;
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let a = c.join(join_req(&first.member_id, None)).await;
        assert_eq!((a.error, a.generation, a.leader == a.member_id, a.members.len()), (None, 1, true, 1));
        let s = c
            .sync(
                "g",
                1,
                &a.member_id,
                None,
                vec![MemberAssignment { member_id: a.member_id.clone(), assignment: Bytes::from_static(b"A") }],
            )
            .await;
        assert_eq!(s.assignment, Bytes::from_static(b"A"));
        assert!(c.heartbeat("g", 1, &a.member_id, None).is_ok());

        // A second member triggers a rebalance; the first learns it through its heartbeat.
        let second = c.join(join_req("", None)).await;
        let c2 = c.clone();
        let b_id = second.member_id.clone();
        let jb = tokio::spawn(async move { c2.join(join_req(&b_id, None)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Err(ResponseError::RebalanceInProgress));
        let a2 = c.join(join_req(&a.member_id, None)).await;
        let b2 = jb.await.unwrap();
        assert_eq!((a2.generation, b2.generation), (2, 2));
        assert_eq!(a2.members.len(), 2, "the leader sees every member");
        assert!(b2.members.is_empty());
        let c3 = c.clone();
        let (bid, gen) = (b2.member_id.clone(), b2.generation);
        let sb = tokio::spawn(async move { c3.sync("g", gen, &bid, None, vec![]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sa = c
            .sync(
                "g",
                2,
                &a2.member_id,
                None,
                vec![
                    MemberAssignment { member_id: a2.member_id.clone(), assignment: Bytes::from_static(b"A") },
                    MemberAssignment { member_id: b2.member_id.clone(), assignment: Bytes::from_static(b"B") },
                ],
            )
            .await;
        assert_eq!(sa.assignment, Bytes::from_static(b"A"));
        assert_eq!(sb.await.unwrap().assignment, Bytes::from_static(b"B"));
        assert_eq!(c.heartbeat("g", 1, &a.member_id, None), Err(ResponseError::IllegalGeneration));

        c.leave("g", vec![LeavingMember { member_id: b2.member_id.clone(), instance_id: None }]).unwrap();
        assert_eq!(c.with_group("g", |g| g.state), Some(GroupState::PreparingRebalance));
        let a3 = c.join(join_req(&a.member_id, None)).await;
        assert_eq!((a3.generation, a3.members.len()), (3, 1));
    }

    #[tokio::test]
    async fn static_member_rejoins_without_rebalance() {
        let c = Arc::new(coordinator(0));
        let a = c.join(join_req("", Some("i1"))).await;
        assert_eq!(a.error, None, "static members get an id directly");
        c.sync(
            "g",
            a.generation,
            &a.member_id,
            Some("i1"),
            vec![MemberAssignment { member_id: a.member_id.clone(), assignment: Bytes::from_static(b"A") }],
        )
        .await;
        let c1 = c.clone();
        let jb = tokio::spawn(async move { c1.join(join_req("", Some("i2"))).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // i2's join put the group into a rebalance; i1 rejoins to finish it.
        let a2 = c.join(join_req(&a.member_id, Some("i1"))).await;
        let b = jb.await.unwrap();
        let gen = a2.generation;
        assert_eq!(b.generation, gen);
        let (a_id, b_id) = (a2.member_id.clone(), b.member_id.clone());
        let c2 = c.clone();
        let bid = b_id.clone();
        let sb = tokio::spawn(async move { c2.sync("g", gen, &bid, Some("i2"), vec![]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.sync(
            "g",
            gen,
            &a_id,
            Some("i1"),
            vec![MemberAssignment { member_id: b_id.clone(), assignment: Bytes::from_static(b"B") }],
        )
        .await;
        assert_eq!(sb.await.unwrap().assignment, Bytes::from_static(b"B"));
        // i2 restarts with a new process: same generation, no rebalance, same assignment.
        let b3 = c.join(join_req("", Some("i2"))).await;
        assert_eq!((b3.error, b3.generation), (None, gen));
        assert_eq!(c.with_group("g", |g| g.state), Some(GroupState::Stable));
        let s = c.sync("g", gen, &b3.member_id, Some("i2"), vec![]).await;
        assert_eq!(s.assignment, Bytes::from_static(b"B"));
        // The old process is fenced.
        assert_eq!(c.heartbeat("g", gen, &b_id, Some("i2")), Err(ResponseError::FencedInstanceId));
    }

    #[tokio::test]
    async fn session_expiry_removes_member() {
        let c = coordinator(0);
        let mut r = join_req("", None);
        r.require_known_member_id = false;
        r.session_timeout_ms = 6000;
        let a = c.join(r).await;
        c.sync("g", a.generation, &a.member_id, None, vec![]).await;
        c.groups.lock().get_mut("g").unwrap().members.get_mut(&a.member_id).unwrap().last_heartbeat =
            Instant::now() - Duration::from_secs(7);
        c.tick();
        assert_eq!(
            c.with_group("g", |g| (g.state, g.members.len())),
            None,
            "an empty group without offsets is removed"
        );
    }

    #[tokio::test]
    async fn followers_do_not_wait_forever_for_a_silent_leader() {
        let c = Arc::new(coordinator(0));
        let mut r = join_req("", None);
        r.require_known_member_id = false;
        r.rebalance_timeout_ms = 100;
        let c1 = c.clone();
        let a = c.join(r).await;
        // A second member joins; the leader rejoins; then the leader never syncs.
        let mut r2 = join_req("", None);
        r2.require_known_member_id = false;
        let jb = tokio::spawn(async move { c1.join(r2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut ra = join_req(&a.member_id, None);
        ra.rebalance_timeout_ms = 100;
        let a2 = c.join(ra).await;
        let b = jb.await.unwrap();
        assert_eq!(a2.generation, b.generation);
        let c2 = c.clone();
        let (bid, gen) = (b.member_id.clone(), b.generation);
        let sb = tokio::spawn(async move { c2.sync("g", gen, &bid, None, vec![]).await });
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.tick();
        }
        let res = tokio::time::timeout(Duration::from_secs(2), sb).await.expect("follower answered").unwrap();
        assert_eq!(res.error, Some(ResponseError::RebalanceInProgress));
        assert!(c.with_group("g", |g| !g.members.contains_key(&a.member_id)).unwrap(), "the silent leader was removed");
    }

    #[test]
    fn protocol_selection_prefers_common_first_choice() {
        let mut g = Group::new("g");
        for (id, protos) in [("a", vec!["x", "y"]), ("b", vec!["y", "x"]), ("c", vec!["y"])] {
            g.members.insert(
                id.into(),
                Member {
                    id: id.into(),
                    instance_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    session_timeout: Duration::from_secs(1),
                    rebalance_timeout: Duration::from_secs(1),
                    protocols: protos
                        .into_iter()
                        .map(|p| Protocol { name: p.to_string(), metadata: Bytes::new() })
                        .collect(),
                    assignment: Bytes::new(),
                    join_tx: None,
                    sync_tx: None,
                    last_heartbeat: Instant::now(),
                },
            );
        }
        assert_eq!(g.select_protocol().as_deref(), Some("y"));
    }
}
