//! `synergy-craft daemon`: punches for callers without CAP_NET_RAW. The daemon admits a caller
//! from SO_PEERCRED/SO_PEERGROUPS before it reads anything, and only then lets it pass its socket
//! (SO_PASSRIGHTS, `ready`; see `proto`). Every admitted caller has its own thread with a deadline,
//! within per-uid and per-group room (`ledger`); the thread decides with `punch::check` from what
//! the kernel says (namespace, protocol, bind flags, assigned addresses, the other sockets on the
//! port), sends the probe only while the caller is still there, and closes what the caller sent
//! under a watchdog (`closer`), so that no close holds up anyone else. After start-up it runs as an
//! unprivileged user with no capability and no-new-privs. Does I/O.

pub mod client;
#[cfg(feature = "cli")]
mod closer;
#[cfg(feature = "cli")]
mod exits;
#[cfg(feature = "cli")]
mod learn;
#[cfg(feature = "cli")]
mod ledger;
#[cfg(feature = "cli")]
mod loglimit;
pub mod proto;
#[cfg(feature = "cli")]
mod server;
#[cfg(feature = "cli")]
pub(crate) mod sockfile;

#[cfg(feature = "cli")]
pub(crate) use server::{DaemonConfig, Policy, serve};

/// Punched listeners one uid may have waiting for their peers at once; an admitting group has
/// `GROUP_FACTOR` times as many, the daemon 16 times (1024: each holds a thread).
pub const WAITS_PER_UID: usize = 64;

/// Punched client sockets one uid may have held (not yet connected) at once; a group
/// `GROUP_FACTOR` times as many, the daemon 16 times (4096: two descriptors each).
pub const HOLDS_PER_UID: usize = 256;

/// Flows one uid may keep open at once (`synergy_keep`).
pub const KEEPS_PER_UID: usize = 16_384;

/// Flows the members of one admitting group may keep together (a member switching among many
/// uids gets no more).
pub const KEEPS_PER_GROUP: usize = 2 * KEEPS_PER_UID;

/// Flows the daemon keeps at most, all callers together (about 700 bytes each, 45 MiB in all;
/// and each is a conntrack entry on every local firewall, whose tables hold 65,536 to 262,144).
pub const KEEPS_TOTAL: usize = 4 * KEEPS_PER_UID;

/// Where the daemon listens unless told otherwise, and where clients look.
pub const DEFAULT_SOCKET: &str = "/run/synergy-craft/synergy.sock";
