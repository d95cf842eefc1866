//! The `synergy()` call of SocketSynergy for Rust programs: give it a socket (anything with a raw
//! fd), a hop limit and optionally the peer; it reads the local address and the socket's type from
//! the socket (the peer from getpeername() when not given), builds the matching probe (TCP SYN,
//! UDP datagram, SCTP INIT) and sends it — itself when it holds CAP_NET_RAW, else through the
//! privileged daemon (`synergy-craft daemon`). Does I/O.
//!
//! Call sequence (as in the SocketSynergy draft): TCP and SCTP: socket, bind, listen, synergy,
//! accept. UDP: socket, bind, synergy, connect. For TCP through strict conntrack prefer
//! [`tcp_accept_from`], which makes the connection a clean simultaneous open.

use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::SockRef;
use thiserror::Error;

use crate::net::{NetError, privilege, random_nonzero_u32, random_u32};
use crate::param::HopLimit;
use crate::punch::Puncher;
use crate::punch::plan::{Flow, probe_for};

pub use crate::session::tcp_accept_from;

/// Why a punch for a socket failed.
#[derive(Debug, Error)]
pub enum SynergyError {
    #[error("the socket is not an IPv6 socket (synergy-craft punches for IPv6 only)")]
    NotIpv6,
    #[error("socket type {0} is not supported (TCP, UDP or SCTP over IPv6 only)")]
    UnsupportedType(i32),
    #[error("getsockname failed: {0}")]
    SockName(#[source] std::io::Error),
    #[error("getpeername failed (give the peer, or connect the socket first): {0}")]
    PeerName(#[source] std::io::Error),
    #[error("the socket is not bound to a local address and port (bind it first)")]
    NotBound,
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("the synergy-craft daemon at {path} refused: {reason}")]
    Refused {
        path: String,
        errno: i32,
        reason: String,
    },
    #[error("no CAP_NET_RAW here and no synergy-craft daemon at {path}: {source}")]
    NoDaemon {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SynergyError {
    /// The errno the C ABI reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            SynergyError::NotIpv6 => libc::EAFNOSUPPORT,
            SynergyError::UnsupportedType(_) => libc::EBADF,
            SynergyError::SockName(e) | SynergyError::PeerName(e) => {
                e.raw_os_error().unwrap_or(libc::EINVAL)
            }
            SynergyError::NotBound => libc::EINVAL,
            SynergyError::Net(NetError::MissingCapability { .. }) => libc::EPERM,
            SynergyError::Net(NetError::Io { source, .. }) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            SynergyError::Net(_) => libc::EIO,
            SynergyError::Refused { errno, .. } => *errno,
            SynergyError::NoDaemon { .. } => libc::EPERM,
        }
    }
}

/// The transport of an IPv6 socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockKind {
    Tcp,
    Udp,
    Sctp,
}

/// What a socket says about the flow to punch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub kind: SockKind,
    pub local: SocketAddrV6,
    pub peer: SocketAddrV6,
}

/// Reads the kind, local address and (unless given) peer of a socket.
pub fn socket_info(
    fd: BorrowedFd<'_>,
    peer: Option<SocketAddrV6>,
) -> Result<SocketInfo, SynergyError> {
    let sock = SockRef::from(&fd);
    let local = match sock
        .local_addr()
        .map_err(SynergyError::SockName)?
        .as_socket()
    {
        Some(SocketAddr::V6(a)) => a,
        _ => return Err(SynergyError::NotIpv6),
    };
    let ty = sock.r#type().map_err(SynergyError::SockName)?;
    let protocol = sock.protocol().ok().flatten().map(i32::from);
    let kind = if ty == socket2::Type::STREAM && protocol == Some(libc::IPPROTO_SCTP) {
        SockKind::Sctp
    } else if ty == socket2::Type::STREAM {
        SockKind::Tcp
    } else if ty == socket2::Type::DGRAM {
        SockKind::Udp
    } else {
        return Err(SynergyError::UnsupportedType(i32::from(ty)));
    };
    if local.port() == 0 {
        return Err(SynergyError::NotBound);
    }
    let peer = match peer {
        Some(p) => p,
        None => match sock
            .peer_addr()
            .map_err(SynergyError::PeerName)?
            .as_socket()
        {
            Some(SocketAddr::V6(a)) => a,
            _ => return Err(SynergyError::NotIpv6),
        },
    };
    Ok(SocketInfo { kind, local, peer })
}

/// The probe a socket's flow needs: a SYN like the kernel's with a fresh sequence number (the
/// listener will answer with its own ISN: the classic SocketSynergy behaviour), a datagram, or an
/// INIT.
pub fn flow_for(info: &SocketInfo) -> Flow {
    match info.kind {
        SockKind::Tcp => crate::punch::kernel_like_tcp(random_nonzero_u32(), info.peer),
        SockKind::Udp => Flow::Udp,
        SockKind::Sctp => Flow::Sctp {
            init_tag: random_nonzero_u32(),
            tsn: random_u32(),
        },
    }
}

/// Punches for `sock`'s flow with `hop_limit`: directly with CAP_NET_RAW, else through the daemon
/// (socket path from `$SYNERGY_DAEMON_SOCKET`, else [`crate::daemon::DEFAULT_SOCKET`]).
pub fn synergy(
    sock: &impl AsFd,
    hop_limit: HopLimit,
    peer: Option<SocketAddrV6>,
) -> Result<(), SynergyError> {
    let fd = sock.as_fd();
    let info = socket_info(fd, peer)?;
    if privilege::has(privilege::NET_RAW.0) {
        punch_for(&info, hop_limit)
    } else {
        crate::daemon::client::request(fd.as_raw_fd(), hop_limit, peer)
    }
}

/// Sends the probe for `info` now (needs CAP_NET_RAW).
pub fn punch_for(info: &SocketInfo, hop_limit: HopLimit) -> Result<(), SynergyError> {
    let repr = probe_for(flow_for(info), info.local, info.peer, hop_limit);
    Puncher::new(repr, info.local.scope_id())?.punch()?;
    Ok(())
}
