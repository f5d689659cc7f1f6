//! The key hashes Kafka clients partition with, bit for bit.
//!
//! A broker-side partitioner is only useful if it agrees with the clients that produce
//! to the same topic directly, so these functions reproduce each client's arithmetic
//! exactly, including its sign handling:
//!
//! | function | matches | formula |
//! |---|---|---|
//! | [`murmur2_partition`] | Java client default (keyed), librdkafka `murmur2`/`murmur2_random` | `(murmur2(key) & 0x7fffffff) % n` |
//! | [`fnv1a_partition`] | Sarama `NewHashPartitioner` (its default), librdkafka `fnv1a`/`fnv1a_random` | `abs(int32(fnv1a_32(key))) % n` |
//! | [`crc32_partition`] | librdkafka `consistent`/`consistent_random` (its default) | `crc32(key) % n`, unsigned |
//!
//! The host's built-in partitioner uses the same functions, so "no plugin" and "the
//! murmur2 plugin" place records identically. Pure Rust, every target.

/// Kafka's MurmurHash2 variant (`org.apache.kafka.common.utils.Utils.murmur2`): 32-bit
/// MurmurHash2 with seed `0x9747b28c`, reading the key as little-endian 4-byte blocks.
///
/// Written for keys of varying length, where branch mispredictions rather than
/// arithmetic set the cost: the blocks are read 8 bytes at a time (half the loop exits
/// to mispredict), and the 1–3 trailing bytes of a key of 4 bytes or more are taken from
/// one 4-byte read ending at the key's last byte and multiplied in with a conditional
/// move, not a loop. Keys of 16–32 random lengths cost ~30% less than with a
/// byte-at-a-time tail (`host/examples/plugin_bench.rs`); the result is the same bit
/// for bit (see the tests).
#[inline]
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    #[inline(always)]
    fn block(h: u32, k: u32) -> u32 {
        let mut k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h.wrapping_mul(M) ^ k
    }

    let len = data.len();
    // Java computes `seed ^ length` on an int; the length wraps the same way here.
    let mut h = SEED ^ (len as u32);
    let mut pairs = data.chunks_exact(8);
    for pair in &mut pairs {
        let k = u64::from_le_bytes(pair.try_into().expect("8-byte chunk"));
        h = block(h, k as u32);
        h = block(h, (k >> 32) as u32);
    }
    let rest = pairs.remainder();
    if let Some(k) = rest.first_chunk::<4>() {
        h = block(h, u32::from_le_bytes(*k));
    }
    // The tail: the last `len % 4` bytes, little-endian, xored in, then one multiply.
    let tail = len % 4;
    if let Some(last) = data.last_chunk::<4>() {
        // The last four bytes end with the tail; shifting out the bytes before it leaves
        // the tail's little-endian value (and 0 for no tail: a shift by 32 in 64 bits).
        let tail_bits = (u64::from(u32::from_le_bytes(*last)) >> (8 * (4 - tail))) as u32;
        let mixed = (h ^ tail_bits).wrapping_mul(M);
        h = if tail != 0 { mixed } else { h };
    } else if tail != 0 {
        // A key of 1-3 bytes: it is all tail.
        for (i, &byte) in data.iter().enumerate() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's `Utils.toPositive`: clears the sign bit (not `abs`, which would
/// overflow on `i32::MIN` and place differently).
pub fn to_positive(hash: i32) -> u32 {
    (hash & 0x7fff_ffff) as u32
}

/// The Java client's partition for a non-null key: `toPositive(murmur2(key)) % n`.
///
/// # Panics
///
/// If `partitions` is 0.
pub fn murmur2_partition(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions
}

/// 32-bit FNV-1a (offset basis `0x811c9dc5`, prime `0x01000193`), as Go's
/// `hash/fnv.New32a` computes it.
pub fn fnv1a32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &byte in data {
        h ^= u32::from(byte);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Sarama's `NewHashPartitioner` (and librdkafka's `fnv1a`, written to match it): the
/// FNV-1a hash read as an `int32`, its absolute value, modulo `n`. Sarama takes the
/// remainder before negating; both give `|h| mod n`, including for `i32::MIN`.
///
/// # Panics
///
/// If `partitions` is 0.
pub fn fnv1a_partition(key: &[u8], partitions: u32) -> u32 {
    let h = i64::from(fnv1a32(key) as i32);
    (h.abs() % i64::from(partitions)) as u32
}

/// CRC-32 (IEEE 802.3: reflected polynomial `0xedb88320`, initial value and final xor
/// `0xffffffff`), the checksum of zlib and librdkafka's `rd_crc32`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC32_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// librdkafka's `consistent` partitioner: `crc32(key) % n` in unsigned arithmetic.
///
/// # Panics
///
/// If `partitions` is 0.
pub fn crc32_partition(key: &[u8], partitions: u32) -> u32 {
    crc32(key) % partitions
}

/// Byte-at-a-time lookup table, built at compile time.
static CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own `UtilsTest.testMurmur2` vectors.
    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected, "murmur2({key:?})");
        }
    }

    /// A line-by-line transliteration of the Java `Utils.murmur2`, as the reference the
    /// faster `murmur2` must equal for every length and content.
    fn java_murmur2(data: &[u8]) -> i32 {
        let length = data.len() as i32;
        let seed = 0x9747b28c_u32 as i32;
        let m = 0x5bd1e995_i32;
        let r = 24;
        let mut h = seed ^ length;
        let length4 = length / 4;
        for i in 0..length4 {
            let i4 = (i * 4) as usize;
            let mut k = (data[i4] as i32 & 0xff)
                + ((data[i4 + 1] as i32 & 0xff) << 8)
                + ((data[i4 + 2] as i32 & 0xff) << 16)
                + ((data[i4 + 3] as i32 & 0xff) << 24);
            k = k.wrapping_mul(m);
            k ^= ((k as u32) >> r) as i32;
            k = k.wrapping_mul(m);
            h = h.wrapping_mul(m);
            h ^= k;
        }
        let base = (length & !3) as usize;
        let tail = length % 4;
        if tail >= 3 {
            h ^= (data[base + 2] as i32 & 0xff) << 16;
        }
        if tail >= 2 {
            h ^= (data[base + 1] as i32 & 0xff) << 8;
        }
        if tail >= 1 {
            h ^= data[base] as i32 & 0xff;
            h = h.wrapping_mul(m);
        }
        h ^= ((h as u32) >> 13) as i32;
        h = h.wrapping_mul(m);
        h ^= ((h as u32) >> 15) as i32;
        h
    }

    #[test]
    fn murmur2_equals_the_java_transliteration_at_every_length() {
        // splitmix64 bytes; every length up to 200 (all block/tail combinations), with
        // high bytes included so sign extension would show.
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        };
        for len in 0..=200 {
            for _ in 0..20 {
                let key: Vec<u8> = (0..len).map(|_| next()).collect();
                assert_eq!(murmur2(&key), java_murmur2(&key), "key {key:?}");
            }
            let ones = vec![0xff; len];
            assert_eq!(murmur2(&ones), java_murmur2(&ones), "{len} bytes of 0xff");
        }
    }

    #[test]
    fn java_partition_clears_the_sign_bit() {
        // -973932308 & 0x7fffffff = 1173551340
        assert_eq!(to_positive(-973932308), 1_173_551_340);
        assert_eq!(murmur2_partition(b"21", 10), 1_173_551_340 % 10);
        assert_eq!(to_positive(i32::MIN), 0);
    }

    /// librdkafka's `unittest_fnv1a` vectors (Go `hash/fnv` results, sign removed).
    #[test]
    fn fnv1a_matches_go_and_librdkafka_vectors() {
        let cases: [(&str, u32); 11] = [
            ("kafka", 0x0d33c4e1),
            ("giberish123456789", 0x77a58295),
            ("1234", 0x023bdd03),
            ("234", 0x2dea3cd2),
            ("34", 0x740fa83e),
            ("4", 0x310ca263),
            ("PreAmbleWillBeRemoved,ThePrePartThatIs", 0x65cbd69c),
            ("reAmbleWillBeRemoved,ThePrePartThatIs", 0x6e49c79a),
            ("eAmbleWillBeRemoved,ThePrePartThatIs", 0x69eed356),
            ("AmbleWillBeRemoved,ThePrePartThatIs", 0x6abcc023),
            ("", 0x7ee3623b),
        ];
        for (key, expected) in cases {
            let signed = i64::from(fnv1a32(key.as_bytes()) as i32);
            assert_eq!(signed.unsigned_abs(), u64::from(expected), "fnv1a({key:?})");
            assert_eq!(fnv1a_partition(key.as_bytes(), 1 << 31), expected);
        }
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
    }

    #[test]
    fn fnv1a_partition_takes_the_absolute_value() {
        // fnv1a("1234") as i32 is negative: -0x023bdd03 = -37477635.
        assert!((fnv1a32(b"1234") as i32) < 0);
        assert_eq!(fnv1a_partition(b"1234", 7), (37_477_635 % 7) as u32);
    }

    #[test]
    fn crc32_matches_the_standard_check_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
        assert_eq!(crc32_partition(b"123456789", 10), 0xcbf4_3926 % 10);
    }
}
