//! SCTP `listen`: a kernel SCTP listener, punched with the SCTP punch chunk (an ERROR, not an
//! INIT: `wire::sctp::SctpChunk::stale_cookie_error`), that accepts only the peer.
//! Does I/O.

use crate::wire::Proto;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Instant;

use anyhow::bail;

use crate::config::SessionConfig;
use crate::net::NetError;
use crate::punch::plan::Flow;

use super::{Endpoints, Events, PunchKit, connected, punched, readable, relay, wait_for};

pub(super) fn listen(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = match Socket::new(
        Domain::IPV6,
        Type::STREAM,
        Some(Protocol::from(libc::IPPROTO_SCTP)),
    ) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT)
            ) =>
        {
            bail!(
                "listen sctp: this kernel has no SCTP sockets (socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP) fails with \
             EPROTONOSUPPORT); it needs the sctp module (CONFIG_IP_SCTP). `synergy-craft probe --proto sctp` still punches"
            )
        }
        Err(e) => return Err(NetError::io("opening an SCTP socket", ep.local, e).into()),
    };
    sock.bind(&ep.local.into())
        .map_err(|e| NetError::io("binding", ep.local, e))?;
    sock.listen(1)
        .map_err(|e| NetError::io("listening", ep.local, e))?;
    let flow = Flow::Sctp {
        mark: crate::net::random_u32(),
    };
    let mut kit = PunchKit::open(cfg, ep)?;
    kit.drop_privilege()?;
    let hop = kit.hop_limit(cfg, ep, ev)?;
    let puncher = kit.puncher(flow, ep, hop)?;
    sock.set_nonblocking(true)
        .map_err(|e| NetError::io("setting non-blocking", ep.local, e))?;
    puncher.punch()?;
    punched(ev, &puncher, cfg, false);
    let conn = wait_for(cfg, ev, &puncher, |until| {
        while Instant::now() < until {
            match sock.accept() {
                Ok((s, from))
                    if from
                        .as_socket_ipv6()
                        .is_some_and(|f| f.ip() == ep.peer.ip() && f.port() == ep.peer.port()) =>
                {
                    return Ok(Some(s));
                }
                Ok((s, from)) => {
                    super::stranger(ev, Proto::Sctp, from.as_socket(), "closed an association");
                    drop(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    readable(sock.as_fd(), until)
                        .map_err(|e| NetError::io("waiting for an association", ep.local, e))?;
                }
                Err(e) => return Err(NetError::io("accepting", ep.local, e).into()),
            }
        }
        Ok(None)
    })?;
    conn.set_nonblocking(false)
        .map_err(|e| NetError::io("setting blocking", ep.local, e))?;
    connected(ev, ep.peer, Proto::Sctp);
    relay::stream(TcpStream::from(conn), ev)
}
