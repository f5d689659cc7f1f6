//! Replica placement: which brokers hold each partition of a new topic.
//!
//! Kafka's rack-aware scheme: brokers are ordered so that racks alternate, partition `p`
//! starts at position `start + p` of that order (its preferred leader), and its other
//! replicas take the following brokers, skipping racks already used until every rack
//! holds one. The start position comes from the topic name so that the preferred
//! leaders of different topics do not all land on the same broker.

use std::collections::{BTreeMap, BTreeSet};

use super::state::BrokerMeta;

/// Why replicas could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas than live brokers.
    #[error(
        "replication factor {requested} is larger than the {live} live broker(s) of this cluster"
    )]
    NotEnoughBrokers {
        /// The replication factor asked for.
        requested: i16,
        /// Live brokers.
        live: usize,
    },
    /// A replication factor below 1.
    #[error("replication factor must be at least 1, not {0}")]
    Invalid(i16),
}

/// Why a replica assignment given by the client (`--replica-assignment`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// A partition without replicas.
    #[error("partition {partition} has no replicas")]
    Empty {
        /// The partition.
        partition: i32,
    },
    /// A broker named twice for one partition.
    #[error("partition {partition} names broker {broker} more than once")]
    Duplicate {
        /// The partition.
        partition: i32,
        /// The broker.
        broker: i32,
    },
    /// A broker the cluster does not know.
    #[error("partition {partition} names broker {broker}, which is not registered")]
    UnknownBroker {
        /// The partition.
        partition: i32,
        /// The broker.
        broker: i32,
    },
    /// Partitions of one topic with different replication factors.
    #[error(
        "partition {partition} has {found} replica(s) where the topic's other partitions have {expected}"
    )]
    Uneven {
        /// The partition.
        partition: i32,
        /// Its replicas.
        found: usize,
        /// The topic's replication factor.
        expected: usize,
    },
    /// No replica of a partition could lead it.
    #[error("every broker of partition {partition} ({brokers:?}) is fenced")]
    AllFenced {
        /// The partition.
        partition: i32,
        /// Its replicas.
        brokers: Vec<i32>,
    },
    /// Assignments that do not number the partitions in order.
    #[error("assignments must number the partitions {first}..{end} once each; found {found}")]
    Numbering {
        /// The first partition the assignments are for.
        first: i32,
        /// One past the last.
        end: i32,
        /// The partition numbers given, in order.
        found: String,
    },
    /// Not one assignment per partition.
    #[error("{count} new partition(s) but {given} assignment(s)")]
    Count {
        /// Partitions to assign.
        count: i32,
        /// Assignments given.
        given: usize,
    },
}

/// Checks replica lists given by the client for partitions `first..` of a topic:
/// each non-empty, without repeats, of registered brokers not all fenced, and all of
/// the replication factor `expected` (or of the first list's, for a new topic).
pub fn manual(
    first: i32,
    assignments: Vec<Vec<i32>>,
    expected: Option<usize>,
    brokers: &BTreeMap<i32, BrokerMeta>,
) -> Result<Vec<Vec<i32>>, AssignmentError> {
    let expected = expected.or_else(|| assignments.first().map(Vec::len));
    for (i, replicas) in assignments.iter().enumerate() {
        let partition = first + i as i32;
        if replicas.is_empty() {
            return Err(AssignmentError::Empty { partition });
        }
        let mut seen = BTreeSet::new();
        for &broker in replicas {
            if !seen.insert(broker) {
                return Err(AssignmentError::Duplicate { partition, broker });
            }
            if !brokers.contains_key(&broker) {
                return Err(AssignmentError::UnknownBroker { partition, broker });
            }
        }
        if let Some(expected) = expected.filter(|e| *e != replicas.len()) {
            return Err(AssignmentError::Uneven {
                partition,
                found: replicas.len(),
                expected,
            });
        }
        if replicas.iter().all(|b| brokers[b].fenced) {
            return Err(AssignmentError::AllFenced {
                partition,
                brokers: replicas.clone(),
            });
        }
    }
    Ok(assignments)
}

/// Assigns `count` partitions, numbered from `first`, to `replication_factor` brokers
/// each, chosen among `live`.
pub fn assign(
    topic: &str,
    first: i32,
    count: i32,
    replication_factor: i16,
    live: &[&BrokerMeta],
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if replication_factor < 1 {
        return Err(PlacementError::Invalid(replication_factor));
    }
    let rf = replication_factor as usize;
    if rf > live.len() {
        return Err(PlacementError::NotEnoughBrokers {
            requested: replication_factor,
            live: live.len(),
        });
    }
    let order = rack_alternating(live);
    let n = order.len();
    let racks: BTreeSet<Option<&str>> = order.iter().map(|(_, rack)| *rack).collect();
    let start = name_hash(topic) as usize % n;
    let mut assignments = Vec::with_capacity(count.max(0) as usize);
    for p in first..first + count {
        let leader_pos = (start + p as usize) % n;
        let mut replicas = vec![order[leader_pos].0];
        let mut used_racks = BTreeSet::from([order[leader_pos].1]);
        // A shift that grows every full round keeps followers of consecutive
        // partitions from always pairing the same brokers.
        let shift = 1 + (p as usize / n) % (n - 1).max(1);
        let candidates: Vec<(i32, Option<&str>)> = (0..n)
            .map(|k| order[(leader_pos + shift + k) % n])
            .filter(|(id, _)| *id != order[leader_pos].0)
            .collect();
        // First every rack once, then whatever is left, both in candidate order.
        for (id, rack) in &candidates {
            if replicas.len() >= rf || used_racks.len() >= racks.len() {
                break;
            }
            if !used_racks.contains(rack) {
                replicas.push(*id);
                used_racks.insert(*rack);
            }
        }
        for (id, _) in &candidates {
            if replicas.len() >= rf {
                break;
            }
            if !replicas.contains(id) {
                replicas.push(*id);
            }
        }
        assignments.push(replicas);
    }
    Ok(assignments)
}

