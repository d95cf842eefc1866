//! `listen` and `connect` sessions: punch for one named peer, let only that peer in, then relay
//! stdin to the peer and the peer's data to stdout like netcat. Events go to stderr (human lines
//! or JSON Lines), so stdout carries only the peer's bytes. Does I/O.
//!
//! TCP in `synergy` mode (the default) is a simultaneous open (RFC 9293 §3.5): the local socket's
//! initial sequence number is chosen first (TCP_REPAIR) and the punch is a SYN with that same
//! number, so the firewall's conntrack entry and the socket agree. While waiting, a listener with a
//! drop-all filter swallows the peer's SYN, so the kernel neither resets the peer nor answers with
//! another ISN; when the peer's SYN is seen, the socket connects, its SYN crosses the peer's, and
//! the peer's kernel completes the handshake.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV6, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::{Proto, TcpMode};
use crate::config::site_or_default;
use crate::config::{SessionConfig, SessionMode};
use crate::discover::{Replies, TraceSpec, UDP_TRACE_MAGIC, trace};
use crate::hops::recommend;
use crate::net::raw::RawSender;
use crate::net::watch::{Seen, Watch};
use crate::net::{NetError, privilege, tcp, zone_index};
use crate::param::{HopChoice, HopLimit};
use crate::punch::plan::{Flow, probe_for};
use crate::punch::{Puncher, kernel_like_tcp};
use crate::wire::ipv6::proto;
use crate::wire::tcp::TcpFlags;

/// Session events on stderr.
#[derive(Clone, Copy)]
pub struct Events {
    json: bool,
    /// Library use: events go to `log` at info level instead of stderr.
    quiet: bool,
}

impl Events {
    fn emit(&self, event: &str, human: &str, fields: serde_json::Value) {
        if self.quiet {
            log::info!("{human}");
        } else if self.json {
            let mut v = json!({ "event": event });
            if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fields) {
                o.extend(f);
            }
            eprintln!("{v}");
        } else {
            eprintln!("synergy-craft: {human}");
        }
    }
}

struct Endpoints {
    local: SocketAddrV6,
    peer: SocketAddrV6,
}

fn endpoints(cfg: &SessionConfig) -> Result<Endpoints, NetError> {
    let scope = zone_index(cfg.local.zone.as_deref())?;
    let peer_scope = match &cfg.peer.zone {
        Some(z) => zone_index(Some(z))?,
        None => scope,
    };
    Ok(Endpoints {
        local: SocketAddrV6::new(cfg.local.addr, cfg.local_port.get(), 0, scope),
        peer: SocketAddrV6::new(cfg.peer.addr, cfg.peer_port.get(), 0, peer_scope),
    })
}

/// Runs a session to its end.
pub fn run(cfg: &SessionConfig) -> anyhow::Result<()> {
    let ev = Events {
        json: cfg.json,
        quiet: false,
    };
    let ep = endpoints(cfg)?;
    match (cfg.proto, cfg.mode) {
        (Proto::Sctp, _) => listen_sctp(cfg, &ep, ev),
        (Proto::Udp, mode) => udp_session(cfg, &ep, ev, mode),
        (Proto::Tcp, SessionMode::Listen) if cfg.tcp_mode == TcpMode::Classic => {
            listen_tcp_classic(cfg, &ep, ev)
        }
        (Proto::Tcp, SessionMode::Listen) => listen_tcp(cfg, &ep, ev),
        (Proto::Tcp, SessionMode::Connect) => connect_tcp(cfg, &ep, ev),
    }
}

fn punched(ev: Events, p: &Puncher, cfg: &SessionConfig, again: bool) {
    let (what, seq) = match &p.repr().transport {
        crate::wire::probe::Transport::Tcp(t) => ("SYN", Some(t.seq)),
        crate::wire::probe::Transport::Udp(_) => ("datagram", None),
        crate::wire::probe::Transport::Sctp(_) => ("INIT", None),
    };
    let verb = if again { "punched again" } else { "punched" };
    ev.emit(
        if again { "repunched" } else { "punched" },
        &format!(
            "{verb}: {what} [{}]:{} > [{}]:{} hop limit {}{}",
            p.repr().ip.src,
            cfg.local_port,
            p.repr().ip.dst,
            cfg.peer_port,
            p.repr().ip.hop_limit,
            seq.map(|s| format!(" seq {s}")).unwrap_or_default()
        ),
        json!({ "proto": p.repr().transport.name(), "local": format!("[{}]:{}", p.repr().ip.src, cfg.local_port),
                "peer": format!("[{}]:{}", p.repr().ip.dst, cfg.peer_port), "hop_limit": p.repr().ip.hop_limit, "seq": seq }),
    );
}

