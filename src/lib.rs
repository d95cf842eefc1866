//! synergy-craft: punches holes in stateful IPv6 firewalls the SocketSynergy way, with exact,
//! hand-built TCP SYN, UDP and SCTP INIT probes whose hop limit ends just past the local firewalls.
//!
//! Layout: `wire` (pure packet views and builders), `param` and `config` (validated input, pure),
//! `net` (sockets and privilege, I/O), `output` (reports, I/O), `cli` (raw arguments) and `app`
//! (the command runners and exit codes).

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
