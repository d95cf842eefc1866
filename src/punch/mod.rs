//! Punching a hole for one flow: the probe is built once and sent through the raw IPv6 socket, and
//! sent again on demand to keep the local firewalls' entries alive. Does I/O (raw socket).

pub mod check;
pub mod plan;

use std::net::{Ipv6Addr, SocketAddrV6};

use crate::net::NetError;
use crate::net::raw::RawSender;
use crate::wire::probe::ProbeRepr;

/// A built probe and the socket that sends it.
pub struct Puncher {
    sender: RawSender,
    bytes: Vec<u8>,
    dst: Ipv6Addr,
    scope: u32,
    repr: ProbeRepr,
}

impl Puncher {
    /// Builds the probe and opens the raw socket (needs CAP_NET_RAW). `scope` is the interface
    /// index for link-local addresses, else 0.
    pub fn new(repr: ProbeRepr, scope: u32) -> Result<Self, NetError> {
        let sender = RawSender::open(Some((repr.ip.src, scope)))?;
        Self::with_sender(repr, scope, sender)
    }

    /// Builds the probe to go out through an already open raw socket (no privilege needed).
    pub fn with_sender(repr: ProbeRepr, scope: u32, sender: RawSender) -> Result<Self, NetError> {
        let (bytes, _) = repr
            .to_bytes()
            .map_err(|e| NetError::Build(e.to_string()))?;
        Ok(Puncher {
            sender,
            bytes,
            dst: repr.ip.dst,
            scope,
            repr,
        })
    }

    /// Sends the probe (again).
    pub fn punch(&self) -> Result<(), NetError> {
        self.sender
            .send(&self.bytes, self.dst, self.scope)
            .map(|_| ())
    }

    pub fn repr(&self) -> &ProbeRepr {
        &self.repr
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The TCP flow of a SYN as this host's kernel would send it toward `peer`, with sequence number
/// `isn`: MSS from the route's MTU, the kernel's window-scale shift (see `net::tcp`).
pub fn kernel_like_tcp(isn: u32, peer: SocketAddrV6) -> plan::Flow {
    let mtu = crate::net::route::lookup(*peer.ip(), peer.port(), peer.scope_id())
        .ok()
        .and_then(|r| r.mtu)
        .unwrap_or(1280);
    let mss = u16::try_from(mtu.saturating_sub(60)).unwrap_or(1220);
    plan::Flow::Tcp {
        isn,
        wscale: crate::net::tcp::kernel_window_scale(),
        mss,
    }
}
