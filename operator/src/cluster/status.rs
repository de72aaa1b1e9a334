//! Step 7: the Cluster's status, computed by a pure function from what this reconcile saw
//! and did. The caller writes it only when it differs from the stored one; transition
//! times carry over for conditions whose status did not change, so an unchanged cluster
//! yields an identical status and no write.

use fjord_crds::condition::{DEGRADED, PROGRESSING, READY};
use fjord_crds::ClusterStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::brokers::Health;
use super::roll::{Decision, PodInfo};

/// Everything the status is derived from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub generation: Option<i64>,
    /// Replicas the spec asks for, and the StatefulSet's current count.
    pub replicas: i32,
    pub sts_replicas: i32,
    pub pods: Vec<PodInfo>,
    pub update_revision: Option<String>,
    pub roll: Option<Decision>,
    pub scale_blocked: Option<String>,
    /// Why the StatefulSet runs fewer brokers than `replicas` for now (external addresses).
    pub waiting: Option<String>,
    /// None when no broker answered.
    pub health: Option<Health>,
    pub bootstrap: Option<String>,
    pub pod_ip_bootstrap: Option<String>,
    pub external_bootstrap: Option<String>,
    pub cluster_id: Option<String>,
    pub voters: Vec<i32>,
    pub config_hash: Option<String>,
    pub pending_restarts: Vec<i32>,
}

fn cond(type_: &str, status: bool, reason: &str, message: impl Into<String>, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Replace or add conditions, keeping the old transition time when the status is the same
/// and stamping `now` when it changed.
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>, now: &Time) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.iter().filter(|o| !new.iter().any(|n| n.type_ == o.type_)).cloned().collect();
    for mut c in new {
        c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            Some(o) => o.last_transition_time.clone(),
            None => now.clone(),
        };
        out.push(c);
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The status after a full reconcile.
pub fn compute(old: Option<&ClusterStatus>, f: &Facts, now: &Time) -> ClusterStatus {
    let g = f.generation;
    let serving = |p: &&PodInfo| p.ready && !p.terminating;
    let ready_brokers = f.pods.iter().filter(serving).count() as i32;
    let current = |p: &&PodInfo| f.update_revision.is_some() && p.revision == f.update_revision;
    let ready_current = f.pods.iter().filter(serving).filter(current).count() as i32;

    let ready = if ready_current >= f.sts_replicas && f.sts_replicas == f.replicas {
        cond(READY, true, "Running", format!("{ready_brokers} brokers ready"), g)
    } else {
        cond(
            READY,
            false,
            "BrokersNotReady",
            format!("{ready_current} of {} brokers ready on the current revision", f.replicas),
            g,
        )
    };

    let progressing = match &f.roll {
        Some(Decision::Restart { pod, .. }) => {
            cond(PROGRESSING, true, "RollingRestart", format!("restarting {}", pod.name), g)
        }
        Some(Decision::Wait(why)) => cond(PROGRESSING, true, "RollingRestart", why.clone(), g),
        Some(Decision::Blocked { pod, reason }) => {
            cond(PROGRESSING, true, "RollBlocked", format!("{pod} cannot restart yet; /restart-safe: {reason}"), g)
        }
        _ if f.waiting.is_some() => {
            cond(PROGRESSING, true, "WaitingForLoadBalancer", f.waiting.clone().unwrap_or_default(), g)
        }
        _ if f.scale_blocked.is_none() && (f.sts_replicas != f.replicas || f.pods.len() as i32 != f.sts_replicas) => {
            cond(PROGRESSING, true, "Scaling", format!("{} of {} broker pods exist", f.pods.len(), f.replicas), g)
        }
        _ => cond(PROGRESSING, false, "Stable", "nothing to change", g),
    };

    let health = f.health.unwrap_or_default();
    let degraded = if let Some(msg) = &f.scale_blocked {
        cond(DEGRADED, true, "ScaleDownBlocked", msg.clone(), g)
    } else if health.offline > 0 {
        cond(DEGRADED, true, "OfflinePartitions", format!("{} partitions have no leader", health.offline), g)
    } else if health.under_replicated > 0 {
        cond(
            DEGRADED,
            true,
            "UnderReplicatedPartitions",
            format!("{} partitions have a short ISR", health.under_replicated),
            g,
        )
    } else if ready_brokers < f.pods.len() as i32 || (f.pods.len() as i32) < f.sts_replicas {
        cond(DEGRADED, true, "BrokersNotReady", format!("{ready_brokers} of {} brokers ready", f.sts_replicas), g)
    } else {
        cond(DEGRADED, false, "AsExpected", "all brokers ready, all partitions replicated", g)
    };

    let old_conditions = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    ClusterStatus {
        observed_generation: g,
        conditions: merge_conditions(old_conditions, vec![ready, progressing, degraded], now),
        ready_brokers,
        bootstrap: f.bootstrap.clone(),
        pod_ip_bootstrap: f.pod_ip_bootstrap.clone(),
        external_bootstrap: f.external_bootstrap.clone(),
        cluster_id: f.cluster_id.clone().or_else(|| old.and_then(|o| o.cluster_id.clone())),
        voters: f.voters.clone(),
        under_replicated_partitions: f.health.map(|h| h.under_replicated as i32),
        offline_partitions: f.health.map(|h| h.offline as i32),
        config_hash: f.config_hash.clone(),
        pending_restarts: f.pending_restarts.clone(),
    }
}

/// The spec cannot be deployed: say why, change nothing else.
pub fn invalid(old: Option<&ClusterStatus>, generation: Option<i64>, message: &str, now: &Time) -> ClusterStatus {
    let mut s = old.cloned().unwrap_or_default();
    let conds = vec![
        cond(READY, false, "ConfigInvalid", message, generation),
        cond(DEGRADED, true, "ConfigInvalid", message, generation),
    ];
    s.conditions = merge_conditions(&s.conditions, conds, now);
    s.observed_generation = generation;
    s
}

