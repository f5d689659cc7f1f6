//! Response frames: a length prefix, the response header and the body, held as a few
//! chunks so that record sets read from the log go to the socket without being copied
//! into the response buffer.
//!
//! The codec writes every field through [`ByteBufMut`]; the buffer here recognises a
//! record set it was told about (by address and length) when the codec writes it, and
//! keeps a reference to it instead of copying. A Fetch response is mostly record sets,
//! so this saves a full pass over the data on the hottest read path.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Record sets smaller than this are copied: a chunk costs more than a small copy.
const SHARE_MIN: usize = 16 * 1024;

/// An encoded response, ready to write in order.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    chunks: Vec<Bytes>,
}

impl ResponseFrame {
    /// The bytes to write, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Total length in bytes, the length prefix included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// Whether the frame is empty (it never is once encoded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`ByteBufMut`] that keeps known record sets by reference.
pub(crate) struct ChunkedBuf<'a> {
    done: Vec<Bytes>,
    current: BytesMut,
    /// Bytes in `done`.
    flushed: usize,
    shared: &'a [Bytes],
}

impl<'a> ChunkedBuf<'a> {
    /// A buffer expecting about `capacity` copied bytes; `shared` are the record sets the
    /// encoder may write, which are kept by reference when it does.
    pub(crate) fn new(capacity: usize, shared: &'a [Bytes]) -> Self {
        Self {
            done: Vec::new(),
            current: BytesMut::with_capacity(capacity),
            flushed: 0,
            shared,
        }
    }

    /// The finished frame.
    pub(crate) fn finish(mut self) -> ResponseFrame {
        if !self.current.is_empty() {
            self.done.push(self.current.freeze());
        }
        ResponseFrame { chunks: self.done }
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, which upholds the contract;
// `put_slice` only appends whole slices to `done`, never touching uninitialised memory.
unsafe impl BufMut for ChunkedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which is the
        // inner buffer's.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARE_MIN {
            if let Some(set) = self
                .shared
                .iter()
                .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            {
                self.flushed += self.current.len();
                self.done.push(self.current.split().freeze());
                self.flushed += set.len();
                self.done.push(set.clone());
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for ChunkedBuf<'_> {
    fn offset(&self) -> usize {
        self.flushed + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        // Gaps (length fields filled in later) only occur inside record batches, which
        // responses carry as finished bytes; a seek back into a shared chunk cannot
        // happen.
        assert!(
            offset >= self.flushed,
            "seek into a finished chunk ({offset} < {})",
            self.flushed
        );
        self.current.resize(offset - self.flushed, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let base = self.flushed;
        assert!(r.start >= base, "range inside a finished chunk");
        &mut self.current[r.start - base..r.end - base]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn shared_record_sets_are_kept_by_reference_and_bytes_match() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let mut response = FetchResponse::default();
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        for (i, records) in [big.clone(), small.clone(), big.clone()]
            .into_iter()
            .enumerate()
        {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.records = Some(records);
            topic.partitions.push(p);
        }
        response.responses.push(topic);
        for version in [4, 11, 12, 16] {
            let mut plain = BytesMut::new();
            response.encode(&mut plain, version).unwrap();
            let shared = [big.clone(), small.clone()];
            let mut chunked = ChunkedBuf::new(1024, &shared);
            response.encode(&mut chunked, version).unwrap();
            let frame = chunked.finish();
            let joined: Vec<u8> = frame
                .chunks()
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            assert_eq!(joined, plain.to_vec(), "v{version}");
            // Both large sets travel as references to the original buffer.
            let by_ref = frame
                .chunks()
                .iter()
                .filter(|c| c.as_ptr() == big.as_ptr())
                .count();
            assert_eq!(by_ref, 2, "v{version}");
        }
    }
}
