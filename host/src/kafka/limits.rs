//! How many client connections the Kafka listeners hold: at most
//! `kafka.max_connections` per listener and `kafka.max_connections_per_ip` per client
//! address over all listeners.
//!
//! A connection is admitted in the accept loop, before its task is spawned, so the
//! counts are exact however fast connections arrive; the [`Admitted`] permit travels
//! with the connection and gives its places back when the connection ends, whichever
//! way it ends. A connection that is refused is closed at once, as Kafka closes it:
//! holding it open until a place frees up would let the refused connections pile up
//! file descriptors instead of the admitted ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The listener already holds `kafka.max_connections` connections.
    #[error("the listener already holds {0} connections (kafka.max_connections)")]
    Listener(u32),
    /// The address already holds `kafka.max_connections_per_ip` connections.
    #[error("{ip} already holds {limit} connections (kafka.max_connections_per_ip)")]
    Address {
        /// The client address.
        ip: IpAddr,
        /// The limit.
        limit: u32,
    },
}

/// Connections per client address, shared by every listener of the broker.
#[derive(Debug)]
pub struct PerAddress {
    limit: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerAddress {
    /// At most `limit` connections per address; 0 is no limit.
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::default(),
        })
    }

    fn take(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut open = self.open.lock();
        let count = open.entry(ip).or_default();
        if *count >= self.limit {
            return Err(Refused::Address {
                ip,
                limit: self.limit,
            });
        }
        *count += 1;
        Ok(())
    }

    fn give_back(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let mut open = self.open.lock();
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            // Addresses come and go; an address with no connection holds no entry.
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// One listener's connection count, and the broker-wide count per address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: u32,
    open: AtomicU32,
    per_address: Arc<PerAddress>,
}

impl ConnectionLimits {
    /// A listener holding at most `max` connections, sharing `per_address` with the
    /// broker's other listeners.
    pub fn new(max: u32, per_address: Arc<PerAddress>) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicU32::new(0),
            per_address,
        })
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        // Only the accept loop admits, so the check and the increment cannot race
        // with another admission; releases only make room.
        if self.open.load(Ordering::Acquire) >= self.max {
            return Err(Refused::Listener(self.max));
        }
        self.per_address.take(ip)?;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections this listener holds now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

/// An admitted connection's places; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        self.limits.per_address.give_back(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_listener_admits_up_to_its_limit_and_frees_places_on_drop() {
        let limits = ConnectionLimits::new(2, PerAddress::new(0));
        let a = limits.admit(ip(1)).unwrap();
        let _b = limits.admit(ip(1)).unwrap();
        assert_eq!(limits.admit(ip(2)).unwrap_err(), Refused::Listener(2));
        assert_eq!(limits.open(), 2);
        drop(a);
        assert_eq!(limits.open(), 1);
        limits.admit(ip(2)).unwrap();
    }

    #[test]
    fn the_per_address_limit_spans_listeners() {
        let per_address = PerAddress::new(2);
        let plain = ConnectionLimits::new(10, per_address.clone());
        let secure = ConnectionLimits::new(10, per_address.clone());
        let a = plain.admit(ip(1)).unwrap();
        let _b = secure.admit(ip(1)).unwrap();
        assert_eq!(
            plain.admit(ip(1)).unwrap_err(),
            Refused::Address {
                ip: ip(1),
                limit: 2
            }
        );
        // A refusal takes no place anywhere.
        assert_eq!(plain.open(), 1);
        let _other = plain.admit(ip(2)).unwrap();
        drop(a);
        let _again = secure.admit(ip(1)).unwrap();
        assert_eq!(
            Refused::Address {
                ip: ip(1),
                limit: 2
            }
            .to_string(),
            "127.0.0.1 already holds 2 connections (kafka.max_connections_per_ip)"
        );
    }

    #[test]
    fn addresses_without_connections_hold_no_entry() {
        let per_address = PerAddress::new(1);
        let limits = ConnectionLimits::new(10, per_address.clone());
        for last in 0..100 {
            drop(limits.admit(ip(last)).unwrap());
        }
        assert!(per_address.open.lock().is_empty());
    }
}
