//! Optional zstd compression of a message body, shared by the replication stream and
//! the mirror channel: both carry record batches across links where bytes cost more
//! than the CPU of level-1 zstd.
//!
//! ```text
//! u8 codec (0 none, 1 zstd) | [u32 plain_len if zstd] | body (one zstd frame if zstd)
//! ```
//!
//! Bodies too small to gain are sent as they are. The decoder trusts nothing: the
//! announced plain length is bounded before anything is allocated and checked against
//! what the frame expands to.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Codec byte of a body sent as it is.
pub const CODEC_NONE: u8 = 0;
/// Codec byte of a zstd-compressed body.
pub const CODEC_ZSTD: u8 = 1;
/// Most bytes a compressed body may expand to.
pub const MAX_PLAIN_BYTES: usize = 256 * 1024 * 1024;
/// Bodies smaller than this are not worth compressing.
const COMPRESS_MIN_BYTES: usize = 1024;

/// Appends `body` to `out` behind its codec byte, compressed when `zstd` is asked for
/// and worth it.
pub fn pack(out: &mut BytesMut, body: &[u8], zstd: bool) {
    if zstd && body.len() >= COMPRESS_MIN_BYTES && body.len() <= MAX_PLAIN_BYTES {
        // Level 1: the sender is CPU-bound, and most of the gain over uncompressed
        // batches comes at the lowest levels.
        if let Ok(packed) = zstd::bulk::compress(body, 1) {
            out.reserve(5 + packed.len());
            out.put_u8(CODEC_ZSTD);
            out.put_u32(body.len() as u32);
            out.put_slice(&packed);
            return;
        }
    }
    out.reserve(1 + body.len());
    out.put_u8(CODEC_NONE);
    out.put_slice(body);
}

/// Starts a body written in place behind its codec byte: returns where the codec byte
/// is, for [`finish`] once the body is written. A large body (a replica's fetch answer)
/// is then written once, where [`pack`] would copy it behind the codec byte.
pub fn begin(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_u8(CODEC_NONE);
    at
}

/// Ends a body started at `at` by [`begin`]: compresses it in its place when `zstd` is
/// asked for and worth it, as [`pack`] would have; leaves it as it is otherwise.
pub fn finish(out: &mut BytesMut, at: usize, zstd: bool) {
    let plain = out.len() - at - 1;
    if !zstd || !(COMPRESS_MIN_BYTES..=MAX_PLAIN_BYTES).contains(&plain) {
        return;
    }
    if let Ok(packed) = zstd::bulk::compress(&out[at + 1..], 1) {
        out.truncate(at);
        out.reserve(5 + packed.len());
        out.put_u8(CODEC_ZSTD);
        out.put_u32(plain as u32);
        out.put_slice(&packed);
    }
}

/// The body of a packed message (codec byte first); the error says what is wrong.
pub fn unpack(mut packed: Bytes) -> Result<Bytes, String> {
    if packed.is_empty() {
        return Err("no codec byte".into());
    }
    match packed.get_u8() {
        CODEC_NONE => Ok(packed),
        CODEC_ZSTD => {
            if packed.len() < 4 {
                return Err(format!(
                    "the plain length needs 4 bytes, {} left",
                    packed.len()
                ));
            }
            let plain_len = packed.get_u32() as usize;
            if plain_len > MAX_PLAIN_BYTES {
                return Err(format!(
                    "compressed body claims {plain_len} bytes, more than {MAX_PLAIN_BYTES}"
                ));
            }
            let plain = zstd::bulk::decompress(&packed, plain_len)
                .map_err(|e| format!("zstd body: {e}"))?;
            if plain.len() != plain_len {
                return Err(format!(
                    "zstd body is {} bytes, {plain_len} announced",
                    plain.len()
                ));
            }
            Ok(Bytes::from(plain))
        }
        other => Err(format!("unknown codec {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_zstd_packed_or_in_place() {
        let big = vec![7u8; 10_000];
        for (body, zstd, codec) in [
            (&big[..], true, CODEC_ZSTD),
            (&big[..], false, CODEC_NONE),
            (&b"small"[..], true, CODEC_NONE),
        ] {
            let mut packed = BytesMut::new();
            pack(&mut packed, body, zstd);
            assert_eq!(packed[0], codec);
            // Written in place behind a header, the body reads the same.
            let mut out = BytesMut::new();
            out.put_slice(b"hd");
            let at = begin(&mut out);
            out.put_slice(body);
            finish(&mut out, at, zstd);
            assert_eq!(&out[..2], b"hd");
            assert_eq!(&out[2..], &packed[..]);
            assert_eq!(unpack(packed.freeze()).unwrap(), body);
        }
    }

    #[test]
    fn hostile_input_is_an_error() {
        assert!(unpack(Bytes::new()).is_err());
        assert!(unpack(Bytes::from_static(&[9]))
            .unwrap_err()
            .contains("codec 9"));
        assert!(unpack(Bytes::from_static(&[1, 0])).is_err());
        let mut huge = BytesMut::new();
        huge.put_u8(CODEC_ZSTD);
        huge.put_u32(u32::MAX);
        assert!(unpack(huge.freeze()).unwrap_err().contains("claims"));
        let mut garbage = BytesMut::new();
        garbage.put_u8(CODEC_ZSTD);
        garbage.put_u32(10);
        garbage.put_slice(b"not zstd");
        assert!(unpack(garbage.freeze()).unwrap_err().contains("zstd body"));
    }
}
