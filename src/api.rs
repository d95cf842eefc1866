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
use std::os::fd::{AsFd, AsRawFd};

use thiserror::Error;

use crate::net::{NetError, privilege};
use crate::param::HopLimit;
use crate::punch::Puncher;
use crate::punch::plan::probe_for;

pub use crate::daemon::client::DaemonError;
pub use crate::punch::check::{Refusal, SockKind, SocketInfo};
pub use crate::punch::{flow_for, held_flow};
pub use crate::session::tcp_accept_from;

/// Why a punch for a socket failed.
#[derive(Debug, Error)]
pub enum SynergyError {
    /// The socket, its addresses or the request broke a rule of `punch::check` (checked here, on
    /// the library's own send path).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Net(#[from] NetError),
    /// Asking the daemon did not give a punch: refused, not permitted, unavailable, garbled.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

impl SynergyError {
    /// The errno the C ABI reports for this error (include/synergy.h lists them).
    pub fn errno(&self) -> i32 {
        match self {
            SynergyError::Refused(r) => r.errno(),
            SynergyError::Net(NetError::MissingCapability { .. }) => libc::EPERM,
            SynergyError::Net(NetError::Io { source, .. }) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            SynergyError::Net(_) => libc::EIO,
            SynergyError::Daemon(e) => e.errno(),
        }
    }

    /// The reason in words (the daemon's own words for a refusal by the daemon).
    pub fn reason(&self) -> String {
        match self {
            SynergyError::Daemon(DaemonError::Refused { reason, .. }) => reason.clone(),
            other => other.to_string(),
        }
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
        Ok(crate::daemon::client::request(
            fd.as_raw_fd(),
            hop_limit,
            peer,
        )?)
    }
}

/// Sends the probe for `info` now (needs CAP_NET_RAW).
pub fn punch_for(info: &SocketInfo, hop_limit: HopLimit) -> Result<(), SynergyError> {
    let repr = probe_for(flow_for(info), info.local, info.peer, hop_limit);
    Puncher::new(repr, info.local.scope_id())?.punch()?;
    Ok(())
}
