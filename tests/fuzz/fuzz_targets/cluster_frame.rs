//! The cluster stream framing ([`quiver::net::frame`]): the reader every broker runs on
//! every QUIC stream from a peer.
//!
//! The input is a stream's bytes; the first byte chooses how they arrive (how many bytes
//! each read hands over, since QUIC delivers a stream in pieces of any size) and the
//! second the receiver's `max_frame`. Frames are read until the stream ends or a frame is
//! refused. Every frame read must be exactly what its prefix announced, at most
//! `max_frame` long, and the reader must never panic or allocate more than `max_frame`
//! for one frame.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use quiver::net::frame::{self, FrameError, FrameSource};

/// A stream already received, handed over `chunk` bytes at a time.
struct Received<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl FrameSource for Received<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, quinn::ReadError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min(self.chunk).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(Some(n))
    }
}

/// Runs a future that never waits (the bytes are all there).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading from memory waited"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, max, stream @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    // From the smallest legal frame to a few KiB.
    let max_frame = frame::HEADER_LEN + u32::from(*max) * 16;
    let mut source = Received {
        bytes: stream,
        chunk,
    };
    let mut offset = 0usize;
    loop {
        let before = source.bytes.len();
        match now(frame::read(&mut source, max_frame)) {
            Ok(Some(read)) => {
                let length = u32::from_be_bytes(stream[offset..offset + 4].try_into().unwrap());
                assert!(length <= max_frame, "a frame over max_frame was read");
                let end = offset + 4 + length as usize;
                assert_eq!(before - source.bytes.len(), 4 + length as usize);
                assert_eq!(read.version, stream[offset + 4]);
                assert_eq!(read.channel, stream[offset + 5]);
                assert_eq!(read.kind, stream[offset + 6]);
                assert_eq!(&read.payload[..], &stream[offset + 7..end]);
                // The header and payload a writer would produce for it match the bytes.
                if let Some(kind) = frame::Kind::from_u8(read.kind) {
                    if read.version == frame::VERSION {
                        let prefix = frame::prefix(read.channel, kind, read.payload.len());
                        assert_eq!(&prefix[..], &stream[offset..offset + frame::PREFIX_LEN]);
                    }
                }
                offset = end;
            }
            Ok(None) => {
                assert_eq!(offset, stream.len(), "the stream ended between frames");
                break;
            }
            Err(FrameError::TooLarge { size, max }) => {
                assert!(size > max);
                break;
            }
            Err(FrameError::TooShort(length)) => {
                assert!(length < frame::HEADER_LEN);
                break;
            }
            Err(FrameError::Truncated { got, expected }) => {
                assert!(got < expected);
                assert!(source.bytes.is_empty(), "truncated before the stream ended");
                break;
            }
            Err(FrameError::Read(e)) => panic!("an in-memory stream failed: {e}"),
        }
    }
});
