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
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java computes `seed ^ length` on an int; the length wraps the same way here.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate() {
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
