//! UDP sessions: punch, wait for the peer's first datagram (in connect mode, announcing ourselves
//! with empty datagrams), then relay. Does I/O.

use crate::wire::Proto;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::config::{SessionConfig, SessionMode};
use crate::net::NetError;
use crate::net::portwatch::PortWatch;
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
    kit.drop_privilege()?;
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
        first_datagram(&sock, mode, until, &mut buf)
            .map_err(|e| NetError::io("receiving from", ep.peer, e).into())
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

/// The connected UDP socket of a session, as its waiting uses it: the socket, or a script in
/// tests.
pub(super) trait Datagrams {
    fn send(&self, data: &[u8]) -> std::io::Result<usize>;
    /// Receives one datagram, waiting at most `wait`.
    fn recv(&self, buf: &mut [u8], wait: Duration) -> std::io::Result<usize>;
}

impl Datagrams for UdpSocket {
    fn send(&self, data: &[u8]) -> std::io::Result<usize> {
        UdpSocket::send(self, data)
    }

    fn recv(&self, buf: &mut [u8], wait: Duration) -> std::io::Result<usize> {
        self.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        UdpSocket::recv(self, buf)
    }
}

/// Waits until `until` for the peer's first datagram that is not a hop-trace probe (the other
/// side's trace may get through); in connect mode sends an empty datagram before each wait of
/// at most 250 ms. ICMPv6 errors reported on the flow (trace probes rejected, empty datagrams
/// refused before the peer was ready) are expected while punching and skipped; any other error
/// ends the wait.
fn first_datagram(
    sock: &dyn Datagrams,
    mode: SessionMode,
    until: Instant,
    buf: &mut [u8],
) -> std::io::Result<Option<Vec<u8>>> {
    while Instant::now() < until {
        if mode == SessionMode::Connect {
            let _ = sock.send(&[]);
        }
        let left = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        match sock.recv(buf, left) {
            Ok(n) if buf[..n].starts_with(UDP_TRACE_MAGIC) => {
                log::debug!("dropped a hop-trace datagram")
            }
            Ok(n) => return Ok(Some(buf[..n].to_vec())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if from_icmp(&e) => {
                log::debug!("ICMPv6 error on the flow while waiting: {e}")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    //! The UDP session's wait for the first datagram, on a scripted socket.
    use std::cell::RefCell;
    use std::io;

    use super::*;

    /// Replays `recvs` in order (then times out), keeping what was sent.
    struct Script {
        recvs: RefCell<Vec<io::Result<Vec<u8>>>>,
        sent: RefCell<Vec<Vec<u8>>>,
    }

    impl Script {
        fn new(mut recvs: Vec<io::Result<Vec<u8>>>) -> Self {
            recvs.reverse();
            Script {
                recvs: RefCell::new(recvs),
                sent: RefCell::new(Vec::new()),
            }
        }
    }

    impl Datagrams for Script {
        fn send(&self, data: &[u8]) -> io::Result<usize> {
            self.sent.borrow_mut().push(data.to_vec());
            Ok(data.len())
        }

        fn recv(&self, buf: &mut [u8], _: Duration) -> io::Result<usize> {
            match self.recvs.borrow_mut().pop() {
                Some(Ok(d)) => {
                    buf[..d.len()].copy_from_slice(&d);
                    Ok(d.len())
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Hop-trace datagrams, ICMPv6 errors on the flow and timeouts are passed over; the first
    /// other datagram is the peer's, and in connect mode an empty datagram went out before each
    /// receive.
    #[test]
    fn the_first_real_datagram_after_trace_probes_and_icmp_errors() {
        let mut trace = UDP_TRACE_MAGIC.to_vec();
        trace.push(2);
        let s = Script::new(vec![
            Ok(trace),
            Err(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            Err(io::ErrorKind::TimedOut.into()),
            Ok(b"hello".to_vec()),
        ]);
        let mut buf = vec![0u8; 64];
        let got = first_datagram(&s, SessionMode::Connect, soon(), &mut buf).unwrap();
        assert_eq!(got.as_deref(), Some(&b"hello"[..]));
        assert_eq!(*s.sent.borrow(), vec![Vec::<u8>::new(); 5]);
    }

    /// A listener sends nothing while it waits, and an empty datagram is data like any other.
    #[test]
    fn a_listener_sends_nothing() {
        let s = Script::new(vec![Ok(Vec::new())]);
        let mut buf = vec![0u8; 64];
        let got = first_datagram(&s, SessionMode::Listen, soon(), &mut buf).unwrap();
        assert_eq!(got, Some(Vec::new()));
        assert!(s.sent.borrow().is_empty());
    }

    /// Any other error ends the wait with it; a wait whose time is up yields nothing.
    #[test]
    fn another_error_ends_the_wait() {
        let s = Script::new(vec![Err(io::Error::from_raw_os_error(libc::EBADF))]);
        let mut buf = vec![0u8; 64];
        let e = first_datagram(&s, SessionMode::Listen, soon(), &mut buf).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let s = Script::new(vec![Ok(b"late".to_vec())]);
        let got = first_datagram(&s, SessionMode::Listen, Instant::now(), &mut buf).unwrap();
        assert_eq!(got, None);
    }
}
