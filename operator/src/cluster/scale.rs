//! Step 6b: scaling. Up is just more StatefulSet replicas (new brokers join empty; moving
//! partitions onto them is a reassignment, not the operator's call). Down removes the
//! highest ordinals, whose volumes keep the only copy of any partition still assigned to
//! them, so it waits until those brokers host nothing and never goes below the voters.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    /// Set the StatefulSet to this many replicas.
    To(i32),
    /// Keep `keep` replicas: removing brokers now would lose data or a voter.
    Blocked { keep: i32, message: String },
}

/// `current`: the StatefulSet's replicas (None before it exists). `partitions`: for each
/// ordinal that scaling down would remove, the partitions its broker hosts or is assigned,
/// or why that could not be learned.
pub fn decide(
    desired: i32,
    current: Option<i32>,
    voters: i32,
    partitions: &BTreeMap<i32, Result<u64, String>>,
) -> Scale {
    let Some(current) = current.filter(|c| *c > desired) else {
        return Scale::To(desired);
    };
    if desired < voters {
        return Scale::Blocked {
            keep: current,
            message: format!(
                "cannot scale to {desired}: the {voters} metadata-quorum voters (pods 0..{}) stay",
                voters - 1
            ),
        };
    }
    let mut busy = Vec::new();
    for ordinal in desired..current {
        match partitions.get(&ordinal) {
            Some(Ok(0)) => {}
            Some(Ok(n)) => busy.push(format!("broker {ordinal} hosts {n} partitions")),
            Some(Err(e)) => busy.push(format!("broker {ordinal}: partitions unknown ({e})")),
            None => busy.push(format!("broker {ordinal}: partitions unknown")),
        }
    }
    if busy.is_empty() {
        Scale::To(desired)
    } else {
        Scale::Blocked {
            keep: current,
            message: format!(
                "scale down from {current} to {desired} waits until the brokers to remove host no partitions \
                 (reassign them first): {}",
                busy.join("; ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_and_first_creation_go_straight_through() {
        assert_eq!(decide(3, None, 3, &BTreeMap::new()), Scale::To(3));
        assert_eq!(decide(5, Some(3), 3, &BTreeMap::new()), Scale::To(5));
        assert_eq!(decide(3, Some(3), 3, &BTreeMap::new()), Scale::To(3));
    }

    #[test]
    fn down_only_when_the_removed_brokers_are_empty() {
        let empty = BTreeMap::from([(3, Ok(0)), (4, Ok(0))]);
        assert_eq!(decide(3, Some(5), 3, &empty), Scale::To(3));
        let busy = BTreeMap::from([(3, Ok(0)), (4, Ok(7))]);
        match decide(3, Some(5), 3, &busy) {
            Scale::Blocked { keep: 5, message } => {
                assert!(message.contains("broker 4 hosts 7 partitions"), "{message}")
            }
            s => panic!("{s:?}"),
        }
        let unknown = BTreeMap::from([(3, Err("connection refused".to_string()))]);
        assert!(matches!(decide(3, Some(5), 3, &unknown), Scale::Blocked { keep: 5, .. }));
    }

    #[test]
    fn never_below_the_voters() {
        let empty = BTreeMap::from([(0, Ok(0)), (1, Ok(0)), (2, Ok(0))]);
        assert!(
            matches!(decide(1, Some(3), 3, &empty), Scale::Blocked { keep: 3, message } if message.contains("voters"))
        );
    }
}
