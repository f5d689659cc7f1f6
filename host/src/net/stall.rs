//! Telling an answer that is slow from one that stopped. A call over a lossy long link
//! may take far longer than any fixed deadline while its bytes keep arriving (a
//! multi-MiB replica fetch or mirror fetch at 1 % loss over 80 ms); failing it at a
//! deadline only makes the caller ask for the same bytes again, for ever. So calls here
//! fail when no byte has arrived for a whole stall bound instead, the first byte
//! included: a peer that never answers still fails after one bound.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::frame::FrameSource;

/// A stream's receiving side that counts what it delivers.
pub(super) struct Counted<'a> {
    pub(super) recv: &'a mut quinn::RecvStream,
    pub(super) received: &'a AtomicU64,
}

impl FrameSource for Counted<'_> {
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, quinn::ReadError> {
        let read = self.recv.read(buf).await?;
        if let Some(n) = read {
            self.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(read)
    }
}

/// Runs `call` until it ends, or until `received` has not grown for a whole `stall`
/// (then `None`).
pub(super) async fn unless_stalled<T>(
    call: impl Future<Output = T>,
    received: &AtomicU64,
    stall: Duration,
) -> Option<T> {
    tokio::pin!(call);
    let mut seen = 0;
    loop {
        tokio::select! {
            result = &mut call => return Some(result),
            () = tokio::time::sleep(stall) => {
                let now = received.load(Ordering::Relaxed);
                if now == seen {
                    return None;
                }
                seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer arriving in `chunks` pieces `every` apart, counted as it comes.
    async fn trickle(received: &AtomicU64, chunks: u64, every: Duration) -> &'static str {
        for _ in 0..chunks {
            tokio::time::sleep(every).await;
            received.fetch_add(1200, Ordering::Relaxed);
        }
        "done"
    }

    #[tokio::test]
    async fn a_slow_answer_that_keeps_coming_is_waited_for() {
        let received = AtomicU64::new(0);
        // 1.5 s in all, five times the stall bound, but never 300 ms without a byte.
        let call = trickle(&received, 15, Duration::from_millis(100));
        let answer = unless_stalled(call, &received, Duration::from_millis(300)).await;
        assert_eq!(answer, Some("done"));
    }

    #[tokio::test]
    async fn an_answer_that_stops_coming_is_given_up() {
        let received = AtomicU64::new(0);
        let call = async {
            trickle(&received, 3, Duration::from_millis(100)).await;
            std::future::pending::<()>().await
        };
        let started = tokio::time::Instant::now();
        let answer = unless_stalled(call, &received, Duration::from_millis(300)).await;
        assert_eq!(answer, None);
        // The last byte came at 300 ms: the stall is seen one to two bounds after it.
        assert!(started.elapsed() >= Duration::from_millis(600));
    }

    #[tokio::test]
    async fn an_answer_that_never_starts_is_given_up_after_one_bound() {
        let received = AtomicU64::new(0);
        let started = tokio::time::Instant::now();
        let answer = unless_stalled(
            std::future::pending::<()>(),
            &received,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(answer, None);
        assert!(started.elapsed() < Duration::from_millis(400));
    }
}
