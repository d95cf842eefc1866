//! UDP sessions: punch, wait for the peer's first datagram (in connect mode, announcing ourselves
//! with empty datagrams), then relay. Does I/O.

use crate::wire::Proto;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::config::{SessionConfig, SessionMode};
use crate::net::portwatch::PortWatch;
use crate::net::{NetError, privilege};
use crate::punch::plan::Flow;
use crate::trace::UDP_TRACE_MAGIC;
use crate::wire::ipv6::proto;

use super::{
    Endpoints, Events, PunchKit, connected, from_icmp, punched, relay, spawn_watch, wait_for,
};

pub(super) fn session(
    cfg: &SessionConfig,
    ep: &Endpoints,
    ev: Events,
    mode: SessionMode,
) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(ep.local).map_err(|e| NetError::io("binding", ep.local, e))?;
    sock.connect(ep.peer)
        .map_err(|e| NetError::io("connecting the UDP socket to", ep.peer, e))?;
    let watch = PortWatch::open(proto::UDP, ep.local)?;
    let mut kit = PunchKit::open(cfg, ep)?;
    privilege::drop_all()?;
    let hop = kit.hop_limit(cfg, ep, ev)?;
    let puncher = kit.puncher(Flow::Udp, ep, hop)?;
    let _strangers = spawn_watch(watch, ep.peer, ev, Proto::Udp);
    puncher.punch()?;
    punched(ev, &puncher, cfg, false);

    // Wait for the peer's first datagram. In connect mode, also send empty datagrams at full hop
    // limit every 250 ms: they pass the peer's firewall once the peer has punched, and tell it
    // that we are here. Empty datagrams are never written to stdout.
    let mut buf = vec![0u8; 65536];
    let first = wait_for(cfg, ev, &puncher, |until| {
        while Instant::now() < until {
            if mode == SessionMode::Connect {
                let _ = sock.send(&[]);
            }
            let left = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| NetError::io("setting a timeout", ep.local, e))?;
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n].starts_with(UDP_TRACE_MAGIC) => {
                    log::debug!("dropped a hop-trace datagram")
                }
                Ok(n) => return Ok(Some(buf[..n].to_vec())),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // ICMPv6 errors for this flow (trace probes rejected, empty datagrams refused before
                // the peer was ready) are expected while punching.
                Err(e) if from_icmp(&e) => {
                    log::debug!("ICMPv6 error on the flow while waiting: {e}")
                }
                Err(e) => return Err(NetError::io("receiving from", ep.peer, e).into()),
            }
        }
        Ok(None)
    })?;
    connected(ev, ep.peer, Proto::Udp);
    if mode == SessionMode::Connect {
        let _ = sock.send(&[]);
    }
    relay::datagrams(
        sock,
        first,
        cfg.linger,
        cfg.repunch.map(|every| (&puncher, every)),
        ev,
    )
}
