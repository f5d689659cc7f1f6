//! Endpoint tests on real sockets (127.0.0.1, port 0) with certificates from
//! [`certs`](super::certs) in a temporary directory.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::SanType;

use super::certs::{self, CaMaterial};
use super::frame::{self, Kind};
use super::{tls, BrokerId, Channel, ClusterTls, Endpoint, NetError, Service};

const CLUSTER: &str = "test";
const MAX_FRAME: u32 = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Echoes requests, except a few commands that exercise the rest.
struct Echo;

impl Service for Echo {
    fn handle(
        &self,
        peer: BrokerId,
        channel: Channel,
        request: Bytes,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send>> {
        Box::pin(async move {
            match &request[..] {
                b"whoami" => Ok(Bytes::from(format!("{peer} {channel}"))),
                b"slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok(request)
                }
                b"big" => Ok(Bytes::from(vec![7u8; 64 * 1024])),
                r if r.starts_with(b"fail:") => Err(String::from_utf8_lossy(&r[5..]).into_owned()),
                _ => Ok(request),
            }
        })
    }
}

/// A CA with brokers 1, 2 and 3 in a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    ca: CaMaterial,
}

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".into()]
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca(CLUSTER).unwrap();
    let brokers: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|id| certs::issue_broker(&ca, CLUSTER, id, &hosts()).unwrap())
        .collect();
    certs::write_dir(dir.path(), Some(&ca), &brokers).unwrap();
    Fixture { dir, ca }
}

impl Fixture {
    fn tls(&self, id: BrokerId) -> ClusterTls {
        ClusterTls::load(self.dir.path(), CLUSTER, id).unwrap()
    }

    fn endpoint(&self, id: BrokerId) -> Endpoint {
        self.endpoint_with(self.tls(id), MAX_FRAME)
    }

    fn endpoint_with(&self, tls: ClusterTls, max_frame: u32) -> Endpoint {
        Endpoint::bind(local(), tls, Arc::new(Echo), max_frame, Default::default()).unwrap()
    }

