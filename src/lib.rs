//! synergy-craft: punches holes in stateful IPv6 firewalls the SocketSynergy way, with exact,
//! hand-built TCP SYN, UDP and SCTP INIT probes whose hop limit ends just past the local firewalls.
//!
//! Layout: `wire` (pure packet views and builders), `param` and `config` (validated input, pure),
//! `net` (sockets and privilege, I/O), `punch` (what a caller may punch for, and punching it),
//! `api` and `capi` (the synergy() call and the TCP sequences for Rust and C), `daemon`,
//! `session` (`listen`/`connect`), `output` (reports, I/O), `cli` (raw arguments) and `app` (the
//! command runners and exit codes). The library path (`api`, `punch`, `net`, `daemon`) never
//! uses the command line's types.

pub mod api;
pub mod app;
pub mod capi;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod discover;
pub mod hops;
pub mod net;
pub mod output;
pub mod param;
pub mod punch;
pub mod reply;
pub mod session;
pub mod wire;
