//! A delaying link for the mirror benchmarks: two regions on one machine, one reaching
//! the other only through this proxy, with a fixed one-way delay (and, for UDP, random
//! loss) added in user space, because the kernel here has no `tc netem`.
//!
//! It does what `tests/e2e/delayproxy.py` does for the end-to-end tests, at the speed
//! a benchmark needs and for UDP too, so a QUIC mirror crosses the same long link as a
//! Kafka one. Each direction of a link is a pipeline, not stop-and-wait: whatever is
//! read at time t is written at t + delay while later reads queue behind it, so a round
//! trip costs twice the delay however much is in flight. The delay is constant, so
//! arrival order is due order: each direction is one FIFO with one timer armed for its
//! head, and the work per chunk or datagram is a queue push, a pop and a write.
//!
//! - [`tcp`]: per accepted connection, one upstream connection; half-close forwarded
//!   after the delay like data; bytes queued per direction bounded.
//! - [`udp`]: per client address a session with its own upstream socket; datagrams
//!   forwarded each way after the delay, in order, optionally dropped at random with a
//!   seeded generator; idle sessions expire.
//!
//! TCP cannot be made lossy here: the proxy ends each TCP connection, so a dropped
//! segment would only be sent again on the hop it was dropped on. Packet loss for TCP
//! belongs to the network (nftables in a namespace) instead.

pub mod tcp;
pub mod udp;

use std::time::Duration;

/// The link's settings, shared by both protocols.
#[derive(Clone, Debug)]
pub struct Link {
    /// Added to every chunk or datagram, each way.
    pub delay: Duration,
    /// Share of datagrams dropped in each direction, 0.0..=100.0 (UDP only).
    pub loss_pct: f64,
    /// Seeds the loss decisions, so a run can be repeated.
    pub seed: u64,
    /// A UDP session with no datagram either way for this long is closed.
    pub idle: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(40),
            loss_pct: 0.0,
            seed: 0,
            idle: Duration::from_secs(60),
        }
    }
}

/// A small seeded generator (SplitMix64) for loss decisions: reproducible with a seed,
/// and no dependency for a coin flip per datagram.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `pct` / 100.
    pub fn chance(&mut self, pct: f64) -> bool {
        if pct <= 0.0 {
            return false;
        }
        // 53 random bits as a float in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < pct
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_generator_repeats_with_a_seed_and_hits_the_share() {
        let draws = |seed| {
            let mut r = Rng::new(seed);
            (0..100_000).filter(|_| r.chance(1.0)).count()
        };
        assert_eq!(draws(7), draws(7));
        let hits = draws(7);
        assert!((800..=1200).contains(&hits), "1 % of 100,000 draws: {hits}");
        let mut r = Rng::new(1);
        assert!(!(0..10_000).any(|_| r.chance(0.0)));
        assert!((0..10_000).all(|_| r.chance(100.0)));
    }
}