    /// A peer that presents `leaf` but accepts our servers, as an attacker would.
    fn rogue(&self, leaf: &certs::BrokerMaterial) -> Endpoint {
        let tls =
            ClusterTls::unchecked(&self.ca.cert_pem, &leaf.cert_pem, &leaf.key_pem, CLUSTER, 9)
                .unwrap();
        self.endpoint_with(tls, MAX_FRAME)
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn call(
    from: &Endpoint,
    to: &Endpoint,
    id: BrokerId,
    request: &'static [u8],
) -> Result<Bytes, NetError> {
    from.call(
        id,
        to.local_addr(),
        Channel::Raft,
        Bytes::from_static(request),
        TIMEOUT,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_round_trip() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    assert_eq!(call(&a, &b, 2, b"hello").await.unwrap(), "hello");
    // The service learns the verified sender and the channel.
    assert_eq!(call(&a, &b, 2, b"whoami").await.unwrap(), "1 raft");
    let whoami = b
        .call(
            1,
            a.local_addr(),
            Channel::Replica,
            "whoami".into(),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(whoami, "2 replica");
    // An error answer arrives as Remote and leaves the connection usable.
    match call(&a, &b, 2, b"fail:no such topic").await {
        Err(NetError::Remote(message)) => assert_eq!(message, "no such topic"),
        other => panic!("{other:?}"),
    }
    assert_eq!(call(&a, &b, 2, b"").await.unwrap(), "");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_answers_in_order() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    let mut session = a
        .open_session(2, b.local_addr(), Channel::Replica)
        .await
        .unwrap();
    for i in 0..1000 {
        let request = Bytes::from(i.to_string());
        assert_eq!(
            session.call(request.clone(), TIMEOUT).await.unwrap(),
            request
        );
    }
    // An error answer does not break the session.
    let err = session
        .call("fail:later".into(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Remote(_)), "{err}");
    assert_eq!(
        session.call("whoami".into(), TIMEOUT).await.unwrap(),
        "1 replica"
    );

    // A call whose answer does not come leaves the stream out of step: the session
    // refuses more.
    let err = session
        .call("slow".into(), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::Stalled { peer: 2, after, .. } if after == Duration::from_millis(100)),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "call to broker 2 at {} stalled: no byte of the answer for 100ms",
            b.local_addr()
        )
    );
    let err = session.call("x".into(), TIMEOUT).await.unwrap_err();
    assert!(matches!(err, NetError::SessionBroken { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_cross() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    let payload: Bytes = (0..8 << 20)
        .map(|i: u32| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let answer = a
        .call(
            2,
            b.local_addr(),
            Channel::Replica,
            payload.clone(),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(answer.len(), payload.len());
    assert!(answer == payload);
    let mut session = a
        .open_session(2, b.local_addr(), Channel::Replica)
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(session.call(payload.clone(), TIMEOUT).await.unwrap() == payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    let addr = b.local_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let a = a.clone();
        tasks.spawn(async move {
            let request = Bytes::from(format!("request {i}"));
            let answer = a
                .call(2, addr, Channel::Controller, request.clone(), TIMEOUT)
                .await;
            assert_eq!(answer.unwrap(), request);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    // Slow answers do not hold up others on the same connection.
    let slow = tokio::spawn({
        let a = a.clone();
        async move { a.call(2, addr, Channel::Raft, "slow".into(), TIMEOUT).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    call(&a, &b, 2, b"quick").await.unwrap();
    // Well under the 3 s the slow one takes, with room for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap().unwrap(), "slow");
}

/// Asserts a rogue's call fails naming `reason`, and the server still serves `good`.
async fn assert_refused(rogue: &Endpoint, server: &Endpoint, good: &Endpoint, reason: &str) {
    let err = call(rogue, server, 2, b"hello").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(reason), "expected `{reason}` in: {text}");
    assert!(
        matches!(
            err,
            NetError::Connect { .. } | NetError::ConnectionLost { .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        call(good, server, 2, b"still here").await.unwrap(),
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_broker_is_refused() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    // Signed by our CA, but for cluster `evil`.
    let leaf = certs::issue_broker(&f.ca, "evil", 1, &hosts()).unwrap();
    let rogue = f.rogue(&leaf);
    assert_refused(
        &rogue,
        &b,
        &a,
        "the client certificate is broker 1 of cluster `evil`, but this is cluster `test`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cas_certificate_is_refused() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    // Our cluster id and a broker id that exists, but another CA.
    let other_ca = certs::generate_ca(CLUSTER).unwrap();
    let leaf = certs::issue_broker(&other_ca, CLUSTER, 1, &hosts()).unwrap();
    let rogue = f.rogue(&leaf);
    assert_refused(&rogue, &b, &a, "not signed by this cluster's CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_identity_is_refused() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    let leaf = certs::issue_leaf_with_sans(
        &f.ca,
        vec![SanType::DnsName("localhost".try_into().unwrap())],
    );
    let rogue = f.rogue(&leaf);
    assert_refused(&rogue, &b, &a, "carries no quiver://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialled_broker_must_answer() {
    let f = fixture();
    let (a, b, c) = (f.endpoint(1), f.endpoint(2), f.endpoint(3));
    // Broker 3 listens where we expect broker 2.
    let err = a
        .call(2, c.local_addr(), Channel::Raft, "hello".into(), TIMEOUT)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetError::Connect { peer: 2, .. }), "{err:?}");
    assert!(
        text.contains("dialled broker 2, but the server certificate is broker 3 of cluster `test`"),
        "{text}"
    );
    // Nothing is cached for the failed attempt; the right address works.
    assert_eq!(call(&a, &b, 2, b"ok").await.unwrap(), "ok");
    assert_eq!(call(&a, &c, 3, b"ok").await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_bounded() {
    let f = fixture();
    let small = f.endpoint_with(f.tls(2), 1024);
    let a = f.endpoint(1);
    // Refused before sending: the caller's own limit.
    let tiny = f.endpoint_with(f.tls(3), 1024);
    let err = tiny
        .call(
            2,
            small.local_addr(),
            Channel::Raft,
            vec![0u8; 2000].into(),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::FrameTooLarge {
                size: 2003,
                max: 1024
            }
        ),
        "{err:?}"
    );
    // Refused by the receiver: its limit, named in the answer.
    let err = a
        .call(
            2,
            small.local_addr(),
            Channel::Raft,
            vec![0u8; 1 << 20].into(),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetError::Remote(_)), "{err:?}");
    assert!(text.contains("exceeds max_frame (1024 bytes)"), "{text}");
    // The same in a session.
    let mut session = a
        .open_session(2, small.local_addr(), Channel::Raft)
        .await
        .unwrap();
    let err = session
        .call(vec![0u8; 4096].into(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("exceeds max_frame (1024 bytes)"),
        "{err}"
    );
    // An answer beyond the server's limit becomes an error answer.
    let err = call(&a, &small, 2, b"big").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the response of 65536 bytes exceeds max_frame"),
        "{err}"
    );
    // An answer beyond the caller's limit is refused by the caller.
    let err = tiny
        .call(1, a.local_addr(), Channel::Raft, "big".into(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::FrameTooLarge { max: 1024, .. }),
        "{err:?}"
    );
    // Still serving.
    assert_eq!(call(&a, &small, 2, b"fine").await.unwrap(), "fine");
}

/// Writes raw bytes on a fresh stream of a real connection and returns what comes
/// back (a frame, or the stream's end).
async fn raw_exchange(
    client: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    server: &Endpoint,
    bytes: &[u8],
) -> Result<Option<frame::Frame>, frame::FrameError> {
    let conn = client
        .connect_with(config.clone(), server.local_addr(), &tls::server_name(2))
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    frame::read(&mut recv, MAX_FRAME).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_end_only_their_stream() {
    let f = fixture();
    let b = f.endpoint(2);
    let tls = f.tls(1);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config()).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let client = quinn::Endpoint::client(local()).unwrap();

    let request = |version: u8, channel: u8, kind: u8| {
        let mut bytes = frame::prefix(channel, Kind::Request, 2).to_vec();
        bytes[4] = version;
        bytes[6] = kind;
        bytes.extend_from_slice(b"hi");
        bytes
    };
    // Unknown version or channel: an error frame naming it.
    let answer = raw_exchange(&client, &config, &b, &request(9, 1, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.kind, Kind::Error as u8);
    assert!(
        String::from_utf8_lossy(&answer.payload).contains("unsupported cluster protocol version 9")
    );
    let answer = raw_exchange(&client, &config, &b, &request(1, 7, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.kind, Kind::Error as u8);
    assert!(String::from_utf8_lossy(&answer.payload).contains("unknown cluster channel 7"));
    // A response where a request belongs, a short length, a truncated frame: the stream
    // is reset.
    for bad in [
        request(1, 1, 1),
        vec![0, 0, 0, 1, 1],
        vec![0, 0, 0, 9, 1, 1, 0],
    ] {
        let result = raw_exchange(&client, &config, &b, &bad).await;
        assert!(
            matches!(
                result,
                Err(frame::FrameError::Read(quinn::ReadError::Reset(_)))
            ),
            "{bad:?}: {result:?}"
        );
    }
    // The endpoint and its other streams are unaffected.
    let good = raw_exchange(&client, &config, &b, &request(1, 1, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((good.kind, &good.payload[..]), (Kind::Ok as u8, &b"hi"[..]));
    let a = f.endpoint(1);
    assert_eq!(call(&a, &b, 2, b"ok").await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_times_out() {
    let f = fixture();
    let a = f.endpoint(1);
    // A socket that receives and never answers.
    let silent = std::net::UdpSocket::bind(local()).unwrap();
    let started = Instant::now();
    let err = a
        .call(
            2,
            silent.local_addr().unwrap(),
            Channel::Raft,
            "hello".into(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Timeout { peer: 2, .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = a
        .open_session(2, silent.local_addr().unwrap(), Channel::Raft)
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Connect { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected() {
    let f = fixture();
    let a = f.endpoint(1);
    let b = f.endpoint(2);
    let addr = b.local_addr();
    assert_eq!(call(&a, &b, 2, b"before").await.unwrap(), "before");
    b.close().await;
    drop(b);
    let b = rebind(&f, addr).await;
    assert_eq!(call(&a, &b, 2, b"after").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_is_noticed_at_once() {
    let f = fixture();
    let a = f.endpoint(1);
    // Broker 2 runs on its own runtime, which is then torn down: its connections vanish
    // without a close frame, as in a crash.
    let tls = f.tls(2);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
    let crashed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let b = runtime.block_on(async {
            Endpoint::bind(local(), tls, Arc::new(Echo), MAX_FRAME, Default::default()).unwrap()
        });
        addr_tx.send(b.local_addr()).unwrap();
        crash_rx.recv().unwrap();
        runtime.shutdown_background();
        drop(b);
    });
    let addr = addr_rx.recv().unwrap();
    let answer = a
        .call(2, addr, Channel::Raft, "before".into(), TIMEOUT)
        .await;
    assert_eq!(answer.unwrap(), "before");
    crash_tx.send(()).unwrap();
    crashed.join().unwrap();

    let b = rebind(&f, addr).await;
    // The restarted broker answers our stale connection with a stateless reset (its
    // reset key comes from its private key), so the call reconnects at once instead of
    // waiting out the idle timeout.
    let started = Instant::now();
    let answer = match call(&a, &b, 2, b"after").await {
        // Dropping the dead runtime's endpoint (to free its port) may still get a close
        // frame out, racing this call: that connection is then closed, not stale, and
        // the next call reconnects at once.
        Err(NetError::ConnectionLost { reason, .. }) if reason.contains("endpoint dropped") => {
            call(&a, &b, 2, b"after").await
        }
        other => other,
    };
    assert_eq!(answer.unwrap(), "after");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Binds broker 2 again at `addr` once the old socket is gone.
async fn rebind(f: &Fixture, addr: SocketAddr) -> Endpoint {
    for _ in 0..50 {
        match Endpoint::bind(
            addr,
            f.tls(2),
            Arc::new(Echo),
            MAX_FRAME,
            Default::default(),
        ) {
            Ok(endpoint) => return endpoint,
            Err(NetError::Bind { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{addr} stayed in use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_endpoint_refuses_calls() {
    let f = fixture();
    let (a, b) = (f.endpoint(1), f.endpoint(2));
    a.close().await;
    let err = call(&a, &b, 2, b"x").await.unwrap_err();
    assert!(matches!(err, NetError::Closed), "{err:?}");
}

#[test]
fn bind_needs_a_runtime() {
    let f = fixture();
    let err = Endpoint::bind(
        local(),
        f.tls(1),
        Arc::new(Echo),
        MAX_FRAME,
        Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, NetError::NoRuntime), "{err:?}");
}

/// Another cluster's CA and its broker 1, and a mirror client made of them that
/// trusts cluster `test` (the fixture's CA).
struct OtherCluster {
    dir: tempfile::TempDir,
    ca: CaMaterial,
    broker: certs::BrokerMaterial,
}

fn other_cluster() -> OtherCluster {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca("other").unwrap();
    let broker = certs::issue_broker(&ca, "other", 1, &hosts()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    OtherCluster { dir, ca, broker }
}

impl OtherCluster {
    fn client(&self, source_ca_pem: &str) -> super::MirrorClient {
        super::MirrorClient::new(
            self.broker.cert_pem.as_bytes(),
            self.broker.key_pem.as_bytes(),
            source_ca_pem.as_bytes(),
            local(),
            MAX_FRAME,
        )
        .unwrap()
    }
}

impl Fixture {
    /// Broker `id` of cluster `test`, accepting mirror clients signed by `other`'s CA.
    fn accepting_mirrors(&self, id: BrokerId, other: &OtherCluster) -> Endpoint {
        let tls = ClusterTls::load_accepting_mirrors(
            self.dir.path(),
            CLUSTER,
            id,
            Some(&other.dir.path().join("ca.pem")),
        )
        .unwrap();
        self.endpoint_with(tls, MAX_FRAME)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_client_of_a_trusted_cluster_uses_the_mirror_channel_only() {
    let (f, other) = (fixture(), other_cluster());
    let source = f.accepting_mirrors(1, &other);
    let client = other.client(&f.ca.cert_pem);
    let addr = source.local_addr();
    let answer = client
        .call(addr, Bytes::from_static(b"whoami"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer, "1 mirror");
    let refused = client
        .call_on(
            Channel::Controller,
            addr,
            Bytes::from_static(b"whoami"),
            TIMEOUT,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("broker 1 of cluster `other` is a mirror client")
            && refused.contains("not controller"),
        "{refused}"
    );
    // Members of the source's own cluster still get in, on every channel.
    let member = f.endpoint(2);
    assert_eq!(
        call(&member, &source, 1, b"whoami").await.unwrap(),
        "2 raft"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_accepts_no_mirrors_refuses_another_clusters_broker_saying_how() {
    let (f, other) = (fixture(), other_cluster());
    let source = f.endpoint(1);
    let client = other.client(&f.ca.cert_pem);
    let err = client
        .call(source.local_addr(), Bytes::from_static(b"x"), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not signed by this cluster's CA")
            && err.contains("cluster.mirror_clients_ca"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_ca_cannot_vouch_for_a_member_of_this_cluster() {
    let (f, other) = (fixture(), other_cluster());
    let source = f.accepting_mirrors(1, &other);
    // The other cluster's CA signs a certificate claiming to be broker 2 of `test`.
    let forged = certs::issue_broker(&other.ca, CLUSTER, 2, &hosts()).unwrap();
    let client = super::MirrorClient::new(
        forged.cert_pem.as_bytes(),
        forged.key_pem.as_bytes(),
        f.ca.cert_pem.as_bytes(),
        local(),
        MAX_FRAME,
    )
    .unwrap();
    let err = client
        .call(source.local_addr(), Bytes::from_static(b"x"), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("claims this cluster"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_client_refuses_a_source_its_ca_did_not_sign() {
    let (f, other) = (fixture(), other_cluster());
    let source = f.accepting_mirrors(1, &other);
    // Given its own CA as the source's by mistake.
    let client = other.client(&other.ca.cert_pem);
    let err = client
        .call(source.local_addr(), Bytes::from_static(b"x"), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not signed by the source CA"), "{err}");
}
