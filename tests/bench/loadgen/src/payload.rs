//! Record values and keys.
//!
//! Values are drawn from a pool of pseudo-random bytes, each record from the next window
//! of the pool, so a batch holds no repeated value and compression measures real work
//! instead of squeezing copies of one buffer. The first 16 bytes of a value carry the
//! wall-clock send time (ns since the Unix epoch) and a sequence number, both big-endian,
//! so a reader in another thread or process can measure end-to-end latency and spot a
//! missing record.

use anyhow::{bail, Context};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the header every value starts with (timestamp, sequence).
pub const HEADER: usize = 16;

const POOL: usize = 16 << 20;

/// A source of record values of one size.
#[derive(Debug)]
pub struct Values {
    pool: Vec<u8>,
    size: usize,
    at: usize,
    scratch: Vec<u8>,
}

impl Values {
    /// `seed` makes threads draw different values.
    pub fn new(size: usize, seed: u64) -> Self {
        let mut pool = vec![0u8; POOL + size];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for chunk in pool.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Values {
            pool,
            size,
            at: (seed as usize * 4099) % POOL,
            scratch: vec![0u8; size],
        }
    }

    /// The next value, stamped with `seq` and the current wall-clock time.
    pub fn next(&mut self, seq: u64) -> &[u8] {
        let n = self.size;
        self.scratch
            .copy_from_slice(&self.pool[self.at..self.at + n]);
        self.at = (self.at + n.max(1) * 7 + 1) % POOL;
        let head = [now_ns().to_be_bytes(), seq.to_be_bytes()].concat();
        let h = HEADER.min(n);
        self.scratch[..h].copy_from_slice(&head[..h]);
        &self.scratch
    }
}

/// Wall-clock time in ns since the Unix epoch (comparable across processes).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reads the header back: (send time in ns since the epoch, sequence), or `None` when the
/// value is too short to carry one.
pub fn header(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() < HEADER {
        return None;
    }
    let ts = u64::from_be_bytes(value[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(value[8..16].try_into().ok()?);
    Some((ts, seq))
}

/// How records are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// No key: the client's partitioner spreads batches over partitions.
    None,
    /// The record's sequence number, in decimal: every key distinct.
    Seq,
    /// One of `n` keys, chosen pseudo-randomly.
    Random(u64),
}

impl FromStr for Keys {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "none" => Ok(Keys::None),
            "seq" => Ok(Keys::Seq),
            _ => {
                let Some(n) = s.strip_prefix("random:") else {
                    bail!("keys must be none, seq or random:N, not {s:?}");
                };
                let n: u64 = n
                    .parse()
                    .with_context(|| format!("keys random:N needs a number, not {n:?}"))?;
                if n == 0 {
                    bail!("keys random:N needs N >= 1");
                }
                Ok(Keys::Random(n))
            }
        }
    }
}

/// Writes the key of record `seq` into `buf`; false when records carry no key.
pub fn key_into(keys: Keys, seq: u64, rng: &mut u64, buf: &mut String) -> bool {
    use std::fmt::Write;
    buf.clear();
    match keys {
        Keys::None => false,
        Keys::Seq => {
            let _ = write!(buf, "{seq}");
            true
        }
        Keys::Random(n) => {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let _ = write!(buf, "key-{}", *rng % n);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_header_and_differ() {
        let mut v = Values::new(100, 1);
        let a = v.next(7).to_vec();
        let b = v.next(8).to_vec();
        assert_eq!(a.len(), 100);
        assert_eq!(header(&a).unwrap().1, 7);
        assert_eq!(header(&b).unwrap().1, 8);
        assert_ne!(a[HEADER..], b[HEADER..]);
        let ts = header(&a).unwrap().0;
        assert!(now_ns() >= ts && now_ns() - ts < 60_000_000_000);
    }

    #[test]
    fn short_values_have_no_header() {
        let mut v = Values::new(10, 1);
        assert_eq!(v.next(1).len(), 10);
        assert_eq!(header(v.next(2)), None);
    }

    #[test]
    fn keys_parse_or_say_what_was_wrong() {
        assert_eq!("none".parse::<Keys>().unwrap(), Keys::None);
        assert_eq!("seq".parse::<Keys>().unwrap(), Keys::Seq);
        assert_eq!("random:10".parse::<Keys>().unwrap(), Keys::Random(10));
        let e = "random:x".parse::<Keys>().unwrap_err().to_string();
        assert!(e.contains("random:N needs a number"), "{e}");
        let e = "hash".parse::<Keys>().unwrap_err().to_string();
        assert!(e.contains("none, seq or random:N"), "{e}");
        assert!("random:0".parse::<Keys>().is_err());
    }

    #[test]
    fn random_keys_stay_within_their_cardinality() {
        let mut rng = 42;
        let mut buf = String::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            assert!(key_into(Keys::Random(5), i, &mut rng, &mut buf));
            seen.insert(buf.clone());
        }
        assert_eq!(seen.len(), 5);
        assert!(!key_into(Keys::None, 1, &mut rng, &mut buf));
    }
}