fn rack_alternating<'a>(live: &[&'a BrokerMeta]) -> Vec<(i32, Option<&'a str>)> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for broker in live {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut order = Vec::with_capacity(live.len());
    let mut round = 0;
    while order.len() < live.len() {
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(round) {
                order.push((*id, *rack));
            }
        }
        round += 1;
    }
    order
}

fn name_hash(name: &str) -> u32 {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn broker(id: i32, rack: Option<&str>) -> BrokerMeta {
        BrokerMeta {
            id,
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9092,
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], 9093)),
            rack: rack.map(String::from),
            incarnation: 1,
            fenced: false,
            listeners: Default::default(),
        }
    }

    #[test]
    fn leaders_spread_and_replicas_distinct() {
        let brokers: Vec<_> = (1..=3).map(|i| broker(i, None)).collect();
        let live: Vec<_> = brokers.iter().collect();
        let a = assign("orders", 0, 6, 3, &live).unwrap();
        for replicas in &a {
            let set: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(set.len(), 3, "{replicas:?}");
        }
        let leaders: BTreeMap<i32, usize> = a.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r[0]).or_default() += 1;
            m
        });
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn replicas_cover_racks_first() {
        let brokers = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
            broker(5, Some("c")),
            broker(6, Some("c")),
        ];
        let live: Vec<_> = brokers.iter().collect();
        let rack = |id: i32| brokers.iter().find(|b| b.id == id).unwrap().rack.clone();
        for replicas in assign("t", 0, 12, 3, &live).unwrap() {
            let racks: BTreeSet<_> = replicas.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
    }

    #[test]
    fn two_racks_of_two_give_every_partition_both_racks() {
        let brokers = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
        ];
        let live: Vec<_> = brokers.iter().collect();
        let rack = |id: i32| brokers.iter().find(|b| b.id == id).unwrap().rack.clone();
        let assigned = assign("t", 0, 8, 2, &live).unwrap();
        for replicas in &assigned {
            let racks: BTreeSet<_> = replicas.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 2, "{replicas:?}");
        }
        let leaders: BTreeSet<i32> = assigned.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 4);
    }

    #[test]
    fn too_few_brokers_is_refused() {
        let brokers = [broker(1, None), broker(2, None)];
        let live: Vec<_> = brokers.iter().collect();
        let err = assign("t", 0, 1, 3, &live).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughBrokers {
                requested: 3,
                live: 2
            }
        );
        assert!(err.to_string().contains("larger than the 2 live"));
    }

    #[test]
    fn manual_assignments_are_checked() {
        let mut brokers: BTreeMap<i32, BrokerMeta> =
            (1..=3).map(|id| (id, broker(id, None))).collect();
        let ok = vec![vec![1, 2], vec![2, 3], vec![3, 1]];
        assert_eq!(manual(0, ok.clone(), None, &brokers), Ok(ok));
        let err = |first, lists: Vec<Vec<i32>>, expected, brokers: &BTreeMap<i32, BrokerMeta>| {
            manual(first, lists, expected, brokers).unwrap_err()
        };
        assert_eq!(
            err(0, vec![vec![1, 2], vec![]], None, &brokers),
            AssignmentError::Empty { partition: 1 }
        );
        assert_eq!(
            err(0, vec![vec![1, 1]], None, &brokers),
            AssignmentError::Duplicate {
                partition: 0,
                broker: 1
            }
        );
        let unknown = err(4, vec![vec![1, 9]], Some(2), &brokers);
        assert_eq!(
            unknown,
            AssignmentError::UnknownBroker {
                partition: 4,
                broker: 9
            }
        );
        assert_eq!(
            unknown.to_string(),
            "partition 4 names broker 9, which is not registered"
        );
        assert_eq!(
            err(0, vec![vec![1, 2], vec![3]], None, &brokers),
            AssignmentError::Uneven {
                partition: 1,
                found: 1,
                expected: 2
            }
        );
        assert_eq!(
            err(6, vec![vec![1]], Some(3), &brokers),
            AssignmentError::Uneven {
                partition: 6,
                found: 1,
                expected: 3
            }
        );
        brokers.get_mut(&1).unwrap().fenced = true;
        brokers.get_mut(&2).unwrap().fenced = true;
        assert_eq!(
            manual(0, vec![vec![1, 3]], None, &brokers).unwrap(),
            vec![vec![1, 3]]
        );
        assert_eq!(
            err(0, vec![vec![1, 2]], None, &brokers),
            AssignmentError::AllFenced {
                partition: 0,
                brokers: vec![1, 2]
            }
        );
    }
}
