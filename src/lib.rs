//! synergy-craft: punches holes in stateful IPv6 firewalls the SocketSynergy way, with exact,
//! hand-built TCP SYN, UDP and SCTP INIT probes whose hop limit ends just past the local firewalls.

pub mod param;
pub mod wire;