/// The privileged part of punching, opened before capabilities are dropped: the raw socket that
/// sends, and for an `auto` hop limit the sockets that receive the trace's replies.
struct PunchKit {
    sender: RawSender,
    replies: Option<Replies>,
    hop: Option<HopLimit>,
}

impl PunchKit {
    fn open(cfg: &SessionConfig, ep: &Endpoints) -> Result<Self, NetError> {
        let sender = RawSender::open(Some((*ep.local.ip(), ep.local.scope_id())))?;
        let (replies, hop) = match cfg.hop_limit {
            HopChoice::Fixed(h) => (None, Some(h)),
            HopChoice::Auto => {
                let t = match cfg.proto {
                    Proto::Tcp => proto::TCP,
                    Proto::Udp => proto::UDP,
                    Proto::Sctp => proto::SCTP,
                };
                (
                    Some(Replies::open(*ep.local.ip(), ep.local.scope_id(), t)?),
                    None,
                )
            }
        };
        Ok(PunchKit {
            sender,
            replies,
            hop,
        })
    }

    /// The hop limit: given, or traced now (once) with probes whose TCP sequence numbers or SCTP
    /// tags are `base + h`, all before the real probe's (so conntrack re-initialises on it).
    fn hop_limit(
        &mut self,
        cfg: &SessionConfig,
        ep: &Endpoints,
        ev: Events,
        base: u32,
    ) -> anyhow::Result<HopLimit> {
        if let Some(h) = self.hop {
            return Ok(h);
        }
        let Some(replies) = self.replies.as_mut() else {
            bail!("no reply sockets for the hop-limit trace")
        };
        let spec = TraceSpec {
            proto: cfg.proto,
            local: ep.local,
            peer: ep.peer,
            max_hops: 30,
            wait: Duration::from_millis(500),
            site: site_or_default(None, *ep.local.ip()),
            base,
        };
        let hops = trace(&spec, &self.sender, replies)?;
        let rec = recommend(&hops);
        let Some(h) = rec.hop_limit else {
            bail!("hop limit auto: {}", rec.describe())
        };
        ev.emit(
            "hop_limit",
            &format!("hop limit auto: {}", rec.describe()),
            json!({ "hop_limit": h, "recommendation": rec }),
        );
        self.hop = Some(HopLimit(h));
        Ok(HopLimit(h))
    }

    fn puncher(&self, flow: Flow, ep: &Endpoints, hop: HopLimit) -> Result<Puncher, NetError> {
        Puncher::with_sender(
            probe_for(flow, ep.local, ep.peer, hop),
            ep.peer.scope_id(),
            self.sender.try_clone()?,
        )
    }
}

/// The waiting loop: calls `poll(until)` until it yields, re-punching at the configured interval,
/// and fails once the timeout has passed.
fn wait_for<T>(
    cfg: &SessionConfig,
    ev: Events,
    puncher: &Puncher,
    mut poll: impl FnMut(Instant) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let give_up = cfg.timeout.map(|t| start + t);
    let mut next_punch = cfg.repunch.map(|r| start + r);
    loop {
        let far = Instant::now() + Duration::from_secs(3600);
        let until = [give_up, next_punch]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far);
        if let Some(v) = poll(until)? {
            return Ok(v);
        }
        let now = Instant::now();
        if give_up.is_some_and(|g| now >= g) {
            bail!(
                "no connection from the peer [{}]:{} within {:?} (check the hop limit with `synergy-craft probe`, and that the peer is sending)",
                cfg.peer.addr,
                cfg.peer_port,
                cfg.timeout.unwrap_or_default()
            );
        }
        if let (Some(at), Some(every)) = (next_punch, cfg.repunch)
            && now >= at
        {
            puncher.punch()?;
            punched(ev, puncher, cfg, true);
            next_punch = Some(now + every);
        }
    }
}

