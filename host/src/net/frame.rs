//! Frames on a cluster stream:
//!
//! ```text
//! u32 length (big endian, of what follows) | u8 version | u8 channel | u8 kind | payload
//! ```
//!
//! `length` counts the three header bytes and the payload and is checked against the
//! endpoint's `max_frame` before anything is allocated. The version is checked by the
//! receiver of a request, which answers an unknown one (or an unknown channel) with an
//! error frame naming it; anything else malformed closes the stream.

use bytes::{Bytes, BytesMut};

/// The protocol version this broker speaks.
pub const VERSION: u8 = 1;
/// Bytes after the length prefix that are not payload: version, channel, kind.
pub const HEADER_LEN: u32 = 3;
/// Bytes before the payload, length prefix included.
pub const PREFIX_LEN: usize = 4 + HEADER_LEN as usize;

/// What a frame is.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request; the payload goes to the [`Service`](super::Service).
    Request = 0,
    /// A successful response; the payload is the service's answer.
    Ok = 1,
    /// An error response; the payload is a UTF-8 message.
    Error = 2,
}

impl Kind {
    /// The kind a frame's kind byte names, if any.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        match byte {
            0 => Some(Kind::Request),
            1 => Some(Kind::Ok),
            2 => Some(Kind::Error),
            _ => None,
        }
    }
}

/// A frame as received: header bytes as they were (the receiver decides what an
/// unknown value means) and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol version byte.
    pub version: u8,
    /// Channel byte.
    pub channel: u8,
    /// Kind byte.
    pub kind: u8,
    /// Everything after the header.
    pub payload: Bytes,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds `max_frame`; the payload was not read.
    #[error("a frame of {size} bytes exceeds max_frame ({max} bytes)")]
    TooLarge {
        /// The length prefix.
        size: u32,
        /// The limit.
        max: u32,
    },
    /// The length prefix is shorter than the header.
    #[error("a frame length of {0} is shorter than the {HEADER_LEN}-byte header")]
    TooShort(u32),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The stream failed (reset, or the connection was lost).
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
}

/// The length prefix and header of a frame with `payload_len` bytes of payload.
pub fn prefix(channel: u8, kind: Kind, payload_len: usize) -> [u8; PREFIX_LEN] {
    let length = (payload_len as u32 + HEADER_LEN).to_be_bytes();
    [
        length[0], length[1], length[2], length[3], VERSION, channel, kind as u8,
    ]
}

/// The frame length (after the prefix) of a payload, if it fits `max_frame`.
pub fn check_size(payload_len: usize, max_frame: u32) -> Result<u32, (u64, u32)> {
    let size = payload_len as u64 + u64::from(HEADER_LEN);
    if size > u64::from(max_frame) {
        Err((size, max_frame))
    } else {
        Ok(size as u32)
    }
}

/// Checks a received length prefix.
pub fn check_length(length: u32, max_frame: u32) -> Result<usize, FrameError> {
    if length < HEADER_LEN {
        return Err(FrameError::TooShort(length));
    }
    if length > max_frame {
        return Err(FrameError::TooLarge {
            size: length,
            max: max_frame,
        });
    }
    Ok(length as usize)
}

/// Writes one frame; the payload is handed to QUIC as is, not copied.
pub(crate) async fn write(
    send: &mut quinn::SendStream,
    channel: u8,
    kind: Kind,
    payload: Bytes,
) -> Result<(), quinn::WriteError> {
    let prefix = Bytes::copy_from_slice(&prefix(channel, kind, payload.len()));
    send.write_all_chunks(&mut [prefix, payload]).await
}

/// Where frames are read from: a QUIC stream, or (in tests and fuzzing) bytes in memory
/// handed over in pieces, which is how a stream delivers them.
pub trait FrameSource {
    /// Reads at most `buf.len()` bytes into `buf`; `None` once the stream has finished.
    fn read_some(
        &mut self,
        buf: &mut [u8],
    ) -> impl std::future::Future<Output = Result<Option<usize>, quinn::ReadError>> + Send;
}

impl FrameSource for quinn::RecvStream {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, quinn::ReadError> {
        self.read(buf).await
    }
}

/// Reads one frame; `Ok(None)` when the peer finished the stream between frames.
pub async fn read<S: FrameSource>(
    recv: &mut S,
    max_frame: u32,
) -> Result<Option<Frame>, FrameError> {
    let mut length = [0u8; 4];
    let got = read_full(recv, &mut length).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < length.len() {
        return Err(FrameError::Truncated {
            got,
            expected: length.len(),
        });
    }
    let length = check_length(u32::from_be_bytes(length), max_frame)?;
    let mut body = BytesMut::zeroed(length);
    let got = read_full(recv, &mut body).await?;
    if got < length {
        return Err(FrameError::Truncated {
            got,
            expected: length,
        });
    }
    let header = body.split_to(HEADER_LEN as usize);
    Ok(Some(Frame {
        version: header[0],
        channel: header[1],
        kind: header[2],
        payload: body.freeze(),
    }))
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
async fn read_full<S: FrameSource>(
    recv: &mut S,
    buf: &mut [u8],
) -> Result<usize, quinn::ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match recv.read_some(&mut buf[filled..]).await? {
            Some(n) => filled += n,
            None => break,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_layout() {
        assert_eq!(prefix(3, Kind::Error, 5), [0, 0, 0, 8, 1, 3, 2]);
        assert_eq!(prefix(1, Kind::Request, 0), [0, 0, 0, 3, 1, 1, 0]);
    }

    #[test]
    fn lengths_are_bounded_before_allocating() {
        assert_eq!(check_length(3, 10).unwrap(), 3);
        assert_eq!(check_length(10, 10).unwrap(), 10);
        assert!(matches!(check_length(2, 10), Err(FrameError::TooShort(2))));
        assert!(matches!(
            check_length(u32::MAX, 10),
            Err(FrameError::TooLarge {
                size: u32::MAX,
                max: 10
            })
        ));
        assert_eq!(check_size(7, 10), Ok(10));
        assert_eq!(check_size(8, 10), Err((11, 10)));
    }

    #[test]
    fn kinds() {
        for kind in [Kind::Request, Kind::Ok, Kind::Error] {
            assert_eq!(Kind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(Kind::from_u8(3), None);
    }
}
