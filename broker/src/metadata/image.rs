//! The cluster metadata image and the commands that change it. Every node applies the same
//! committed commands in the same order (the Raft log), so `apply` is deterministic: it
//! reads nothing but the image and the command. Decisions that need a view of the world
//! (where to place replicas, when a broker is dead) are made by the active controller
//! before it writes a command; consequences that follow from the image alone (which ISR
//! member leads once a broker is fenced, when a reassignment completes) are made here, so
//! they can never be lost between two commands.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One listener a broker advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: i32,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// host:port of the HTTP endpoint (metrics, readiness), when enabled.
    pub http: Option<String>,
    /// A fenced broker leads nothing and is in no ISR it can be removed from.
    pub fenced: bool,
    /// The log index of its latest registration; bumps on every restart.
    pub epoch: u64,
    #[serde(default)]
    pub controller: bool,
}

impl BrokerMeta {
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == listener).or_else(|| self.endpoints.first())
    }
}

/// Replica assignment and leadership of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartitionMeta {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1: offline.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumps on every change; an AlterPartition must name the current one.
    pub partition_epoch: i32,
    /// Replicas being added or removed by a reassignment in progress.
    #[serde(default)]
    pub adding: Vec<i32>,
    #[serde(default)]
    pub removing: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
    pub assignment: Vec<PartitionMeta>,
}

