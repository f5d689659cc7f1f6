//! Asking a peer's host whether anything still listens on the peer's QUIC port.
//!
//! A broker killed outright (`kill -9`, a crash, the OOM killer) sends no goodbye: its
//! QUIC connections just go quiet, and the controller would wait a whole lease before
//! fencing it. But its host still answers for the port: a datagram to a UDP port that
//! no socket holds is answered with ICMP port-unreachable, which a connected UDP socket
//! reports as `ECONNREFUSED`. A broker process holds its endpoint's socket for as long
//! as it lives, so that answer means the process is gone — while a live broker, even
//! one that is paused, overloaded or behind a firewall that drops its packets, never
//! produces it. Silence, or any other error, proves nothing and is reported as such.
//!
//! The probe is one byte: far too short to be a QUIC packet, so a live endpoint drops
//! it without a reply or a connection.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// What asking the port told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAnswer {
    /// The host answered that no socket holds the port: the process that held it is
    /// gone.
    Closed,
    /// No answer within the wait, or one that proves nothing: the port may be held by
    /// a live process, or the packets may be lost.
    Unknown,
}

/// Sends a one-byte datagram to `addr` and waits up to `wait` for the host's answer.
pub async fn udp_port(addr: SocketAddr, wait: Duration) -> PortAnswer {
    let local: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let Ok(socket) = UdpSocket::bind((local, 0)).await else {
        return PortAnswer::Unknown;
    };
    if socket.connect(addr).await.is_err() {
        return PortAnswer::Unknown;
    }
    match socket.send(&[0]).await {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return PortAnswer::Closed,
        Err(_) => return PortAnswer::Unknown,
        Ok(_) => {}
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => PortAnswer::Closed,
        _ => PortAnswer::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_port_is_not_closed_and_a_released_one_is() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let wait = Duration::from_millis(200);
        assert_eq!(udp_port(addr, wait).await, PortAnswer::Unknown);
        drop(held);
        assert_eq!(udp_port(addr, wait).await, PortAnswer::Closed);
    }
}
