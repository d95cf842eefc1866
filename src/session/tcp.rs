//! TCP sessions. `listen` is the server sequence of the library (listen, synergy, accept: the
//! peer's connection is a simultaneous open made by `punch::server`), `connect` the client
//! sequence (bind, synergy, connect, retried with a fresh socket when refused), and `--tcp-mode
//! classic` the original SocketSynergy listener that answers with its own sequence number.
//! Does I/O.

use crate::wire::Proto;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::api;
use crate::config::SessionConfig;
use crate::net::{NetError, privilege, tcp};
use crate::param::HopLimit;
use crate::punch::kernel_like_tcp;

use super::{Endpoints, Events, PunchKit, connected, punched, readable, relay, wait_for};

/// The hop limit: given, or traced now on a flow of its own (`PunchKit::hop_limit`).
fn hop_for(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<HopLimit> {
    if let crate::param::HopChoice::Fixed(h) = cfg.hop_limit {
        return Ok(h);
    }
    PunchKit::open(cfg, ep)?.hop_limit(cfg, ep, ev)
}

fn punched_tcp(ev: Events, ep: &Endpoints, hop: HopLimit, again: bool) {
    let verb = if again { "punched again" } else { "punched" };
    ev.emit(
        if again { "repunched" } else { "punched" },
        &format!(
            "{verb}: SYN [{}]:{} > [{}]:{} hop limit {}",
            ep.local.ip(),
            ep.local.port(),
            ep.peer.ip(),
            ep.peer.port(),
            hop.0
        ),
        json!({ "proto": "tcp", "local": format!("[{}]:{}", ep.local.ip(), ep.local.port()),
                "peer": format!("[{}]:{}", ep.peer.ip(), ep.peer.port()), "hop_limit": hop.0 }),
    );
}

/// The server sequence: a listener, `synergy()` for the peer, and accept() until the peer's
/// connection comes (any other client is closed and reported).
pub(super) fn listen(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
    let listener = tcp::plain_listener(ep.local)?;
    let hop = hop_for(cfg, ep, ev)?;
    // The punch repeats itself every 30 s while it waits, for 120 s (`punch::server`); a longer
    // wait punches again. The privilege for that stays permitted, effective only then.
    api::synergy(&listener, hop, Some(ep.peer)).context("punching for the listener")?;
    privilege::drop_effective();
    punched_tcp(ev, ep, hop, false);
    let give_up = cfg.timeout.map(|t| Instant::now() + t);
    loop {
        let until = give_up
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
            .min(Instant::now() + Duration::from_secs(1));
        let ready = readable(listener.as_fd(), until)
            .map_err(|e| NetError::io("waiting for a connection", ep.local, e))?;
        if !ready && api::pending(&listener) == 0 {
            privilege::raise_permitted();
            let again = api::synergy(&listener, hop, Some(ep.peer));
            privilege::drop_effective();
            again.context("punching for the listener again")?;
            punched_tcp(ev, ep, hop, true);
        }
        if !ready {
            if give_up.is_some_and(|g| Instant::now() >= g) {
                bail!(
                    "no connection from the peer [{}]:{} within {} (check the hop limit with `synergy-craft probe`, and that the peer is sending)",
                    ep.peer.ip(),
                    ep.peer.port(),
                    crate::param::show_duration(cfg.timeout.unwrap_or_default())
                );
            }
            continue;
        }
        let (stream, from) =
            api::synergy_accept(&listener).map_err(|e| NetError::io("accepting", ep.local, e))?;
        let from6 = match from {
            std::net::SocketAddr::V6(a) => Some(a),
            std::net::SocketAddr::V4(_) => None,
        };
        if from6.is_some_and(|f| f.ip() == ep.peer.ip() && f.port() == ep.peer.port()) {
            privilege::drop_all()?;
            connected(ev, ep.peer, Proto::Tcp);
            return relay::stream(stream, ev);
        }
        super::stranger(ev, Proto::Tcp, Some(from), "closed a connection");
        let _ = stream.shutdown(Shutdown::Both);
    }
}

pub(super) fn listen_classic(
    cfg: &SessionConfig,
    ep: &Endpoints,
    ev: Events,
) -> anyhow::Result<()> {
    let listener = tcp::plain_listener(ep.local)?;
    let isn = crate::net::random_nonzero_u32();
    let mut kit = PunchKit::open(cfg, ep)?;
    kit.drop_privilege()?;
    let hop = kit.hop_limit(cfg, ep, ev)?;
    let puncher = kit.puncher(kernel_like_tcp(isn, ep.peer), ep, hop)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| NetError::io("setting non-blocking", ep.local, e))?;
    puncher.punch()?;
    punched(ev, &puncher, cfg, false);
    let stream = wait_for(cfg, ev, &puncher, |until| {
        while Instant::now() < until {
            match listener.accept() {
                Ok((s, from)) => {
                    let from6 = from.as_socket_ipv6();
                    if from6.is_some_and(|f| f.ip() == ep.peer.ip() && f.port() == ep.peer.port()) {
                        return Ok(Some(s));
                    }
                    super::stranger(ev, Proto::Tcp, from.as_socket(), "closed a connection");
                    let _ = s.shutdown(Shutdown::Both);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    readable(listener.as_fd(), until)
                        .map_err(|e| NetError::io("waiting for a connection", ep.local, e))?;
                }
                Err(e) => return Err(NetError::io("accepting", ep.local, e).into()),
            }
        }
        Ok(None)
    })?;
    stream
        .set_nonblocking(false)
        .map_err(|e| NetError::io("setting blocking", ep.local, e))?;
    connected(ev, ep.peer, Proto::Tcp);
    relay::stream(TcpStream::from(stream), ev)
}