impl TopicMeta {
    pub fn partition(&self, index: i32) -> Option<&PartitionMeta> {
        usize::try_from(index).ok().and_then(|i| self.assignment.get(i))
    }
    fn unclean_allowed(&self) -> bool {
        self.configs.get("unclean.leader.election.enable").is_some_and(|v| v == "true")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ClusterImage {
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this are handed out (in blocks, to brokers).
    pub next_producer_id: i64,
    /// Dynamic broker configs (IncrementalAlterConfigs on a BROKER resource), keyed by
    /// broker id as a string, "" for the cluster-wide default.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// SCRAM credentials by user, then by mechanism id (1: SHA-256, 2: SHA-512), as Kafka's
    /// UserScramCredentialRecords keep them: never a password.
    #[serde(default)]
    pub scram: BTreeMap<String, BTreeMap<i8, ScramCredentialMeta>>,
    /// Elections decided by this image since it started (for metrics; not compared).
    #[serde(skip)]
    pub elections: Elections,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Elections {
    pub clean: u64,
    pub unclean: u64,
}

/// One partition's ISR change, as its leader proposes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsrChange {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    SetClusterId {
        id: String,
    },
    /// A broker (re)registers; it starts fenced until it has caught up.
    RegisterBroker {
        broker: BrokerMeta,
    },
    Fence {
        id: i32,
    },
    Unfence {
        id: i32,
    },
    /// Move leadership away from a broker that is shutting down, then fence it.
    ControlledShutdown {
        id: i32,
    },
    CreateTopics {
        topics: Vec<TopicMeta>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        added: Vec<PartitionMeta>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// A leader changes its ISR (Kafka's AlterPartition).
    AlterPartition {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Many ISR changes in one entry, each decided on its own (`Outcome::Codes`): a broker
    /// rejoining a thousand ISRs must not cost a thousand log entries and reconciles.
    AlterPartitions {
        changes: Vec<IsrChange>,
    },
    /// Preferred-leader election.
    ElectPreferred {
        topic: String,
        partition: i32,
    },
    /// Start (Some) or cancel (None) a reassignment.
    Reassign {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    AllocateProducerIds {
        count: i64,
    },
    /// Replace the dynamic configs of one broker ("" = every broker's default).
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// AlterUserScramCredentials: deletions then upsertions, one code each (in that order).
    AlterScramCredentials {
        deletions: Vec<(String, i8)>,
        upsertions: Vec<(String, i8, ScramCredentialMeta)>,
    },
}

/// One user's credential for one SCRAM mechanism (Kafka's UserScramCredentialRecord).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramCredentialMeta {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Outcome {
    Done,
    /// A Kafka error code.
    Error(i16),
    Topics(Vec<Result<TopicMeta, i16>>),
    Topic(TopicMeta),
    /// One Kafka error code per item of a batch (0: done).
    Codes(Vec<i16>),
    ProducerIds {
        first: i64,
    },
}

fn err(e: ResponseError) -> Outcome {
    Outcome::Error(e.code())
}

impl ClusterImage {
    /// A dynamic broker config: this broker's own value, else the cluster-wide default.
    pub fn broker_config(&self, broker: i32, key: &str) -> Option<&String> {
        let own = self.broker_configs.get(&broker.to_string()).and_then(|c| c.get(key));
        own.or_else(|| self.broker_configs.get("").and_then(|c| c.get(key)))
    }

    fn alter_partition(&mut self, c: IsrChange) -> Result<(), ResponseError> {
        let live: Vec<i32> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect();
        let Some(p) = self.topics.get_mut(&c.topic).and_then(|t| t.assignment.get_mut(c.partition as usize)) else {
            return Err(ResponseError::UnknownTopicOrPartition);
        };
        if p.leader != c.leader || p.leader_epoch != c.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if p.partition_epoch != c.partition_epoch {
            return Err(ResponseError::InvalidUpdateVersion);
        }
        if !c.isr.contains(&c.leader) {
            return Err(ResponseError::InvalidRequest);
        }
        // Only live replicas may join.
        if !c.isr.iter().all(|r| p.isr.contains(r) || (p.replicas.contains(r) && live.contains(r))) {
            return Err(ResponseError::IneligibleReplica);
        }
        p.isr = c.isr;
        p.partition_epoch += 1;
        complete_reassignment(p);
        Ok(())
    }

    pub fn apply(&mut self, index: u64, cmd: Command) -> Outcome {
        match cmd {
            Command::SetClusterId { id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = id;
                }
                Outcome::Done
            }
            Command::RegisterBroker { mut broker } => {
                broker.fenced = true;
                broker.epoch = index;
                let id = broker.id;
                self.brokers.insert(id, broker);
                // Its old incarnation may still lead partitions: a restarted process has
                // lost whatever it had not replicated, so it leads again only once elected.
                self.fence(id, false);
                Outcome::Done
            }
            Command::Fence { id } => {
                self.fence(id, false);
                Outcome::Done
            }
            Command::ControlledShutdown { id } => {
                self.fence(id, true);
                Outcome::Done
            }
            Command::Unfence { id } => {
                let Some(b) = self.brokers.get_mut(&id) else { return err(ResponseError::BrokerNotAvailable) };
                b.fenced = false;
                let mut elections = Elections::default();
                for t in self.topics.values_mut() {
                    let unclean = t.unclean_allowed();
                    for p in t.assignment.iter_mut() {
                        if p.leader != -1 || !p.replicas.contains(&id) {
                            continue;
                        }
                        if p.isr.contains(&id) {
                            p.leader = id;
                            elections.clean += 1;
                        } else if unclean {
                            p.leader = id;
                            p.isr = vec![id];
                            elections.unclean += 1;
                        } else {
                            continue;
                        }
                        p.leader_epoch += 1;
                        p.partition_epoch += 1;
                    }
                }
                self.elections.clean += elections.clean;
                self.elections.unclean += elections.unclean;
                Outcome::Done
            }
            Command::CreateTopics { topics } => {
                let out = topics
                    .into_iter()
                    .map(|t| {
                        if self.topics.contains_key(&t.name) {
                            return Err(ResponseError::TopicAlreadyExists.code());
                        }
                        if self.topics.values().any(|o| o.id == t.id) {
                            return Err(ResponseError::InvalidRequest.code());
                        }
                        self.topics.insert(t.name.clone(), t.clone());
                        Ok(t)
                    })
                    .collect();
                Outcome::Topics(out)
            }
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(t) => Outcome::Topic(t),
                None => err(ResponseError::UnknownTopicOrPartition),
            },
            Command::CreatePartitions { name, added } => {
                let Some(t) = self.topics.get_mut(&name) else { return err(ResponseError::UnknownTopicOrPartition) };
                t.partitions += added.len() as i32;
                t.assignment.extend(added);
                Outcome::Topic(t.clone())
            }
            Command::SetTopicConfigs { name, configs } => {
                let Some(t) = self.topics.get_mut(&name) else { return err(ResponseError::UnknownTopicOrPartition) };
                t.configs = configs;
                Outcome::Topic(t.clone())
            }
            Command::AlterPartition { topic, partition, leader, leader_epoch, partition_epoch, isr } => {
                match self.alter_partition(IsrChange { topic, partition, leader, leader_epoch, partition_epoch, isr }) {
                    Ok(()) => Outcome::Done,
                    Err(e) => err(e),
                }
            }
            Command::AlterPartitions { changes } => Outcome::Codes(
                changes.into_iter().map(|c| self.alter_partition(c).err().map_or(0, |e| e.code())).collect(),
            ),
            Command::AlterScramCredentials { deletions, upsertions } => {
                let mut codes = Vec::with_capacity(deletions.len() + upsertions.len());
                for (user, mechanism) in deletions {
                    let removed = self.scram.get_mut(&user).and_then(|m| m.remove(&mechanism));
                    if self.scram.get(&user).is_some_and(|m| m.is_empty()) {
                        self.scram.remove(&user);
                    }
                    codes.push(if removed.is_some() { 0 } else { ResponseError::ResourceNotFound.code() });
                }
                for (user, mechanism, credential) in upsertions {
                    self.scram.entry(user).or_default().insert(mechanism, credential);
                    codes.push(0);
                }
                Outcome::Codes(codes)
            }
            Command::SetBrokerConfigs { resource, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(&resource);
                } else {
                    self.broker_configs.insert(resource, configs);
                }
                Outcome::Done
            }
            Command::ElectPreferred { topic, partition } => {
                let live: Vec<i32> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect();
                let Some(p) = self.topics.get_mut(&topic).and_then(|t| t.assignment.get_mut(partition as usize)) else {
                    return err(ResponseError::UnknownTopicOrPartition);
                };
                let preferred = p.replicas[0];
                if p.leader == preferred {
                    return err(ResponseError::ElectionNotNeeded);
                }
                if !p.isr.contains(&preferred) || !live.contains(&preferred) {
                    return err(ResponseError::PreferredLeaderNotAvailable);
                }
                p.leader = preferred;
                p.leader_epoch += 1;
                p.partition_epoch += 1;
                self.elections.clean += 1;
                Outcome::Done
            }
            Command::Reassign { topic, partition, target } => {
                let Some(p) = self.topics.get_mut(&topic).and_then(|t| t.assignment.get_mut(partition as usize)) else {
                    return err(ResponseError::UnknownTopicOrPartition);
                };
                match target {
                    None => {
                        if p.adding.is_empty() && p.removing.is_empty() {
                            return err(ResponseError::NoReassignmentInProgress);
                        }
                        // Back to the original set: drop what was being added.
                        let adding = std::mem::take(&mut p.adding);
                        p.removing.clear();
                        p.replicas.retain(|r| !adding.contains(r));
                        p.isr.retain(|r| !adding.contains(r));
                        p.partition_epoch += 1;
                    }
                    Some(target) => {
                        if target.is_empty() {
                            return err(ResponseError::InvalidReplicaAssignment);
                        }
                        let original: Vec<i32> = p.replicas.iter().copied().filter(|r| !p.adding.contains(r)).collect();
                        p.adding = target.iter().copied().filter(|r| !original.contains(r)).collect();
                        p.removing = original.iter().copied().filter(|r| !target.contains(r)).collect();
                        let mut replicas = target.clone();
                        replicas.extend(p.removing.iter().copied());
                        p.replicas = replicas;
                        p.partition_epoch += 1;
                        complete_reassignment(p);
                    }
                }
                Outcome::Done
            }
            Command::AllocateProducerIds { count } => {
                let first = self.next_producer_id;
                self.next_producer_id += count.max(1);
                Outcome::ProducerIds { first }
            }
        }
    }

