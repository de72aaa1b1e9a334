//! Step 6a: the rolling restart. The StatefulSet's update strategy is OnDelete, so a new
//! pod template (image, config hash, spec) reaches a broker only when the operator deletes
//! its pod. One pod at a time: non-voters first, voters last (each voter restart costs the
//! quorum a member), the highest ordinal first within each group; never while any pod is
//! not Ready; and only when the broker's `/restart-safe` says stopping it keeps every
//! partition at its min ISR.

use std::cmp::Reverse;

/// One broker pod as the roll sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodInfo {
    pub ordinal: i32,
    pub name: String,
    pub ip: Option<String>,
    /// The address of the pod's node (`status.hostIP`): a NodePort listener advertises it.
    pub host_ip: Option<String>,
    pub ready: bool,
    /// Has a deletionTimestamp: going away, not to be counted as serving.
    pub terminating: bool,
    /// The pod's `controller-revision-hash` label.
    pub revision: Option<String>,
}

/// What `/restart-safe` said about one broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Safety {
    /// Stopping it is safe. `note` lists partitions whose replication factor leaves no room
    /// for a restart at all (RF <= min ISR): they are reported, never waited on.
    Safe { note: Option<String> },
    /// Not now: the broker's explanation (partitions that would fall below min ISR).
    Unsafe(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Every pod runs the update revision.
    Done,
    /// A roll is due but must wait (a pod missing, starting or terminating).
    Wait(String),
    /// The next pod's broker refuses: the message goes into the Progressing condition.
    Blocked { pod: String, reason: String },
    /// Delete this pod now.
    Restart { pod: PodInfo, note: Option<String> },
}

/// Pods not on `update_revision`, in the order they are to be restarted.
pub fn restart_order<'a>(pods: &'a [PodInfo], update_revision: &str, voters: i32) -> Vec<&'a PodInfo> {
    let mut out: Vec<&PodInfo> = pods.iter().filter(|p| p.revision.as_deref() != Some(update_revision)).collect();
    out.sort_by_key(|p| (p.ordinal < voters, Reverse(p.ordinal)));
    out
}

/// The next step of the roll. `replicas` is the StatefulSet's count: a missing pod (just
/// deleted, not yet recreated) means wait. `safe` asks the broker; it is called at most
/// once, for the pod that would go next.
pub fn next_pod_to_restart(
    pods: &[PodInfo],
    replicas: i32,
    update_revision: &str,
    voters: i32,
    safe: impl Fn(&PodInfo) -> Safety,
) -> Decision {
    let order = restart_order(pods, update_revision, voters);
    let Some(next) = order.first() else {
        return Decision::Done;
    };
    if (pods.len() as i32) < replicas {
        return Decision::Wait(format!("{} of {replicas} broker pods exist", pods.len()));
    }
    if let Some(p) = pods.iter().find(|p| p.terminating || !p.ready) {
        let what = if p.terminating { "terminating" } else { "not Ready" };
        return Decision::Wait(format!("pod {} is {what}; {} pods left to restart", p.name, order.len()));
    }
    match safe(next) {
        Safety::Safe { note } => Decision::Restart { pod: (*next).clone(), note },
        Safety::Unsafe(reason) => Decision::Blocked { pod: next.name.clone(), reason },
    }
}