/// The client sequence, as both sides of client/client run it: bind, `synergy()`, connect, with
/// the hole kept open between attempts. A full-hop SYN sent before the peer has punched is
/// answered, by a rejecting peer site, with a RST that also closes our own entry; a peer SYN that
/// then arrives is INVALID to our firewall. So each attempt punches first (the hold swallows a
/// peer SYN meanwhile), waits a randomised 200-600 ms for the peer's SYN to show up (seen on the
/// SYN watch) and connects at once when it does, else at the end of the pause; a refused attempt
/// punches again at once with a fresh socket (whose sequence number is later, see
/// `net::tcp::isn_for`), so our entry is closed only for the moment between the RST and the new
/// probe, and the pause that paces the full-hop SYNs is spent with the hole open.
pub(super) fn connect(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
    let start = Instant::now();
    let give_up = cfg.timeout.map(|t| start + t);
    let hop = hop_for(cfg, ep, ev)?;
    let watch = crate::net::synwatch::SynWatch::shared()?;
    let ticket = watch
        .expect(ep.local, ep.peer)
        .map_err(|e| anyhow::Error::new(e).context("watching for the peer's SYN"))?;
    // TCP_REPAIR needs CAP_NET_ADMIN on every attempt: it stays permitted, effective only then.
    privilege::drop_effective();
    let mut attempt = 0u32;
    let mut last: Option<Instant> = None;
    loop {
        attempt += 1;
        // A SYN seen during an earlier attempt says nothing about this one.
        let _ = ticket.take_seen();
        privilege::raise_permitted();
        let punch = tcp::client_socket(ep.local)
            .map_err(anyhow::Error::from)
            .and_then(|sock| {
                api::synergy(&sock, hop, Some(ep.peer))
                    .map(|()| sock)
                    .context("punching for the peer")
            });
        privilege::drop_effective();
        let sock = punch?;
        punched_tcp(ev, ep, hop, attempt > 1);
        // The pause: until the peer's SYN has come (it is swallowed meanwhile) or 200-600 ms.
        let pause = Duration::from_millis(200 + u64::from(crate::net::random_u32() % 400));
        crate::net::poll_one(ticket.fd(), libc::POLLIN, Some(pause))
            .map_err(|e| NetError::io("waiting for the peer's SYN", ep.peer, e))?;
        if let Some(seq) = ticket.take_seen() {
            log::info!("attempt {attempt}: the peer's SYN (seq {seq}) came: connecting now");
        }
        // At least 150 ms between full-hop SYNs even when the peer's SYNs keep coming (no
        // storm); the hole stays open meanwhile.
        if let Some(t) = last {
            std::thread::sleep(Duration::from_millis(150).saturating_sub(t.elapsed()));
        }
        let wait = give_up.map_or(Duration::from_secs(15), |g| {
            g.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(15))
        });
        api::release_hold(&sock);
        last = Some(Instant::now());
        match sock.connect_timeout(&ep.peer.into(), wait.max(Duration::from_millis(100))) {
            Ok(()) => {
                privilege::drop_all()?;
                drop(ticket);
                connected(ev, ep.peer, Proto::Tcp);
                return relay::stream(TcpStream::from(sock), ev);
            }
            Err(e) => {
                log::info!("attempt {attempt}: {e}");
                if give_up.is_some_and(|g| Instant::now() >= g) {
                    return Err(NetError::io("connecting (simultaneous open)", ep.peer, e).into());
                }
            }
        }
    }
}