    /// Fence `id`: every partition it leads elects another ISR member (or goes offline),
    /// and it leaves every ISR it is not the last member of (the last one stays, so the
    /// partition can come back when it does).
    fn fence(&mut self, id: i32, controlled: bool) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = true;
        }
        let live: Vec<i32> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect();
        let mut elections = Elections::default();
        for t in self.topics.values_mut() {
            for p in t.assignment.iter_mut() {
                if !p.replicas.contains(&id) {
                    continue;
                }
                let mut changed = false;
                if p.isr.contains(&id) && p.isr.len() > 1 {
                    p.isr.retain(|r| *r != id);
                    changed = true;
                }
                if p.leader == id {
                    let next = p.replicas.iter().copied().find(|r| *r != id && p.isr.contains(r) && live.contains(r));
                    p.leader = next.unwrap_or(-1);
                    p.leader_epoch += 1;
                    if next.is_some() {
                        elections.clean += 1;
                    }
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
        let _ = controlled;
        self.elections.clean += elections.clean;
    }
}

/// A reassignment completes once every added replica is in the ISR: the removed replicas
/// leave, and if the leader was one of them, an ISR member of the target leads.
fn complete_reassignment(p: &mut PartitionMeta) {
    if p.adding.is_empty() && p.removing.is_empty() {
        return;
    }
    if !p.adding.iter().all(|r| p.isr.contains(r)) {
        return;
    }
    let removing = std::mem::take(&mut p.removing);
    p.adding.clear();
    p.replicas.retain(|r| !removing.contains(r));
    p.isr.retain(|r| !removing.contains(r));
    if removing.contains(&p.leader) {
        p.leader = p.replicas.iter().copied().find(|r| p.isr.contains(r)).unwrap_or(-1);
        p.leader_epoch += 1;
    }
}

/// A broker replicas may be placed on (Kafka's `UsableBroker`): registered, not fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableBroker {
    pub id: i32,
    pub rack: Option<String>,
}

