//! The TCP side: every accepted connection gets one upstream connection, and each
//! direction of the pair is a reader and a writer joined by a FIFO of chunks stamped
//! with their due time.
//!
//! The reader never waits for the writer's timers, only for room (at most
//! [`MAX_QUEUED`] bytes read and not yet written per direction, which bounds memory when
//! a receiver is slow and is far above any bandwidth-delay product met on loopback).
//! End of stream is queued like data and forwarded as a half-close, so exchanges that
//! end with `shutdown(SHUT_WR)` still get their answer. A reset or a refused write on
//! either side ends the pair with a reset on both, as a broken link would.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant};

/// Largest read, so one chunk's due time covers no more than a moment of traffic.
pub const CHUNK: usize = 256 * 1024;

/// Bytes read but not yet written, per direction, before reading pauses.
pub const MAX_QUEUED: usize = 64 * 1024 * 1024;

/// What the proxy has forwarded, for the benchmark's report.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    /// Client to upstream, written.
    pub bytes_up: AtomicU64,
    /// Upstream to client, written.
    pub bytes_down: AtomicU64,
}

/// Accepts connections on `listener` and forwards each to `upstream` after `delay`
/// each way; runs until the future is dropped.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    counters: Arc<Counters>,
) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(pair(client, upstream, delay, counters.clone()));
            }
            // Out of descriptors or an aborted handshake: this connection is lost,
            // the listener is not; the pause keeps a persistent error from spinning.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn pair(mut client: TcpStream, upstream: SocketAddr, delay: Duration, c: Arc<Counters>) {
    let mut up = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => {
            // Refused upstream: the client sees a reset, as it would from the far side.
            let _ = client.set_zero_linger();
            return;
        }
    };
    // A proxy that coalesced small writes would add latency beyond the configured one.
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (cr, cw) = client.split();
    let (ur, uw) = up.split();
    let forwarded = tokio::try_join!(
        direction(cr, uw, delay, &c.bytes_up),
        direction(ur, cw, delay, &c.bytes_down)
    );
    if forwarded.is_err() {
        let _ = client.set_zero_linger();
        let _ = up.set_zero_linger();
    }
}

/// Forwards one direction until end of stream has been delivered, or the first error.
async fn direction<R, W>(r: R, w: W, delay: Duration, written: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (free_tx, free_rx) = mpsc::unbounded_channel();
    let room = Semaphore::new(MAX_QUEUED);
    tokio::try_join!(
        read_side(r, tx, free_rx, &room, delay),
        write_side(w, rx, free_tx, &room, written)
    )?;
    Ok(())
}

type Chunk = (Instant, Vec<u8>);

async fn read_side<R: AsyncRead + Unpin>(
    mut r: R,
    tx: mpsc::UnboundedSender<Chunk>,
    mut free: mpsc::UnboundedReceiver<Vec<u8>>,
    room: &Semaphore,
    delay: Duration,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        // Reads into a chunk-sized buffer of its own: no copy, no zeroing.
        let n = r.read_buf(&mut buf).await?;
        let due = Instant::now() + delay;
        if n == 0 {
            // End of stream is a packet on the wire too: it queues behind the data.
            let _ = tx.send((due, Vec::new()));
            return Ok(());
        }
        let chunk = if n < CHUNK / 4 {
            // Small reads (requests, acks) are copied out so that the big buffer is
            // kept for the next read instead of being held for the delay.
            let small = buf.clone();
            buf.clear();
            small
        } else {
            // Big ones travel in their buffer, and buffers the writer is done with
            // come back: a fresh 256 KiB allocation per read would cost a page fault
            // and a zeroed page per 4 KiB (about an eighth of the proxy's CPU).
            let next = free
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            std::mem::replace(&mut buf, next)
        };
        // n <= CHUNK, far below the semaphore's total, so this always completes.
        room.acquire_many(n as u32)
            .await
            .map_err(|_| io::Error::other("queue closed"))?
            .forget();
        if tx.send((due, chunk)).is_err() {
            // The writer stopped on an error, which ends the pair.
            return Ok(());
        }
    }
}

async fn write_side<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    free: mpsc::UnboundedSender<Vec<u8>>,
    room: &Semaphore,
    written: &AtomicU64,
) -> io::Result<()> {
    while let Some((due, mut buf)) = rx.recv().await {
        // One timer per head of the queue: later chunks are due later still, and
        // those already due behind it go out without arming one.
        if due > Instant::now() {
            sleep_until(due).await;
        }
        if buf.is_empty() {
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&buf).await?;
        let n = buf.len();
        written.fetch_add(n as u64, Ordering::Relaxed);
        room.add_permits(n);
        if buf.capacity() == CHUNK {
            buf.clear();
            let _ = free.send(buf);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    /// An upstream that echoes every byte back and half-closes after the client does.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    async fn proxy(upstream: SocketAddr, delay_ms: u64) -> (SocketAddr, Arc<Counters>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = Arc::new(Counters::default());
        tokio::spawn(serve(
            l,
            upstream,
            Duration::from_millis(delay_ms),
            c.clone(),
        ));
        (addr, c)
    }

    #[tokio::test]
    async fn a_round_trip_costs_twice_the_delay() {
        let (addr, _) = proxy(echo().await, 100).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        for _ in 0..3 {
            let t0 = StdInstant::now();
            s.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            s.read_exact(&mut back).await.unwrap();
            let rtt = t0.elapsed();
            assert_eq!(&back, b"ping");
            assert!(
                rtt >= Duration::from_millis(80),
                "round trip {rtt:?} < 80 ms"
            );
            // Room for timer granularity and a loaded machine; a delay applied twice
            // would be 400 ms or more.
            assert!(rtt < Duration::from_millis(330), "round trip {rtt:?}");
        }
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_and_whole_and_the_half_close_is_forwarded() {
        let (addr, c) = proxy(echo().await, 20).await;
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        // 8 MiB of a pattern that shows any reordering or loss of a chunk.
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for part in sent.chunks(100_003) {
                w.write_all(part).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let t0 = StdInstant::now();
        let mut back = Vec::new();
        // read_to_end returns only once the echo's half-close came back through us.
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the bytes came back changed or reordered");
        assert!(t0.elapsed() >= Duration::from_millis(40));
        assert_eq!(c.bytes_up.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(c.bytes_down.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(c.connections.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_link_is_a_pipeline_not_stop_and_wait() {
        // 40 writes 5 ms apart through a 50 ms delay: each is back about 100 ms after it
        // left, so the last ~300 ms after the first left; stop-and-wait would be 4 s.
        let (addr, _) = proxy(echo().await, 50).await;
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (mut r, mut w) = s.into_split();
        let t0 = StdInstant::now();
        let writer = tokio::spawn(async move {
            for i in 0..40u8 {
                w.write_all(&[i]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut back = [0u8; 40];
        r.read_exact(&mut back).await.unwrap();
        writer.await.unwrap();
        let took = t0.elapsed();
        assert_eq!(back.to_vec(), (0..40u8).collect::<Vec<_>>());
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn a_refused_upstream_resets_the_client() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let (addr, _) = proxy(dead, 10).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // A reset or an immediate end of stream; never data, never a hang.
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("expected the connection to end, got {other:?}"),
        }
    }
}