/// Watches the local port on a thread: segments from the peer are passed on, strangers are logged
/// and nothing else happens to them (the firewall or the kernel refuses them, nothing is relayed).
fn spawn_watch(
    mut watch: Watch,
    peer: SocketAddrV6,
    ev: Events,
    proto: &'static str,
) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        loop {
            match watch.next(Instant::now() + Duration::from_secs(3600)) {
                Ok(Some(seen)) if seen.src.ip() == peer.ip() && seen.src.port() == peer.port() => {
                    if tx.send(seen).is_err() {
                        // The session no longer waits for the peer; keep logging strangers.
                    }
                }
                Ok(Some(seen)) => ev.emit(
                    "stranger",
                    &format!("ignored {proto} from [{}]:{}: not the peer", seen.src.ip(), seen.src.port()),
                    json!({ "proto": proto, "from": format!("[{}]:{}", seen.src.ip(), seen.src.port()) }),
                ),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("stopped watching the local port: {e}");
                    return;
                }
            }
        }
    });
    rx
}

fn peer_syn(rx: &mpsc::Receiver<Seen>, until: Instant) -> Option<u32> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Seen {
                tcp: Some((flags, seq)),
                ..
            }) if flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK) => return Some(seq),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn listen_tcp(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
    let stream = accept_tcp(cfg, ep, ev)?;
    relay_stream(stream, ev)
}

/// The robust TCP `listen` up to the connection: punch with the ISN socket's sequence number,
/// wait for the peer's SYN (swallowed meanwhile), then complete the simultaneous open.
fn accept_tcp(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<TcpStream> {
    let isn = crate::net::random_nonzero_u32();
    let swallow = tcp::swallowing_listener(ep.local).context("preparing the local port")?;
    let sock = tcp::socket_with_isn(ep.local, isn)?;
    let watch = Watch::open(proto::TCP, ep.local)?;
    let mut kit = PunchKit::open(cfg, ep)?;
    privilege::drop_all();
    let hop = kit.hop_limit(cfg, ep, ev, isn.wrapping_sub(1000))?;
    let puncher = kit.puncher(kernel_like_tcp(isn, ep.peer), ep, hop)?;

    let rx = spawn_watch(watch, ep.peer, ev, "tcp");
    puncher.punch()?;
    punched(ev, &puncher, cfg, false);
    let peer_seq = wait_for(cfg, ev, &puncher, |until| Ok(peer_syn(&rx, until)))?;
    log::info!("peer SYN seq {peer_seq}: connecting with ISN {isn} (simultaneous open)");
    sock.connect_timeout(&ep.peer.into(), Duration::from_secs(10))
        .map_err(|e| NetError::io("completing the simultaneous open with", ep.peer, e))?;
    drop(swallow);
    connected(ev, ep.peer, "tcp");
    Ok(TcpStream::from(sock))
}

/// The robust TCP `listen` as a library call: binds `local`, punches toward `peer` with a SYN
/// whose sequence number is the socket's own, lets only `peer` in, and returns the connected
/// stream (RFC 9293 §3.5 simultaneous open; clean through strict conntrack). Needs CAP_NET_RAW and
/// CAP_NET_ADMIN when called, and drops every capability of the process before it returns.
/// Events go to the `log` crate.
pub fn tcp_accept_from(
    local: SocketAddrV6,
    peer: SocketAddrV6,
    hop_limit: HopChoice,
    timeout: Option<Duration>,
) -> anyhow::Result<TcpStream> {
    let host = |a: &SocketAddrV6| crate::param::Host {
        addr: *a.ip(),
        zone: None,
    };
    let port = |p: u16| {
        crate::param::Port::new(p)
            .ok_or_else(|| anyhow::anyhow!("port 0 of {local} or {peer} is not a port"))
    };
    let cfg = SessionConfig {
        mode: SessionMode::Listen,
        proto: Proto::Tcp,
        local: host(&local),
        local_port: port(local.port())?,
        peer: host(&peer),
        peer_port: port(peer.port())?,
        hop_limit,
        timeout,
        repunch: Some(crate::config::default_repunch(Proto::Tcp)),
        tcp_mode: TcpMode::Synergy,
        linger: Duration::ZERO,
        json: false,
    };
    accept_tcp(
        &cfg,
        &Endpoints { local, peer },
        Events {
            json: false,
            quiet: true,
        },
    )
}

fn listen_tcp_classic(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
    let listener = tcp::plain_listener(ep.local)?;
    let isn = crate::net::random_nonzero_u32();
    let mut kit = PunchKit::open(cfg, ep)?;
    privilege::drop_all();
    let hop = kit.hop_limit(cfg, ep, ev, isn.wrapping_sub(1000))?;
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
                    ev.emit(
                        "stranger",
                        &format!("closed a connection from {from:?}: not the peer"),
                        json!({ "from": format!("{from:?}") }),
                    );
                    let _ = s.shutdown(Shutdown::Both);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(NetError::io("accepting", ep.local, e).into()),
            }
        }
        Ok(None)
    })?;
    stream
        .set_nonblocking(false)
        .map_err(|e| NetError::io("setting blocking", ep.local, e))?;
    connected(ev, ep.peer, "tcp");
    relay_stream(TcpStream::from(stream), ev)
}

