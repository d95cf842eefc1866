//! Which probe a flow needs: the TCP SYN that matches a local socket's ISN and carries the options
//! the kernel's own SYN will carry (so conntrack records the same window scale), the UDP datagram,
//! or the SCTP punch (an ERROR chunk, not an INIT: `SctpChunk::stale_cookie_error`). Pure: no I/O;
//! kernel facts are passed in.

use std::net::SocketAddrV6;

use crate::param::HopLimit;
use crate::wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
use crate::wire::sctp::{SctpChunk, SctpRepr};
use crate::wire::tcp::{TcpFlags, TcpOption, TcpRepr};
use crate::wire::udp::UdpRepr;

/// The transport of a flow to punch for, with what its probe must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// TCP: `isn` is the initial sequence number the local socket will use; `wscale` the window
    /// scale shift its SYN will offer (None: no window scaling); `mss` its MSS option.
    Tcp {
        isn: u32,
        wscale: Option<u8>,
        mss: u16,
    },
    Udp,
    /// SCTP: the punch's Stale Cookie measure, which tells the trace's probes apart.
    Sctp {
        mark: u32,
    },
}

impl Flow {
    pub fn proto(&self) -> crate::wire::Proto {
        match self {
            Flow::Tcp { .. } => crate::wire::Proto::Tcp,
            Flow::Udp => crate::wire::Proto::Udp,
            Flow::Sctp { .. } => crate::wire::Proto::Sctp,
        }
    }

    /// The same flow marked with `tag` where its probe has room for one: the TCP initial
    /// sequence number, the SCTP punch's measure; UDP unchanged.
    pub fn tagged(self, tag: u32) -> Flow {
        match self {
            Flow::Sctp { .. } => Flow::Sctp { mark: tag },
            other => other.with_isn(tag),
        }
    }

    /// The same TCP flow with another initial sequence number (other flows unchanged).
    pub fn with_isn(self, isn: u32) -> Flow {
        match self {
            Flow::Tcp { wscale, mss, .. } => Flow::Tcp { isn, wscale, mss },
            other => other,
        }
    }
}

/// The probe from `local` to `peer` for `flow`, with hop limit `hop_limit` (RFC 9293 §3.5
/// simultaneous open for TCP; RFC 768; for SCTP an ERROR chunk with a Stale Cookie cause and
/// verification tag 0, RFC 9260 §3.3.10.3, §8.4 rule 7).
pub fn probe_for(
    flow: Flow,
    local: SocketAddrV6,
    peer: SocketAddrV6,
    hop_limit: HopLimit,
) -> ProbeRepr {
    let transport = match flow {
        Flow::Tcp { isn, wscale, mss } => {
            let mut options = vec![
                TcpOption::Mss { value: mss },
                TcpOption::SackPermitted,
                TcpOption::Timestamps {
                    tsval: isn.rotate_left(7),
                    tsecr: 0,
                },
            ];
            if let Some(shift) = wscale {
                options.push(TcpOption::Nop);
                options.push(TcpOption::WindowScale { shift });
            }
            Transport::Tcp(TcpRepr {
                src_port: local.port(),
                dst_port: peer.port(),
                seq: isn,
                ack: 0,
                flags: TcpFlags(TcpFlags::SYN),
                window: 65535,
                urgent: 0,
                options,
            })
        }
        Flow::Udp => Transport::Udp(UdpRepr {
            src_port: local.port(),
            dst_port: peer.port(),
        }),
        Flow::Sctp { mark } => Transport::Sctp(SctpRepr {
            src_port: local.port(),
            dst_port: peer.port(),
            verification_tag: 0,
            chunks: vec![SctpChunk::stale_cookie_error(mark)],
        }),
    };
    ProbeRepr {
        ip: IpFields::new(*local.ip(), *peer.ip(), hop_limit.0),
        transport,
        payload: Vec::new(),
        checksum_mode: ChecksumMode::Correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_syn_matches_the_socket() {
        let l: SocketAddrV6 = "[2001:db8:1::11]:4444".parse().unwrap();
        let p: SocketAddrV6 = "[2001:db8:2::5]:5555".parse().unwrap();
        let r = probe_for(
            Flow::Tcp {
                isn: 77,
                wscale: Some(10),
                mss: 1440,
            },
            l,
            p,
            HopLimit(2),
        );
        let Transport::Tcp(t) = &r.transport else {
            panic!()
        };
        assert_eq!(
            (t.seq, t.flags.0, t.src_port, t.dst_port),
            (77, TcpFlags::SYN, 4444, 5555)
        );
        assert!(t.options.contains(&TcpOption::WindowScale { shift: 10 }));
        assert_eq!(r.ip.hop_limit, 2);
        let r = probe_for(
            Flow::Tcp {
                isn: 77,
                wscale: None,
                mss: 1440,
            },
            l,
            p,
            HopLimit(2),
        );
        let Transport::Tcp(t) = &r.transport else {
            panic!()
        };
        assert!(
            !t.options
                .iter()
                .any(|o| matches!(o, TcpOption::WindowScale { .. }))
        );
    }
}
