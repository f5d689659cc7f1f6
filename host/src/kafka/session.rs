//! One connection's identity: the listener it came through, the principal it proved,
//! and where its SASL exchange stands.
//!
//! On a SASL listener a connection may send only ApiVersions, SaslHandshake and
//! SaslAuthenticate until it is authenticated; anything else closes it, as Kafka does,
//! so no request is ever served for a client that has not proved who it is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::config::SecurityProtocol;
use crate::tenancy::policy::ConnectionKey;
use crate::tenancy::quota::QuotaType;
use crate::tenancy::sasl::{Authenticator, SaslMechanism};
use crate::tenancy::{tenant, Principal, TenantConnection};

/// What a connection's listener is.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Its name (Metadata answers with the addresses of this listener).
    pub name: String,
    /// How it secures connections.
    pub protocol: SecurityProtocol,
    /// The SASL mechanisms it offers (empty unless SASL).
    pub mechanisms: Vec<SaslMechanism>,
}

/// One connection's security state.
#[derive(Debug)]
pub struct Session {
    /// The listener.
    pub listener: Arc<ListenerInfo>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who the client is (`User:ANONYMOUS` until proved otherwise).
    pub principal: Principal,
    /// The SASL exchange, while one is required and unfinished.
    pub sasl: Option<Authenticator>,
    /// Set when the response being sent is the last (a refused login).
    pub close_after_response: Option<String>,
    /// Counts this connection against its tenant's `max_connections` while it lives.
    pub tenant_connection: Option<TenantConnection>,
    /// The key a quota policy metered this connection under.
    pub policy_key: ConnectionKey,
    /// The throttle the request being handled has earned, ms: sent as its
    /// `throttle_time_ms`, then the connection is muted that long.
    throttle_ms: AtomicU64,
    /// Which quota type earned that throttle (its index in [`QuotaType::ALL`]), for
    /// the throttle metrics.
    throttled_by: AtomicU8,
    /// The broker of this cluster the request comes from, over the cluster transport
    /// (its certificate says so): only such a session may write with the producer ids
    /// the brokers keep for their own writers.
    pub own_broker: Option<i32>,
}

impl Session {
    /// A new connection on `listener` from `peer`.
    pub fn new(listener: Arc<ListenerInfo>, peer: SocketAddr) -> Session {
        let sasl = listener
            .protocol
            .sasl()
            .then(|| Authenticator::new(listener.mechanisms.clone()));
        Session {
            listener,
            peer,
            principal: Principal::anonymous(),
            sasl,
            close_after_response: None,
            tenant_connection: None,
            policy_key: ConnectionKey::default(),
            throttle_ms: AtomicU64::new(0),
            throttled_by: AtomicU8::new(0),
            own_broker: None,
        }
    }

    /// Raises the current request's throttle to at least `throttle`, earned by a quota
    /// of type `kind`; returns it, ms.
    pub fn throttle(&self, throttle: Duration, kind: QuotaType) -> i32 {
        let ms = throttle.as_millis().min(i32::MAX as u128) as u64;
        let before = self.throttle_ms.fetch_max(ms, Ordering::Relaxed);
        if ms > before {
            let index = QuotaType::ALL.iter().position(|t| *t == kind).unwrap_or(0);
            self.throttled_by.store(index as u8, Ordering::Relaxed);
        }
        before.max(ms) as i32
    }

    /// The current request's throttle, ms (what `throttle_time_ms` says).
    pub fn throttle_time_ms(&self) -> i32 {
        self.throttle_ms.load(Ordering::Relaxed) as i32
    }

    /// Takes the throttle earned by the request just answered, and the quota type
    /// that earned it.
    pub fn take_throttle(&self) -> (Duration, QuotaType) {
        let ms = self.throttle_ms.swap(0, Ordering::Relaxed);
        let kind = QuotaType::ALL
            [usize::from(self.throttled_by.load(Ordering::Relaxed)).min(QuotaType::ALL.len() - 1)];
        (Duration::from_millis(ms), kind)
    }

    /// Whether requests other than ApiVersions and the SASL ones must wait.
    pub fn needs_authentication(&self) -> bool {
        self.sasl.is_some()
    }

    /// The client proved it is `principal`: the connection acts for it from now on,
    /// unless `principal`'s tenant has no connection left on this broker.
    pub fn authenticated(&mut self, principal: Principal, broker: &Broker) -> Result<(), String> {
        let metadata = broker.metadata();
        if let Some(tenant) = tenant::of_principal(&metadata.tenants, &principal) {
            self.tenant_connection = Some(broker.security().admit_connection(tenant)?);
        }
        self.principal = principal;
        self.sasl = None;
        // Quota policies key by principal: the handshake's requests were metered as
        // anonymous, what follows is the principal's.
        *self.policy_key.get_mut() = None;
        Ok(())
    }
}

impl Session {
    /// An anonymous connection on a PLAINTEXT listener (handler tests; the requests of
    /// the broker's own writers, which used to come as such).
    pub(crate) fn plaintext(peer: SocketAddr) -> Session {
        Session::new(
            Arc::new(ListenerInfo {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                mechanisms: Vec::new(),
            }),
            peer,
        )
    }
}