/// Client/client TCP: punch with the socket's ISN, then connect; the two SYNs cross, and a peer SYN
/// that comes before our connect() is swallowed, not reset. A reset (the
/// peer's firewall rejected our SYN before the peer punched) closes our entry too, so the attempt
/// is repeated with a fresh socket until the timeout.
fn connect_tcp(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
    let start = Instant::now();
    let give_up = cfg.timeout.map(|t| start + t);
    // The peer's SYN can arrive between our probe and our connect(): without a listener it would
    // meet a bound socket that is not yet connecting, and the kernel would reset it (a RST the
    // local firewall drops as INVALID). The swallowing listener takes it silently instead, as in
    // `accept_tcp`; once our socket is in SYN_SENT the peer's SYN finds it (simultaneous open).
    let swallow = tcp::swallowing_listener(ep.local).context("preparing the local port")?;
    let mut kit = PunchKit::open(cfg, ep)?;
    // TCP_REPAIR needs CAP_NET_ADMIN on every attempt: it stays permitted, effective only then.
    privilege::drop_effective();
    let mut isn = crate::net::random_nonzero_u32();
    let hop = kit.hop_limit(cfg, ep, ev, isn.wrapping_sub(1000))?;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        privilege::raise_permitted();
        let sock = tcp::socket_with_isn(ep.local, isn)?;
        privilege::drop_effective();
        let puncher = kit.puncher(kernel_like_tcp(isn, ep.peer), ep, hop)?;
        puncher.punch()?;
        punched(ev, &puncher, cfg, attempt > 1);
        let wait = give_up.map_or(Duration::from_secs(15), |g| {
            g.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(15))
        });
        match sock.connect_timeout(&ep.peer.into(), wait.max(Duration::from_millis(100))) {
            Ok(()) => {
                privilege::drop_all();
                drop(swallow);
                connected(ev, ep.peer, "tcp");
                return relay_stream(TcpStream::from(sock), ev);
            }
            Err(e) => {
                log::info!("attempt {attempt}: {e}");
                if give_up.is_some_and(|g| Instant::now() >= g) {
                    return Err(
                        NetError::io("connecting (simultaneous open) to", ep.peer, e).into(),
                    );
                }
                std::thread::sleep(Duration::from_millis(300));
                // A later ISN, so that a firewall entry left in SYN_SENT re-initialises on it.
                isn = isn.wrapping_add(100_000).max(1);
            }
        }
    }
}

fn udp_session(
    cfg: &SessionConfig,
    ep: &Endpoints,
    ev: Events,
    mode: SessionMode,
) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(ep.local).map_err(|e| NetError::io("binding", ep.local, e))?;
    sock.connect(ep.peer)
        .map_err(|e| NetError::io("connecting the UDP socket to", ep.peer, e))?;
    let watch = Watch::open(proto::UDP, ep.local)?;
    let mut kit = PunchKit::open(cfg, ep)?;
    privilege::drop_all();
    let hop = kit.hop_limit(cfg, ep, ev, crate::net::random_u32())?;
    let puncher = kit.puncher(Flow::Udp, ep, hop)?;
    let _strangers = spawn_watch(watch, ep.peer, ev, "udp");
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
    connected(ev, ep.peer, "udp");
    if mode == SessionMode::Connect {
        let _ = sock.send(&[]);
    }
    relay_datagrams(sock, first, cfg.linger, ev)
}