/// A reconcile failed at a step: `Degraded=True` with the step's reason (e.g.
/// `ApplyFailed`) and the error, everything else as it was.
pub fn failed(
    old: Option<&ClusterStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) -> ClusterStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.conditions = merge_conditions(&s.conditions, vec![cond(DEGRADED, true, reason, message, generation)], now);
    s
}

/// Reconciliation is paused by annotation: say so, change nothing else.
pub fn paused(old: Option<&ClusterStatus>, generation: Option<i64>, now: &Time) -> ClusterStatus {
    let mut s = old.cloned().unwrap_or_default();
    let c =
        cond(PROGRESSING, false, "Paused", "reconciliation is paused (annotation fjord.dev/paused=true)", generation);
    s.conditions = merge_conditions(&s.conditions, vec![c], now);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: i32, rev: &str) -> Vec<PodInfo> {
        (0..n)
            .map(|i| PodInfo {
                ordinal: i,
                name: format!("e-{i}"),
                ready: true,
                revision: Some(rev.into()),
                ..Default::default()
            })
            .collect()
    }

    fn facts() -> Facts {
        Facts {
            generation: Some(2),
            replicas: 3,
            sts_replicas: 3,
            pods: pods(3, "r1"),
            update_revision: Some("r1".into()),
            health: Some(Health::default()),
            ..Default::default()
        }
    }

    fn get<'a>(s: &'a ClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn external_bootstrap_is_carried_and_a_load_balancer_wait_is_progress() {
        let f = Facts { external_bootstrap: Some("10.0.0.1:31000".into()), ..facts() };
        assert_eq!(compute(None, &f, &t(1)).external_bootstrap.as_deref(), Some("10.0.0.1:31000"));
        let why = "waiting for a load balancer address on Service events-2-external";
        let f = Facts { sts_replicas: 2, pods: pods(2, "r1"), waiting: Some(why.into()), ..facts() };
        let s = compute(None, &f, &t(1));
        assert_eq!(
            (get(&s, PROGRESSING).status.as_str(), get(&s, PROGRESSING).reason.as_str()),
            ("True", "WaitingForLoadBalancer")
        );
        assert_eq!(get(&s, PROGRESSING).message, why);
        assert_eq!(get(&s, READY).status, "False");
    }

    #[test]
    fn healthy_cluster_is_ready_and_a_second_pass_is_identical() {
        let s = compute(None, &facts(), &t(10));
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, PROGRESSING).status, "False");
        assert_eq!(get(&s, DEGRADED).reason, "AsExpected");
        assert_eq!((s.ready_brokers, s.observed_generation), (3, Some(2)));
        assert_eq!(compute(Some(&s), &facts(), &t(20)), s, "no change, no new transition times");
    }

    #[test]
    fn roll_and_blocked_scale_show_in_conditions() {
        let mut f = facts();
        f.update_revision = Some("r2".into());
        f.roll = Some(Decision::Blocked { pod: "e-2".into(), reason: "{\"safe\":false}".into() });
        let s = compute(None, &f, &t(1));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, PROGRESSING).reason, "RollBlocked");
        assert!(get(&s, PROGRESSING).message.contains("{\"safe\":false}"));
        let mut f = facts();
        f.replicas = 2;
        f.scale_blocked = Some("broker 2 hosts 4 partitions".into());
        let s = compute(None, &f, &t(1));
        assert_eq!(get(&s, DEGRADED).reason, "ScaleDownBlocked");
        assert_eq!(get(&s, PROGRESSING).status, "False");
    }

    #[test]
    fn partition_health_degrades() {
        let mut f = facts();
        f.health = Some(Health { under_replicated: 2, offline: 0 });
        let s = compute(None, &f, &t(1));
        assert_eq!(get(&s, DEGRADED).reason, "UnderReplicatedPartitions");
        assert_eq!(s.under_replicated_partitions, Some(2));
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let s1 = compute(None, &facts(), &t(1));
        let mut f = facts();
        f.pods[0].ready = false;
        let s2 = compute(Some(&s1), &f, &t(5));
        assert_eq!(get(&s2, READY).last_transition_time, t(5));
        assert_eq!(get(&s2, PROGRESSING).last_transition_time, t(1));
    }

    #[test]
    fn a_failed_step_degrades_and_the_next_full_pass_clears_it() {
        let s1 = compute(None, &facts(), &t(1));
        let s2 = failed(Some(&s1), Some(2), "ApplyFailed", "apply StatefulSet/e: conflict", &t(2));
        let d = get(&s2, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str(), d.message.as_str()),
            ("True", "ApplyFailed", "apply StatefulSet/e: conflict")
        );
        assert_eq!(d.last_transition_time, t(2));
        assert_eq!(get(&s2, READY), get(&s1, READY), "readiness is left as the last full pass saw it");
        assert_eq!(s2.ready_brokers, 3);
        let s3 = compute(Some(&s2), &facts(), &t(3));
        assert_eq!(get(&s3, DEGRADED).reason, "AsExpected");
    }

    #[test]
    fn invalid_and_paused_keep_the_rest() {
        let s1 = compute(None, &facts(), &t(1));
        let s2 = invalid(Some(&s1), Some(3), "spec.config cannot set node.id", &t(2));
        assert_eq!(get(&s2, READY).reason, "ConfigInvalid");
        assert_eq!(s2.ready_brokers, 3);
        let s3 = paused(Some(&s1), Some(3), &t(2));
        assert_eq!(get(&s3, PROGRESSING).reason, "Paused");
        assert_eq!(s3.observed_generation, Some(2));
    }
}
