//! An in-memory transport for replication: links are direct calls into the leader's
//! [`ReplicaManager::handle`], so tests run several brokers in one process, with no
//! sockets, and can cut and heal the link between any two of them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{BoxFuture, LeaderLink, LinkFactory, ReplicaManager};

/// Brokers reachable from each other in memory.
#[derive(Debug, Default)]
pub struct MemoryNetwork {
    state: Mutex<NetState>,
}

#[derive(Debug, Default)]
struct NetState {
    brokers: HashMap<i32, Weak<ReplicaManager>>,
    /// Cut links as (follower, leader) pairs.
    cut: BTreeSet<(i32, i32)>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Arc<MemoryNetwork> {
        Arc::new(MemoryNetwork::default())
    }

    /// The link factory broker `from` uses.
    pub fn links_for(self: &Arc<Self>, from: i32) -> Arc<dyn LinkFactory> {
        Arc::new(MemoryLinks {
            network: Arc::clone(self),
            from,
        })
    }

    /// Makes `manager` reachable under its broker id.
    pub fn register(&self, manager: &Arc<ReplicaManager>) {
        self.state
            .lock()
            .brokers
            .insert(manager.own_id(), Arc::downgrade(manager));
    }

    /// Cuts the links between `a` and `b`, both ways: calls fail until [`heal`].
    ///
    /// [`heal`]: MemoryNetwork::heal
    pub fn cut(&self, a: i32, b: i32) {
        let mut state = self.state.lock();
        state.cut.insert((a, b));
        state.cut.insert((b, a));
    }

    /// Restores the links between `a` and `b`.
    pub fn heal(&self, a: i32, b: i32) {
        let mut state = self.state.lock();
        state.cut.remove(&(a, b));
        state.cut.remove(&(b, a));
    }

    fn target(&self, from: i32, to: i32) -> Result<Arc<ReplicaManager>, String> {
        let state = self.state.lock();
        if state.cut.contains(&(from, to)) {
            return Err(format!("link {from} -> {to} is cut"));
        }
        state
            .brokers
            .get(&to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| format!("broker {to} is not reachable"))
    }
}

#[derive(Debug)]
struct MemoryLinks {
    network: Arc<MemoryNetwork>,
    from: i32,
}

impl LinkFactory for MemoryLinks {
    fn open(
        &self,
        leader: i32,
        _addr: SocketAddr,
    ) -> BoxFuture<'static, Result<Box<dyn LeaderLink>, String>> {
        let opened = self
            .network
            .target(self.from, leader)
            .map(|_| -> Box<dyn LeaderLink> {
                Box::new(MemoryLink {
                    network: Arc::clone(&self.network),
                    from: self.from,
                    to: leader,
                })
            });
        Box::pin(async move { opened })
    }
}

struct MemoryLink {
    network: Arc<MemoryNetwork>,
    from: i32,
    to: i32,
}

impl LeaderLink for MemoryLink {
    fn call(&mut self, request: Bytes, quiet: Duration) -> BoxFuture<'_, Result<Bytes, String>> {
        Box::pin(async move {
            let leader = self.network.target(self.from, self.to)?;
            // In memory an answer arrives whole or not at all.
            let response = tokio::time::timeout(quiet, leader.handle(self.from, request))
                .await
                .map_err(|_| format!("no answer within {quiet:?}"))?;
            // A cut during the call loses the response, as a real network would.
            self.network.target(self.from, self.to)?;
            response
        })
    }
}
