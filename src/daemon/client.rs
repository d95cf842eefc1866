//! The daemon's client, used by `synergy()` (Rust and C) when the caller lacks CAP_NET_RAW: it
//! passes the caller's socket to the daemon with the hop limit and peer, and reads the answer.
//! Does I/O.

use std::io::Read;
use std::net::SocketAddrV6;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::proto::{Reply, Request};
use crate::api::SynergyError;
use crate::net::fdpass;
use crate::param::HopLimit;

/// Where the daemon listens: `$SYNERGY_DAEMON_SOCKET`, else [`super::DEFAULT_SOCKET`].
pub fn socket_path() -> String {
    std::env::var("SYNERGY_DAEMON_SOCKET").unwrap_or_else(|_| super::DEFAULT_SOCKET.to_string())
}

/// Sends raw request bytes with `fds` to the daemon at `path` and returns its reply line. Public
/// for tools and tests that speak the protocol directly.
pub fn exchange(path: &str, fds: &[RawFd], bytes: &[u8]) -> std::io::Result<String> {
    let conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    fdpass::send_with_fds(conn.as_raw_fd(), bytes, fds)?;
    let mut line = String::new();
    (&conn).take(512).read_to_string(&mut line)?;
    Ok(line)
}

/// Asks the daemon to punch for the socket `fd`.
pub fn request(
    fd: RawFd,
    hop_limit: HopLimit,
    peer: Option<SocketAddrV6>,
) -> Result<(), SynergyError> {
    let path = socket_path();
    let bytes = Request {
        hop_limit: hop_limit.0,
        peer,
    }
    .emit();
    let line = exchange(&path, &[fd], &bytes).map_err(|source| SynergyError::NoDaemon {
        path: path.clone(),
        source,
    })?;
    match Reply::parse(&line) {
        Reply::Ok(_) => Ok(()),
        Reply::Err { errno, reason } => Err(SynergyError::Refused {
            path,
            errno,
            reason,
        }),
    }
}
