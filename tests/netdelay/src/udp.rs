//! The UDP side: one listening socket; per client address a session with its own
//! upstream socket (so the upstream sees one peer per client, as through a NAT), and
//! per direction a FIFO of datagrams stamped with their due time.
//!
//! Loss is decided when a datagram is read, by a seeded generator of each direction's
//! own, so a run with the same seed and the same traffic drops the same datagrams. A
//! direction holding more than [`MAX_QUEUED`] bytes drops what arrives, as a router's
//! full queue would. A session with no datagram either way for the idle time is closed.
//! Socket buffers are raised to [`SOCKET_BUFFER`]: QUIC sends bursts of a whole
//! congestion window, which the kernel's default buffers would drop on arrival.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::{Link, Rng};

/// Asked of the kernel for each socket's send and receive buffers.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Bytes queued per direction of a session before arriving datagrams are dropped.
pub const MAX_QUEUED: usize = 64 * 1024 * 1024;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// What the proxy has forwarded and dropped, for the benchmark's report.
#[derive(Debug, Default)]
pub struct Counters {
    pub sessions: AtomicU64,
    pub open_sessions: AtomicU64,
    /// Datagrams sent on, client to upstream and back.
    pub datagrams_up: AtomicU64,
    pub datagrams_down: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Datagrams dropped by the configured loss.
    pub lost_up: AtomicU64,
    pub lost_down: AtomicU64,
    /// Datagrams dropped because a direction's queue was full.
    pub overflow: AtomicU64,
}

/// A UDP socket bound to `addr` with raised buffers.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Capped by net.core.{r,w}mem_max; what the kernel grants is good enough for a test.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

type Datagram = (Instant, Vec<u8>);

/// One direction's queue: the sender half and the bytes it holds.
struct Queue {
    tx: mpsc::UnboundedSender<Datagram>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Spawns the writer that sends each datagram at its due time through `send`.
    fn spawn<F, Fut>(send: F) -> (Queue, JoinHandle<()>)
    where
        F: Fn(Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Datagram>();
        let queued = Arc::new(AtomicUsize::new(0));
        let held = queued.clone();
        let task = tokio::spawn(async move {
            while let Some((due, d)) = rx.recv().await {
                // One timer per head of the queue: later datagrams are due later still,
                // and those already due behind it go out without arming one.
                if due > Instant::now() {
                    sleep_until(due).await;
                }
                held.fetch_sub(d.len(), Ordering::Relaxed);
                send(d).await;
            }
        });
        (Queue { tx, queued }, task)
    }

    /// Queues `d` for `due`; false when the queue is full and `d` was dropped.
    fn push(&self, due: Instant, d: Vec<u8>) -> bool {
        if self.queued.load(Ordering::Relaxed) + d.len() > MAX_QUEUED {
            return false;
        }
        self.queued.fetch_add(d.len(), Ordering::Relaxed);
        let _ = self.tx.send((due, d));
        true
    }
}

