//! The records of `__consumer_offsets`, in Kafka's own key and value schemas, so the
//! topic reads the same to Kafka tooling (and to a future migration) as Kafka's does.
//!
//! Keys: an offset commit is key version 1 (group, topic, partition); group metadata is
//! key version 2 (group). Values: offset commit value version 3 (offset, leader epoch,
//! metadata, commit timestamp) and group metadata value version 3 (protocol type,
//! generation, protocol, leader, state timestamp, members). A null value is a
//! tombstone: the offset or the group is gone, and compaction eventually drops the key.
//! Strings are int16-length prefixed, byte arrays int32-length prefixed, as in Kafka's
//! pre-flexible schemas.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end before the field being read.
    #[error("truncated {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A schema version this broker does not know.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// Key or value.
        what: &'static str,
        /// The version found.
        version: i16,
    },
    /// A string is not UTF-8.
    #[error("{what} is not UTF-8")]
    NotUtf8 {
        /// The field being read.
        what: &'static str,
    },
}

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    /// A committed offset of one partition for one group.
    Offset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A group's membership and generation.
    Group {
        /// The group.
        group: String,
    },
}

/// A committed offset (offset commit value v3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset the group will consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// Client-supplied metadata, returned as given.
    pub metadata: String,
    /// When the commit was accepted (ms since the epoch).
    pub commit_timestamp: i64,
}

/// One member as stored in group metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    /// The member id.
    pub member_id: String,
    /// The static instance id, if the member is static.
    pub instance_id: Option<String>,
    /// The client id it joined with.
    pub client_id: String,
    /// The host it joined from.
    pub client_host: String,
    /// Its rebalance timeout (ms).
    pub rebalance_timeout_ms: i32,
    /// Its session timeout (ms).
    pub session_timeout_ms: i32,
    /// Its metadata for the chosen protocol.
    pub subscription: Bytes,
    /// The assignment it was given.
    pub assignment: Bytes,
}

/// A group's metadata (group metadata value v3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    /// The protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The current generation.
    pub generation: i32,
    /// The protocol chosen for the generation, if any.
    pub protocol: Option<String>,
    /// The leader of the generation, if any.
    pub leader: Option<String>,
    /// When the group last changed state (ms since the epoch).
    pub state_timestamp: i64,
    /// The members of the generation.
    pub members: Vec<MemberValue>,
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

impl RecordKey {
    /// The key's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.put_i32(*partition);
            }
            RecordKey::Group { group } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_str(&mut out, group);
            }
        }
        out.freeze()
    }

    /// Reads a key; versions 0 and 1 are offset keys, 2 a group key (as in Kafka).
    pub fn decode(mut buf: &[u8]) -> Result<RecordKey, RecordError> {
        let version = get_i16(&mut buf, "key version")?;
        match version {
            0 | 1 => Ok(RecordKey::Offset {
                group: get_str(&mut buf, "group")?,
                topic: get_str(&mut buf, "topic")?,
                partition: get_i32(&mut buf, "partition")?,
            }),
            2 => Ok(RecordKey::Group {
                group: get_str(&mut buf, "group")?,
            }),
            version => Err(RecordError::UnknownVersion {
                what: "key",
                version,
            }),
        }
    }
}

impl OffsetValue {
    /// The value's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(24 + self.metadata.len());
        out.put_i16(OFFSET_VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_str(&mut out, &self.metadata);
        out.put_i64(self.commit_timestamp);
        out.freeze()
    }

