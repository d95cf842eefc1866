//! The probes the crate's unit tests share (test builds only): flows from [2001:db8:1::11] to
//! [2001:db8:2::5]:5555, the lab's A and B, built as the library builds them
//! (`punch::plan::probe_for`). Pure.

use std::net::SocketAddrV6;

use crate::param::HopLimit;
use crate::punch::plan::{Flow, probe_for};
use crate::wire::probe::ProbeRepr;

pub const A: &str = "2001:db8:1::11";
pub const B: &str = "2001:db8:2::5";

/// The probe of `flow` from A's port `sport` to B's port 5555 with hop limit `hop`.
pub fn probe(flow: Flow, sport: u16, hop: u8) -> ProbeRepr {
    let a = SocketAddrV6::new(A.parse().unwrap(), sport, 0, 0);
    let b = SocketAddrV6::new(B.parse().unwrap(), 5555, 0, 0);
    probe_for(flow, a, b, HopLimit(hop))
}

/// A UDP punch (empty payload) from A's port `sport`.
pub fn udp_probe(sport: u16, hop: u8) -> ProbeRepr {
    probe(Flow::Udp, sport, hop)
}