/// Place `partitions` partitions of `rf` replicas on `brokers`: Kafka's round-robin with a
/// shifting follower offset, over a broker list that alternates racks so that replicas of
/// one partition land on different racks when there are enough.
pub fn assign_replicas(brokers: &[UsableBroker], partitions: i32, rf: i16, start: usize) -> Vec<Vec<i32>> {
    let mut by_rack: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.clone()).or_default().push(b.id);
    }
    for v in by_rack.values_mut() {
        v.sort_unstable();
    }
    let mut ordered = Vec::with_capacity(brokers.len());
    let depth = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..depth {
        for v in by_rack.values() {
            if let Some(id) = v.get(i) {
                ordered.push(*id);
            }
        }
    }
    let n = ordered.len();
    if n == 0 {
        return vec![vec![]; partitions.max(0) as usize];
    }
    let rack = |id: i32| brokers.iter().find(|b| b.id == id).and_then(|b| b.rack.clone());
    let want = (rf.max(1) as usize).min(n);
    (0..partitions.max(0) as usize)
        .map(|p| {
            let first = (start + p) % n;
            // The shift moves with each full round so followers of consecutive rounds differ.
            let shift = 1 + (start + p / n) % (n - 1).max(1);
            let mut replicas = vec![ordered[first]];
            let candidates: Vec<i32> =
                (0..n).map(|i| ordered[(first + shift + i) % n]).filter(|id| *id != ordered[first]).collect();
            // First pass: racks not used yet; second pass: anyone.
            for fresh_rack_only in [true, false] {
                for &c in &candidates {
                    if replicas.len() == want {
                        break;
                    }
                    let used = replicas.iter().any(|r| rack(*r) == rack(c));
                    if !replicas.contains(&c) && (!fresh_rack_only || !used) {
                        replicas.push(c);
                    }
                }
            }
            replicas
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerMeta {
        BrokerMeta { id, endpoints: vec![], rack: None, http: None, fenced: true, epoch: 0, controller: true }
    }

    fn image3() -> ClusterImage {
        let mut img = ClusterImage::default();
        for id in 1..=3 {
            img.apply(id as u64, Command::RegisterBroker { broker: broker(id) });
            img.apply(10 + id as u64, Command::Unfence { id });
        }
        let t = TopicMeta {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 1,
            replication_factor: 3,
            configs: BTreeMap::new(),
            internal: false,
            assignment: vec![PartitionMeta {
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                ..Default::default()
            }],
        };
        img.apply(20, Command::CreateTopics { topics: vec![t] });
        img
    }

    fn p(img: &ClusterImage) -> PartitionMeta {
        img.topics["t"].assignment[0].clone()
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_and_the_last_member_stays() {
        let mut img = image3();
        img.apply(30, Command::Fence { id: 1 });
        assert_eq!((p(&img).leader, p(&img).isr.clone(), p(&img).leader_epoch), (2, vec![2, 3], 1));
        img.apply(31, Command::Fence { id: 2 });
        assert_eq!((p(&img).leader, p(&img).isr.clone()), (3, vec![3]));
        img.apply(32, Command::Fence { id: 3 });
        assert_eq!((p(&img).leader, p(&img).isr.clone()), (-1, vec![3]));
        // Broker 1 is not in the ISR: without unclean election it does not lead.
        img.apply(33, Command::Unfence { id: 1 });
        assert_eq!(p(&img).leader, -1);
        img.apply(34, Command::Unfence { id: 3 });
        assert_eq!((p(&img).leader, p(&img).leader_epoch), (3, 4));
    }

    #[test]
    fn unclean_election_only_when_allowed() {
        let mut img = image3();
        for id in [1, 2, 3] {
            img.apply(30 + id as u64, Command::Fence { id });
        }
        let mut cfg = BTreeMap::new();
        cfg.insert("unclean.leader.election.enable".to_string(), "true".to_string());
        img.apply(40, Command::SetTopicConfigs { name: "t".into(), configs: cfg });
        img.apply(41, Command::Unfence { id: 1 });
        assert_eq!((p(&img).leader, p(&img).isr.clone()), (1, vec![1]));
        assert_eq!(img.elections.unclean, 1);
    }

    #[test]
    fn alter_partition_checks_epochs() {
        let mut img = image3();
        let shrink = |le, pe| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: le,
            partition_epoch: pe,
            isr: vec![1, 2],
        };
        assert_eq!(img.apply(30, shrink(1, 0)), err(ResponseError::FencedLeaderEpoch));
        assert_eq!(img.apply(31, shrink(0, 5)), err(ResponseError::InvalidUpdateVersion));
        assert_eq!(img.apply(32, shrink(0, 0)), Outcome::Done);
        assert_eq!(p(&img).isr, vec![1, 2]);
        // A fenced broker cannot be added back.
        img.apply(33, Command::Fence { id: 3 });
        let grow = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 1,
            isr: vec![1, 2, 3],
        };
        assert_eq!(img.apply(34, grow), err(ResponseError::IneligibleReplica));
    }

    #[test]
    fn alter_partitions_decides_each_change_alone() {
        let mut img = image3();
        let change = |pe, isr: Vec<i32>| IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: pe,
            isr,
        };
        let out = img.apply(30, Command::AlterPartitions { changes: vec![change(0, vec![1, 2]), change(0, vec![1])] });
        assert_eq!(out, Outcome::Codes(vec![0, ResponseError::InvalidUpdateVersion.code()]));
        assert_eq!((p(&img).isr.clone(), p(&img).partition_epoch), (vec![1, 2], 1));
    }

    #[test]
    fn reassignment_completes_when_new_replicas_join_the_isr() {
        let mut img = image3();
        img.apply(30, Command::RegisterBroker { broker: broker(4) });
        img.apply(31, Command::Unfence { id: 4 });
        img.apply(32, Command::Reassign { topic: "t".into(), partition: 0, target: Some(vec![2, 3, 4]) });
        assert_eq!(
            (p(&img).replicas.clone(), p(&img).adding.clone(), p(&img).removing.clone()),
            (vec![2, 3, 4, 1], vec![4], vec![1])
        );
        let pe = p(&img).partition_epoch;
        img.apply(
            33,
            Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                partition_epoch: pe,
                isr: vec![1, 2, 3, 4],
            },
        );
        let q = p(&img);
        assert_eq!((q.replicas, q.isr, q.leader, q.leader_epoch), (vec![2, 3, 4], vec![2, 3, 4], 2, 1));
    }

    #[test]
    fn controlled_shutdown_moves_leadership() {
        let mut img = image3();
        img.apply(30, Command::ControlledShutdown { id: 1 });
        assert_eq!(p(&img).leader, 2);
        assert!(img.brokers[&1].fenced);
        img.apply(31, Command::Unfence { id: 1 });
        img.apply(
            32,
            Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                leader_epoch: 1,
                partition_epoch: 1,
                isr: vec![2, 3, 1],
            },
        );
        assert_eq!(img.apply(33, Command::ElectPreferred { topic: "t".into(), partition: 0 }), Outcome::Done);
        assert_eq!(p(&img).leader, 1);
    }

    #[test]
    fn assignment_spreads_leaders_and_racks() {
        let usable = |id, rack: Option<&str>| UsableBroker { id, rack: rack.map(String::from) };
        let brokers = vec![usable(1, Some("a")), usable(2, Some("a")), usable(3, Some("b")), usable(4, Some("b"))];
        let a = assign_replicas(&brokers, 8, 2, 0);
        let rack = |id: i32| brokers.iter().find(|b| b.id == id).unwrap().rack.clone();
        for r in &a {
            assert_eq!(r.len(), 2);
            assert_ne!(rack(r[0]), rack(r[1]), "{a:?}");
        }
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for r in &a {
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert!(leaders.values().all(|&n| n == 2), "{leaders:?}");
        let three: Vec<UsableBroker> = (1..=3).map(|i| usable(i, None)).collect();
        for r in assign_replicas(&three, 10, 3, 1) {
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 3);
        }
    }
}