    /// Reads a value of version 0 to 3 (older versions carry no leader epoch and, for
    /// 1, an expiry this broker ignores).
    pub fn decode(mut buf: &[u8]) -> Result<OffsetValue, RecordError> {
        let version = get_i16(&mut buf, "offset value version")?;
        let offset = get_i64(&mut buf, "offset")?;
        let leader_epoch = if version >= 3 {
            get_i32(&mut buf, "leader epoch")?
        } else {
            -1
        };
        let metadata = get_str(&mut buf, "metadata")?;
        let commit_timestamp = get_i64(&mut buf, "commit timestamp")?;
        if version == 1 {
            get_i64(&mut buf, "expire timestamp")?;
        }
        if version > 3 {
            return Err(RecordError::UnknownVersion {
                what: "offset value",
                version,
            });
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    /// The value's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(GROUP_VALUE_VERSION);
        put_str(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_opt_str(&mut out, self.protocol.as_deref());
        put_opt_str(&mut out, self.leader.as_deref());
        out.put_i64(self.state_timestamp);
        out.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_opt_str(&mut out, m.instance_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.put_i32(m.rebalance_timeout_ms);
            out.put_i32(m.session_timeout_ms);
            put_bytes(&mut out, &m.subscription);
            put_bytes(&mut out, &m.assignment);
        }
        out.freeze()
    }

    /// Reads a value of version 0 to 3.
    pub fn decode(mut buf: &[u8]) -> Result<GroupValue, RecordError> {
        let version = get_i16(&mut buf, "group value version")?;
        if !(0..=GROUP_VALUE_VERSION).contains(&version) {
            return Err(RecordError::UnknownVersion {
                what: "group value",
                version,
            });
        }
        let protocol_type = get_str(&mut buf, "protocol type")?;
        let generation = get_i32(&mut buf, "generation")?;
        let protocol = get_opt_str(&mut buf, "protocol")?;
        let leader = get_opt_str(&mut buf, "leader")?;
        let state_timestamp = if version >= 2 {
            get_i64(&mut buf, "state timestamp")?
        } else {
            -1
        };
        let count = get_i32(&mut buf, "member count")?;
        let mut members = Vec::new();
        for _ in 0..count.max(0) {
            let member_id = get_str(&mut buf, "member id")?;
            let instance_id = if version >= 3 {
                get_opt_str(&mut buf, "instance id")?
            } else {
                None
            };
            let client_id = get_str(&mut buf, "client id")?;
            let client_host = get_str(&mut buf, "client host")?;
            let rebalance_timeout_ms = if version >= 1 {
                get_i32(&mut buf, "rebalance timeout")?
            } else {
                -1
            };
            let session_timeout_ms = get_i32(&mut buf, "session timeout")?;
            let subscription = get_bytes(&mut buf, "subscription")?;
            let assignment = get_bytes(&mut buf, "assignment")?;
            members.push(MemberValue {
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                    session_timeout_ms
                } else {
                    rebalance_timeout_ms
                },
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

/// Kafka's rule for which `__consumer_offsets` partition holds a group:
/// `abs(String.hashCode(group)) % partitions`, with Java's `hashCode` over UTF-16 code
/// units and Kafka's `Utils.abs` (which maps `i32::MIN` to 0).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Group, topic and client names are bounded far below 32 KiB by the request
    // decoder (int16 lengths); metadata is checked against its limit before it gets here.
    let len = s.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(&s.as_bytes()[..len]);
}

fn put_opt_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

fn need(buf: &[u8], n: usize, what: &'static str) -> Result<(), RecordError> {
    if buf.len() < n {
        Err(RecordError::Truncated { what })
    } else {
        Ok(())
    }
}

fn get_i16(buf: &mut &[u8], what: &'static str) -> Result<i16, RecordError> {
    need(buf, 2, what)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut &[u8], what: &'static str) -> Result<i32, RecordError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut &[u8], what: &'static str) -> Result<i64, RecordError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

fn get_opt_str(buf: &mut &[u8], what: &'static str) -> Result<Option<String>, RecordError> {
    let len = get_i16(buf, what)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    need(buf, len, what)?;
    let s = std::str::from_utf8(&buf[..len])
        .map_err(|_| RecordError::NotUtf8 { what })?
        .to_string();
    buf.advance(len);
    Ok(Some(s))
}

fn get_str(buf: &mut &[u8], what: &'static str) -> Result<String, RecordError> {
    Ok(get_opt_str(buf, what)?.unwrap_or_default())
}

fn get_bytes(buf: &mut &[u8], what: &'static str) -> Result<Bytes, RecordError> {
    let len = get_i32(buf, what)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    let len = len as usize;
    need(buf, len, what)?;
    let b = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for key in [
            RecordKey::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
            },
            RecordKey::Group { group: "g".into() },
        ] {
            assert_eq!(RecordKey::decode(&key.encode()).unwrap(), key);
        }
        assert_eq!(
            RecordKey::decode(&[0, 9]).unwrap_err(),
            RecordError::UnknownVersion {
                what: "key",
                version: 9
            }
        );
        assert!(matches!(
            RecordKey::decode(&[0, 1, 0, 5, b'a']),
            Err(RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn offset_key_matches_kafka_bytes() {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        };
        assert_eq!(
            key.encode().as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]
        );
    }

    #[test]
    fn values_round_trip() {
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&offset.encode()).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(&group.encode()).unwrap(), group);
    }

    #[test]
    fn coordinator_partition_follows_java_hash_code() {
        // Java: "".hashCode() == 0, "a".hashCode() == 97,
        // "my-group".hashCode() == -1906497762, "consumer-group-1".hashCode() == 147483020.
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        assert_eq!(partition_for("consumer-group-1", 50), 147_483_020 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE; Kafka's abs maps it to 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
