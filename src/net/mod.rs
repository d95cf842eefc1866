//! Everything that touches the operating system's network stack: privilege (capabilities), route
//! and source-address lookup, and the raw IPv6 socket that injects probes. Does I/O.

pub mod fdpass;
pub mod link;
pub mod portwatch;
pub mod privilege;
pub mod raw;
pub mod rawrecv;
pub mod replies;
pub mod route;
pub mod sockdiag;
pub mod sockfacts;
pub mod synwatch;
pub mod tcp;

pub use replies::{PacketSender, ReplySockets, ReplySource};

use std::io;
use std::net::Ipv6Addr;

use thiserror::Error;

/// A failed network operation, naming what was attempted and on which address.
#[derive(Debug, Error)]
pub enum NetError {
    /// The application edge adds the whole set its command needs (`app::privilege_hint`).
    #[error("{op} needs {cap}")]
    MissingCapability { op: &'static str, cap: &'static str },
    #[error("{op} for {addr}")]
    Io {
        op: &'static str,
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("building the probe")]
    Build(#[from] crate::wire::WireError),
    #[error("no interface named {name:?} ({used_as})")]
    NoSuchInterface { name: String, used_as: &'static str },
    #[error("probe of {len} bytes to {dst} is larger than the outgoing link MTU of {mtu} bytes")]
    LargerThanMtu {
        len: usize,
        dst: Ipv6Addr,
        mtu: usize,
    },
}

impl NetError {
    /// The errno the C ABI and the daemon report for this error: the system call's own, EPERM
    /// for a missing capability, EIO otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            NetError::MissingCapability { .. } => libc::EPERM,
            NetError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    pub(crate) fn io(op: &'static str, addr: impl ToString, source: io::Error) -> Self {
        NetError::Io {
            op,
            addr: addr.to_string(),
            source,
        }
    }
}

/// Resolves the zone of a link-local address (`eth0` or `3`) to an interface index; 0 for none.
pub fn zone_index(zone: Option<&str>) -> Result<u32, NetError> {
    match zone {
        None => Ok(0),
        Some(z) => if_index(z, "the zone of a link-local or multicast address"),
    }
}

/// The index of interface `name` (or a number), `used_as` saying what it was given for.
pub fn if_index(name: &str, used_as: &'static str) -> Result<u32, NetError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let missing = || NetError::NoSuchInterface {
        name: name.to_string(),
        used_as,
    };
    let c = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(missing()) } else { Ok(idx) }
}

/// Waits in poll() until `fd` reports one of `events` (or POLLHUP/POLLERR), at most `timeout`
/// (None: no limit; zero: a look without waiting); retried when a signal interrupts it. Returns
/// the events reported, empty when the time ran out.
pub fn poll_one(
    fd: std::os::fd::BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<std::time::Duration>,
) -> io::Result<libc::c_short> {
    let until = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ms = until.map_or(-1, |u| {
            let left = u.saturating_duration_since(std::time::Instant::now());
            // Rounded up, so that a wait never ends before its time.
            libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
        });
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events,
            revents: 0,
        };
        // SAFETY: polling one valid descriptor.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 {
            return Ok(p.revents);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether the other end of `fd` is gone (POLLHUP or POLLERR now), without waiting. For a
/// connection whose own read side is shut, POLLHUP says that the peer closed too; for a TCP
/// socket in TCP_CLOSE, tcp_poll reports POLLHUP (and takes no socket lock).
pub fn hung_up(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    poll_one(fd, 0, Some(std::time::Duration::ZERO))
        .is_ok_and(|r| r & (libc::POLLHUP | libc::POLLERR) != 0)
}

/// A random non-zero 32-bit number (ISNs and initiate tags, where 0 means "none").
pub fn random_nonzero_u32() -> u32 {
    loop {
        let v = random_u32();
        if v != 0 {
            return v;
        }
    }
}

/// A random 32-bit number from the operating system (ISNs, tags).
pub fn random_u32() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        // Never fail for want of entropy; the clock still differs per run.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1)
    })
}