fn listen_sctp(cfg: &SessionConfig, ep: &Endpoints, ev: Events) -> anyhow::Result<()> {
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
        init_tag: crate::net::random_nonzero_u32(),
        tsn: crate::net::random_u32(),
    };
    let mut kit = PunchKit::open(cfg, ep)?;
    privilege::drop_all();
    let hop = kit.hop_limit(cfg, ep, ev, crate::net::random_u32())?;
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
                    ev.emit(
                        "stranger",
                        &format!("closed an association from {from:?}: not the peer"),
                        json!({}),
                    );
                    drop(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(NetError::io("accepting", ep.local, e).into()),
            }
        }
        Ok(None)
    })?;
    conn.set_nonblocking(false)
        .map_err(|e| NetError::io("setting blocking", ep.local, e))?;
    connected(ev, ep.peer, "sctp");
    relay_stream(TcpStream::from(conn), ev)
}

fn connected(ev: Events, peer: SocketAddrV6, proto: &str) {
    ev.emit(
        "peer_connected",
        &format!("peer [{}]:{} connected ({proto})", peer.ip(), peer.port()),
        json!({ "proto": proto, "peer": format!("[{}]:{}", peer.ip(), peer.port()) }),
    );
}

fn closed(ev: Events, sent: u64, received: u64, by: &str) {
    ev.emit(
        "closed",
        &format!("closed by {by}: {sent} bytes sent, {received} bytes received"),
        json!({ "by": by, "bytes_sent": sent, "bytes_received": received }),
    );
}

/// Whether a UDP socket error is an ICMPv6 error for the flow reported back (Linux maps them,
/// icmpv6_err_convert: unreachable codes to ENETUNREACH, EACCES, EHOSTUNREACH, ECONNREFUSED;
/// time exceeded to EHOSTUNREACH; parameter problem to EPROTO; packet too big to EMSGSIZE).
fn from_icmp(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EACCES
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EPROTO
                | libc::EMSGSIZE
        )
    )
}

/// Copies stdin to the stream and the stream to stdout. When stdin ends, the sending side is shut
/// down and the peer's data is still read until it closes; when the peer closes, the session ends.
fn relay_stream(stream: TcpStream, ev: Events) -> anyhow::Result<()> {
    let mut writer = stream.try_clone().context("cloning the connection")?;
    let (sent_tx, sent_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let n = std::io::copy(&mut std::io::stdin().lock(), &mut writer).unwrap_or(0);
        let _ = writer.shutdown(Shutdown::Write);
        let _ = sent_tx.send(n);
    });
    let mut reader = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16384];
    let mut received = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
                received += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading from the peer"),
        }
    }
    let sent = sent_rx.recv_timeout(Duration::from_millis(200)).ok();
    ev.emit(
        "bytes",
        &format!("{} bytes sent, {received} received", sent.unwrap_or(0)),
        json!({ "bytes_sent": sent, "bytes_received": received }),
    );
    closed(
        ev,
        sent.unwrap_or(0),
        received,
        if sent.is_some() {
            "both sides"
        } else {
            "the peer"
        },
    );
    Ok(())
}

/// Sends each read from stdin as one datagram and writes the peer's non-empty datagrams to stdout;
/// after stdin ends, keeps receiving until nothing has come for `linger`.
fn relay_datagrams(
    sock: UdpSocket,
    first: Vec<u8>,
    linger: Duration,
    ev: Events,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut received = first.len() as u64;
    out.write_all(&first)?;
    out.flush()?;
    let sender = sock.try_clone().context("cloning the UDP socket")?;
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 8192];
        let mut sent = 0u64;
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send(&buf[..n]).is_ok() {
                        sent += n as u64;
                    }
                }
            }
        }
        let _ = done_tx.send(sent);
    });
    let mut buf = vec![0u8; 65536];
    let mut sent = None;
    let mut last = Instant::now();
    loop {
        if sent.is_none() {
            sent = done_rx.try_recv().ok();
            if sent.is_some() {
                last = Instant::now();
            }
        }
        if sent.is_some() && last.elapsed() >= linger {
            break;
        }
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .context("setting a timeout")?;
        match sock.recv(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
                received += n as u64;
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) || from_icmp(&e) => {}
            Err(e) => return Err(e).context("receiving from the peer"),
        }
    }
    closed(ev, sent.unwrap_or(0), received, "stdin end and linger");
    Ok(())
}
