//! The `synergy()` call of SocketSynergy for Rust programs: give it a socket (anything with a raw
//! fd), a hop limit and optionally the peer; it checks with the kernel that the socket really holds
//! its address and port (`punch::check`), builds the matching probe (TCP SYN, UDP datagram, SCTP
//! INIT) and sends it — itself when it holds CAP_NET_RAW, else through the privileged daemon
//! (`synergy-craft daemon`), which checks the same again. Does I/O.
//!
//! Call sequence (as in the SocketSynergy draft): TCP and SCTP: socket, bind, listen, synergy,
//! accept. UDP: socket, bind, synergy, connect. For TCP through strict conntrack prefer
//! [`tcp_accept_from`], which makes the connection a clean simultaneous open.

use std::net::SocketAddrV6;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use thiserror::Error;

use crate::net::{NetError, privilege, random_nonzero_u32, random_u32, sockdiag, sockfacts};
use crate::param::HopLimit;
use crate::punch::Puncher;
use crate::punch::check;
use crate::punch::plan::{Flow, probe_for};

pub use crate::punch::check::{Refusal, SockKind, SocketInfo};
pub use crate::session::tcp_accept_from;

/// Why a punch for a socket failed.
#[derive(Debug, Error)]
pub enum SynergyError {
    /// The socket, its addresses or the request broke a rule of `punch::check` (checked here, on
    /// the library's own send path).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("reading the socket's options: {0}")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Net(#[from] NetError),
    /// The daemon refused; `errno` is one of include/synergy.h's, `reason` its words.
    #[error("the synergy-craft daemon at {path} refused: {reason}")]
    DaemonRefused {
        path: String,
        errno: i32,
        reason: String,
    },
    /// The daemon's socket file exists but this caller may not connect to it (its permissions).
    #[error("this caller may not use the synergy-craft daemon at {path}: {source}")]
    NotPermitted {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No daemon, a daemon that does not answer in time, or one that is not who it should be.
    #[error("no CAP_NET_RAW here and the synergy-craft daemon at {path} is unavailable: {why}")]
    Unavailable { path: String, why: String },
    #[error("the synergy-craft daemon at {path} answered {line:?}, which is not a valid reply")]
    BadReply { path: String, line: String },
}

impl SynergyError {
    /// The errno the C ABI reports for this error (include/synergy.h lists them).
    pub fn errno(&self) -> i32 {
        match self {
            SynergyError::Refused(r) => r.errno(),
            SynergyError::Socket(e) => e.raw_os_error().unwrap_or(libc::EBADF),
            SynergyError::Net(NetError::MissingCapability { .. }) => libc::EPERM,
            SynergyError::Net(NetError::Io { source, .. }) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            SynergyError::Net(_) => libc::EIO,
            SynergyError::DaemonRefused { errno, .. } => *errno,
            SynergyError::NotPermitted { .. } => libc::EACCES,
            SynergyError::Unavailable { .. } => libc::ECONNREFUSED,
            SynergyError::BadReply { .. } => libc::EPROTO,
        }
    }

    /// The reason in words (the daemon's own words for a refusal by the daemon).
    pub fn reason(&self) -> String {
        match self {
            SynergyError::DaemonRefused { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// Reads what the kernel says about `fd` and this host, and decides whether a caller with uid
/// `caller_uid` holds the flow toward `peer` (or the socket's connected peer): `punch::check`.
pub fn held_flow(
    fd: BorrowedFd<'_>,
    peer: Option<SocketAddrV6>,
    caller_uid: u32,
) -> Result<SocketInfo, SynergyError> {
    let facts = match sockfacts::socket_facts(fd) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(Refusal::NotSocket.into());
        }
        Err(e) => return Err(SynergyError::Socket(e)),
    };
    let kernel = |what: &'static str| {
        move |e: std::io::Error| Refusal::Kernel {
            what,
            detail: e.to_string(),
        }
    };
    let kind = check::transport_of(&facts)?;
    let netns = sockfacts::own_netns_cookie().map_err(kernel("for its network namespace"))?;
    let addrs = sockfacts::host_addrs().map_err(kernel("for this host's addresses"))?;
    // What is asked about the source and its port only makes sense in our own namespace.
    let (port_users, source_bindable) = match facts.local {
        Some(l) if l.port() != 0 && facts.netns == netns => {
            // The sockets of the same port space: MPTCP binds a TCP subflow, so TCP's table.
            let protocol = match kind {
                SockKind::Tcp => libc::IPPROTO_TCP,
                SockKind::Udp => libc::IPPROTO_UDP,
                SockKind::Sctp => libc::IPPROTO_SCTP,
            } as u8;
            (
                sockdiag::port_users(protocol, l.port())
                    .map_err(kernel("which sockets share the port (sock_diag)"))?,
                sockfacts::source_bindable(*l.ip(), l.scope_id())
                    .map_err(kernel("whether it binds the source"))?,
            )
        }
        _ => (Vec::new(), false),
    };
    let host = check::HostView {
        netns,
        addrs,
        port_users,
        source_bindable,
    };
    Ok(check::decide(&facts, peer, caller_uid, &host)?)
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

/// Punches for `sock`'s flow with `hop_limit`: directly with CAP_NET_RAW (after the checks of
/// [`held_flow`], for the process's real uid), else through the daemon (socket path from
/// `$SYNERGY_DAEMON_SOCKET`, ignored in setuid/setgid programs, else
/// [`crate::daemon::DEFAULT_SOCKET`]).
pub fn synergy(
    sock: &impl AsFd,
    hop_limit: HopLimit,
    peer: Option<SocketAddrV6>,
) -> Result<(), SynergyError> {
    let fd = sock.as_fd();
    if privilege::can_send_raw() {
        // SAFETY: getuid has no preconditions.
        let info = held_flow(fd, peer, unsafe { libc::getuid() })?;
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