/// Interpret a `/restart-safe` answer: 200 is safe (with RF-limited partitions noted), any
/// other code is not (the body says why).
pub fn classify(code: u16, body: &str) -> Safety {
    if code != 200 {
        return Safety::Unsafe(body.trim().to_string());
    }
    let stuck = serde_json::from_str::<fjord_contract::RestartSafe>(body)
        .map(|r| r.replication_factor_allows_no_restart)
        .unwrap_or_default();
    let note = (!stuck.is_empty()).then(|| {
        format!(
            "partitions whose replication factor is not above min ISR go offline during the restart: {}",
            stuck.join(", ")
        )
    });
    Safety::Safe { note }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, rev: &str, ready: bool) -> PodInfo {
        PodInfo {
            ordinal,
            name: format!("events-{ordinal}"),
            ip: Some(format!("10.0.0.{ordinal}")),
            host_ip: None,
            ready,
            terminating: false,
            revision: Some(rev.into()),
        }
    }

    fn safe(_: &PodInfo) -> Safety {
        Safety::Safe { note: None }
    }

    #[test]
    fn non_voters_first_then_voters_highest_ordinal_first() {
        let pods: Vec<_> = (0..5).map(|i| pod(i, "old", true)).collect();
        let order: Vec<i32> = restart_order(&pods, "new", 3).iter().map(|p| p.ordinal).collect();
        assert_eq!(order, vec![4, 3, 2, 1, 0]);
        let pods = vec![pod(0, "old", true), pod(1, "new", true), pod(2, "old", true), pod(3, "old", true)];
        let order: Vec<i32> = restart_order(&pods, "new", 1).iter().map(|p| p.ordinal).collect();
        assert_eq!(order, vec![3, 2, 0], "non-voters 3, 2 before the voter 0");
    }

    #[test]
    fn done_when_every_pod_is_on_the_update_revision() {
        let pods = vec![pod(0, "new", true), pod(1, "new", false)];
        assert_eq!(next_pod_to_restart(&pods, 2, "new", 1, safe), Decision::Done);
    }

    #[test]
    fn never_while_a_pod_is_not_ready_missing_or_terminating() {
        let pods = vec![pod(0, "old", true), pod(1, "new", false)];
        assert!(
            matches!(next_pod_to_restart(&pods, 2, "new", 1, safe), Decision::Wait(m) if m.contains("events-1 is not Ready"))
        );
        let pods = vec![pod(0, "old", true)];
        assert!(matches!(next_pod_to_restart(&pods, 2, "new", 1, safe), Decision::Wait(_)));
        let mut t = pod(1, "old", true);
        t.terminating = true;
        let pods = vec![pod(0, "old", true), t];
        assert!(
            matches!(next_pod_to_restart(&pods, 2, "new", 1, safe), Decision::Wait(m) if m.contains("terminating"))
        );
    }

    #[test]
    fn restarts_the_next_pod_only_when_its_broker_agrees() {
        let pods = vec![pod(0, "old", true), pod(1, "old", true), pod(2, "old", true)];
        let d = next_pod_to_restart(&pods, 3, "new", 3, safe);
        assert!(matches!(d, Decision::Restart { ref pod, note: None } if pod.ordinal == 2));
        let body = r#"{"safe":false,"would_fall_below_min_isr":[{"partition":"orders-0","isr":[2,1],"min_isr":2}]}"#;
        let d = next_pod_to_restart(&pods, 3, "new", 3, |_| classify(503, body));
        assert_eq!(d, Decision::Blocked { pod: "events-2".into(), reason: body.into() });
    }

    #[test]
    fn a_topic_whose_rf_is_below_min_isr_is_reported_not_waited_on() {
        let pods = vec![pod(0, "old", true), pod(1, "new", true)];
        let body = r#"{"safe":true,"ready":true,"would_fall_below_min_isr":[],"replication_factor_allows_no_restart":["single-0","single-1"]}"#;
        match next_pod_to_restart(&pods, 2, "new", 1, |_| classify(200, body)) {
            Decision::Restart { pod, note: Some(note) } => {
                assert_eq!(pod.ordinal, 0);
                assert!(note.contains("single-0, single-1"), "{note}");
            }
            d => panic!("expected a restart with a note, got {d:?}"),
        }
    }

    #[test]
    fn asks_only_about_the_next_pod() {
        let pods = vec![pod(0, "old", true), pod(1, "old", true)];
        let asked = std::cell::RefCell::new(vec![]);
        next_pod_to_restart(&pods, 2, "new", 1, |p| {
            asked.borrow_mut().push(p.ordinal);
            Safety::Unsafe("no".into())
        });
        assert_eq!(*asked.borrow(), vec![1]);
    }
}