struct Session {
    up: Queue,
    rng: Rng,
    /// Milliseconds since the proxy started at the last datagram either way.
    last: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Forwards datagrams arriving on `socket` to `upstream` and the answers back, until
/// the future is dropped or the listening socket fails.
pub async fn serve(
    socket: UdpSocket,
    upstream: SocketAddr,
    link: Link,
    counters: Arc<Counters>,
) -> io::Result<()> {
    let socket = Arc::new(socket);
    let start = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut made = 0u64;
    let mut sweep = tokio::time::interval(
        (link.idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // An ICMP error for an earlier send to a client that went away.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
                    || e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e),
            },
            _ = sweep.tick() => {
                let now = start.elapsed().as_millis() as u64;
                let idle = link.idle.as_millis() as u64;
                sessions.retain(|_, s| now.saturating_sub(s.last.load(Ordering::Relaxed)) < idle);
                counters.open_sessions.store(sessions.len() as u64, Ordering::Relaxed);
                continue;
            }
        };
        let due = Instant::now() + link.delay;
        let session = match sessions.get_mut(&client) {
            Some(s) => s,
            None => {
                let s = match open(&socket, client, upstream, &link, made, start, &counters) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("udp session for {client}: {e}");
                        continue;
                    }
                };
                made += 1;
                counters.sessions.fetch_add(1, Ordering::Relaxed);
                sessions.insert(client, s);
                counters
                    .open_sessions
                    .store(sessions.len() as u64, Ordering::Relaxed);
                sessions.get_mut(&client).expect("just inserted")
            }
        };
        session
            .last
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if session.rng.chance(link.loss_pct) {
            counters.lost_up.fetch_add(1, Ordering::Relaxed);
        } else if !session.up.push(due, buf[..n].to_vec()) {
            counters.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens client `client`'s session, the `index`-th: its upstream socket and its tasks.
fn open(
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    upstream: SocketAddr,
    link: &Link,
    index: u64,
    start: Instant,
    counters: &Arc<Counters>,
) -> io::Result<Session> {
    let any: SocketAddr = if upstream.is_ipv6() {
        "[::]:0".parse().expect("a literal address")
    } else {
        "0.0.0.0:0".parse().expect("a literal address")
    };
    let up_sock = Arc::new(bind(any)?);
    // A connected socket: the kernel filters out datagrams from anyone else.
    let std_sock = socket2::SockRef::from(up_sock.as_ref());
    std_sock.connect(&upstream.into())?;
    let last = Arc::new(AtomicU64::new(start.elapsed().as_millis() as u64));

    let (up, up_task) = {
        let (s, c) = (up_sock.clone(), counters.clone());
        Queue::spawn(move |d: Vec<u8>| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                // A refused send (nothing listening upstream yet) loses the datagram,
                // as the network would.
                if s.send(&d).await.is_ok() {
                    c.datagrams_up.fetch_add(1, Ordering::Relaxed);
                    c.bytes_up.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let (down, down_task) = {
        let (s, c) = (socket.clone(), counters.clone());
        Queue::spawn(move |d: Vec<u8>| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                if s.send_to(&d, client).await.is_ok() {
                    c.datagrams_down.fetch_add(1, Ordering::Relaxed);
                    c.bytes_down.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let reader = {
        let (c, last, delay, loss) = (counters.clone(), last.clone(), link.delay, link.loss_pct);
        // Seeds distinct per session and direction, fixed by the link's seed.
        let mut rng = Rng::new(link.seed ^ (2 * index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let n = match up_sock.recv(&mut buf).await {
                    Ok(n) => n,
                    // ICMP port unreachable for an earlier send: the upstream is not
                    // there (yet); keep the session.
                    Err(_) => continue,
                };
                let due = Instant::now() + delay;
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                if rng.chance(loss) {
                    c.lost_down.fetch_add(1, Ordering::Relaxed);
                } else if !down.push(due, buf[..n].to_vec()) {
                    c.overflow.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    Ok(Session {
        up,
        rng: Rng::new(link.seed ^ (2 * index).wrapping_mul(0xD1B5_4A32_D192_ED03)),
        last,
        tasks: vec![up_task, down_task, reader],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    /// An upstream that sends every datagram back to whoever sent it.
    async fn echo() -> SocketAddr {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    async fn proxy(upstream: SocketAddr, link: Link) -> (SocketAddr, Arc<Counters>) {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = s.local_addr().unwrap();
        let c = Arc::new(Counters::default());
        let counters = c.clone();
        tokio::spawn(async move { serve(s, upstream, link, counters).await.unwrap() });
        (addr, c)
    }

    fn link(delay_ms: u64) -> Link {
        Link {
            delay: Duration::from_millis(delay_ms),
            ..Link::default()
        }
    }

    async fn client(proxy: SocketAddr) -> UdpSocket {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        s.connect(proxy).await.unwrap();
        s
    }

    #[tokio::test]
    async fn a_round_trip_costs_twice_the_delay() {
        let (addr, _) = proxy(echo().await, link(100)).await;
        let s = client(addr).await;
        let mut buf = [0u8; 16];
        for i in 0..3u8 {
            let t0 = StdInstant::now();
            s.send(&[i; 5]).await.unwrap();
            let n = s.recv(&mut buf).await.unwrap();
            let rtt = t0.elapsed();
            assert_eq!(&buf[..n], &[i; 5]);
            assert!(
                rtt >= Duration::from_millis(80),
                "round trip {rtt:?} < 80 ms"
            );
            // Room for timer granularity and a loaded machine; a delay applied twice
            // would be 400 ms or more.
            assert!(rtt < Duration::from_millis(330), "round trip {rtt:?}");
        }
    }

    /// Sends `n` numbered datagrams of varied sizes, paced so loopback buffers never
    /// overflow, and returns the numbers that came back, in arrival order.
    async fn numbered(s: &UdpSocket, n: u32) -> Vec<u32> {
        let mut back = Vec::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for i in 0..n {
            let mut d = i.to_be_bytes().to_vec();
            d.resize(4 + (i as usize * 37) % 1400, (i % 251) as u8);
            s.send(&d).await.unwrap();
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Everything is back within a round trip and a margin; then the socket is quiet.
        while let Ok(Ok(m)) =
            tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
        {
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert_eq!(m, 4 + (i as usize * 37) % 1400, "datagram {i} changed size");
            assert!(
                buf[4..m].iter().all(|&b| b == (i % 251) as u8),
                "datagram {i} changed"
            );
            back.push(i);
        }
        back
    }

    #[tokio::test]
    async fn datagrams_arrive_whole_and_in_order() {
        let (addr, c) = proxy(echo().await, link(20)).await;
        let s = client(addr).await;
        let back = numbered(&s, 3000).await;
        assert_eq!(back, (0..3000).collect::<Vec<_>>());
        assert_eq!(c.datagrams_up.load(Ordering::Relaxed), 3000);
        assert_eq!(c.datagrams_down.load(Ordering::Relaxed), 3000);
        assert_eq!(c.sessions.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn loss_hits_the_configured_share_and_repeats_with_the_seed() {
        let lossy = Link {
            loss_pct: 10.0,
            seed: 42,
            ..link(5)
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (addr, c) = proxy(echo().await, lossy.clone()).await;
            let s = client(addr).await;
            let back = numbered(&s, 5000).await;
            assert!(
                back.windows(2).all(|w| w[0] < w[1]),
                "survivors out of order"
            );
            let lost_up = c.lost_up.load(Ordering::Relaxed);
            let lost_down = c.lost_down.load(Ordering::Relaxed);
            // 10 % of 5,000 is 500 (sd ~21); of the ~4,500 that went on, 450.
            assert!((380..=620).contains(&lost_up), "lost up {lost_up}");
            assert!((340..=560).contains(&lost_down), "lost down {lost_down}");
            assert_eq!(back.len() as u64, 5000 - lost_up - lost_down);
            runs.push(back);
        }
        assert_eq!(
            runs[0], runs[1],
            "the same seed dropped different datagrams"
        );
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_a_client_can_start_again() {
        let short = Link {
            idle: Duration::from_millis(200),
            ..link(5)
        };
        let (addr, c) = proxy(echo().await, short).await;
        let s = client(addr).await;
        let mut buf = [0u8; 8];
        s.send(b"one").await.unwrap();
        assert_eq!(s.recv(&mut buf).await.unwrap(), 3);
        assert_eq!(c.open_sessions.load(Ordering::Relaxed), 1);
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while c.open_sessions.load(Ordering::Relaxed) != 0 {
            assert!(
                StdInstant::now() < deadline,
                "the idle session was never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.send(b"two").await.unwrap();
        let n = s.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(c.sessions.load(Ordering::Relaxed), 2);
    }
}
