//! `listen` and `connect` sessions: punch for one named peer, let only that peer in, then relay
//! stdin to the peer and the peer's data to stdout like netcat. Events go to stderr (human lines
//! or JSON Lines), so stdout carries only the peer's bytes. The punching itself is the library's
//! (`api::synergy`, the same path as the C ABI); this module adds the hop-limit trace of `auto`,
//! the waits (in poll()), the events and the relay. Does I/O.

mod relay;
mod sctp;
mod tcp;
mod udp;

use std::net::SocketAddrV6;
use std::os::fd::BorrowedFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::config::TcpMode;
use crate::config::site_for;
use crate::config::{SessionConfig, SessionMode};
use crate::net::ReplySockets;
use crate::net::portwatch::{PortWatch, Seen};
use crate::net::raw::RawSender;
use crate::net::{NetError, zone_index};
use crate::param::{HopChoice, HopLimit};
use crate::punch::Puncher;
use crate::punch::plan::{Flow, probe_for};
use crate::trace::hops::recommend;
use crate::trace::{TraceSpec, trace};
use crate::wire::Proto;

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
            eprintln!("{}", crate::output::json_event(event, fields));
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
        (Proto::Sctp, _) => sctp::listen(cfg, &ep, ev),
        (Proto::Udp, mode) => udp::session(cfg, &ep, ev, mode),
        (Proto::Tcp, SessionMode::Listen) if cfg.tcp_mode == TcpMode::Classic => {
            tcp::listen_classic(cfg, &ep, ev)
        }
        (Proto::Tcp, SessionMode::Listen) => tcp::listen(cfg, &ep, ev),
        (Proto::Tcp, SessionMode::Connect) => tcp::connect(cfg, &ep, ev),
    }
}

fn punched(ev: Events, p: &Puncher, cfg: &SessionConfig, again: bool) {
    let (what, seq) = match &p.repr().transport {
        crate::wire::probe::Transport::Tcp(t) => ("SYN", Some(t.seq)),
        crate::wire::probe::Transport::Udp(_) => ("datagram", None),
        crate::wire::probe::Transport::Sctp(_) => ("SCTP ERROR (stale cookie)", None),
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
        {
            let mut f = json!({ "proto": p.repr().transport.name(), "local": format!("[{}]:{}", p.repr().ip.src, cfg.local_port),
                "peer": format!("[{}]:{}", p.repr().ip.dst, cfg.peer_port), "hop_limit": p.repr().ip.hop_limit });
            if let (Some(s), Some(o)) = (seq, f.as_object_mut()) {
                o.insert("seq".into(), s.into());
            }
            f
        },
    );
}

/// The privileged part of punching, opened before capabilities are dropped: the raw socket that
/// sends, and for an `auto` hop limit the sockets that receive the trace's replies.
struct PunchKit {
    sender: RawSender,
    replies: Option<ReplySockets>,
    hop: Option<HopLimit>,
    /// CAP_DAC_OVERRIDE is still permitted, for writing what an auto trace found to the route
    /// memory (`drop_privilege`); dropped once `hop_limit` is known.
    writing_memory: bool,
}

impl PunchKit {
    fn open(cfg: &SessionConfig, ep: &Endpoints) -> Result<Self, NetError> {
        let sender = RawSender::open(Some((*ep.local.ip(), ep.local.scope_id())))?;
        let (replies, hop) = match cfg.hop_limit {
            HopChoice::Fixed(h) => (None, Some(h)),
            HopChoice::Auto => (
                Some(ReplySockets::open(
                    *ep.local.ip(),
                    ep.local.scope_id(),
                    cfg.proto.next_header(),
                )?),
                None,
            ),
        };
        Ok(PunchKit {
            sender,
            replies,
            hop,
            writing_memory: false,
        })
    }

    /// Gives up every capability once the sockets are open; with an auto hop limit still to be
    /// found, CAP_DAC_OVERRIDE stays permitted (not effective) until the route memory is written.
    fn drop_privilege(&mut self) -> anyhow::Result<()> {
        if self.hop.is_none() {
            crate::net::privilege::drop_all_keeping(&[crate::net::privilege::DAC_OVERRIDE.0])?;
            self.writing_memory = true;
        } else {
            crate::net::privilege::drop_all()?;
        }
        Ok(())
    }

    /// The hop limit: given, or traced now (once). The trace runs on a flow of its own — the
    /// same addresses and peer port, a local port of its own held for the trace — so none of
    /// its probes can touch the real flow's firewall entries; and like every trace it stops at
    /// the first router outside the site (`trace::trace`).
    fn hop_limit(
        &mut self,
        cfg: &SessionConfig,
        ep: &Endpoints,
        ev: Events,
    ) -> anyhow::Result<HopLimit> {
        let found = self.find_hop_limit(cfg, ep, ev);
        if std::mem::take(&mut self.writing_memory) {
            crate::net::privilege::drop_all()?;
        }
        found
    }

    fn find_hop_limit(
        &mut self,
        cfg: &SessionConfig,
        ep: &Endpoints,
        ev: Events,
    ) -> anyhow::Result<HopLimit> {
        if let Some(h) = self.hop {
            return Ok(h);
        }
        // The route memory first (what `hops`, resets and the operator taught this host); a
        // route it knows nothing of is traced, and the trace is remembered.
        let memory = crate::net::route::route_key(*ep.peer.ip(), ep.peer.scope_id())
            .map_err(anyhow::Error::from)
            .and_then(|key| {
                let path = crate::routes::store::path();
                let table = crate::routes::store::load(&path)?;
                Ok((
                    key.clone(),
                    table.range_for(&key, *ep.peer.ip()),
                    table.auto(&key, *ep.peer.ip()),
                ))
            });
        match memory {
            Ok((key, range, Ok(h))) => {
                ev.emit(
                    "route_hop_limit",
                    &format!("hop limit auto: {h} from the route memory (route {key}: {range})"),
                    json!({ "hop_limit": h, "route": key.to_string(), "min": range.min, "max": range.max }),
                );
                self.hop = Some(HopLimit(h));
                return Ok(HopLimit(h));
            }
            Ok((_, _, Err(e @ crate::routes::AutoError::Empty { .. }))) => {
                bail!("hop limit auto: {e}")
            }
            Ok((_, _, Err(crate::routes::AutoError::Unknown { .. }))) => {}
            Err(e) => log::warn!(
                "hop limit auto: the route memory could not be read, tracing instead: {}",
                crate::with_causes(e.as_ref())
            ),
        }
        let Some(replies) = self.replies.as_mut() else {
            bail!("no reply sockets for the hop-limit trace")
        };
        let (_held, trace_local) = trace_port(cfg.proto, ep.local)?;
        let site = site_for(cfg.site, *ep.local.ip(), *ep.peer.ip())?;
        let flow = crate::punch::kernel_like(cfg.proto, ep.peer);
        let spec = TraceSpec::auto(flow, trace_local, ep.peer, site, crate::net::random_u32());
        let hops = trace(&spec, &self.sender, replies)?;
        let rec = recommend(&hops);
        crate::app::remember(&rec, ep.peer);
        let Some(h) = rec.hop_limit else {
            bail!(
                "hop limit auto (site {site}, traced from port {}): {}",
                trace_local.port(),
                rec.describe()
            )
        };
        ev.emit(
            "hop_limit",
            &format!(
                "hop limit auto (site {site}, traced from port {}): {}",
                trace_local.port(),
                rec.describe()
            ),
            json!({ "hop_limit": h, "site_prefix": site.to_string(), "trace_port": trace_local.port(),
                    "recommendation": rec }),
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

/// A local port for the trace's own flow: a socket of the session's protocol (UDP standing in
/// for SCTP, which this kernel may lack) bound to the local address and an ephemeral port, held
/// while the trace runs so the kernel gives that port to nobody else meanwhile.
fn trace_port(
    proto: Proto,
    local: SocketAddrV6,
) -> Result<(socket2::Socket, SocketAddrV6), NetError> {
    use socket2::{Domain, Socket, Type};
    let ty = if proto == Proto::Tcp {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let any = SocketAddrV6::new(*local.ip(), 0, 0, local.scope_id());
    let sock = Socket::new(Domain::IPV6, ty, None)
        .map_err(|e| NetError::io("opening the trace's socket", any, e))?;
    sock.bind(&any.into())
        .map_err(|e| NetError::io("binding the trace's port", any, e))?;
    let port = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket_ipv6())
        .map(|a| a.port())
        .ok_or_else(|| {
            NetError::io(
                "reading the trace's port",
                any,
                std::io::Error::other("no IPv6 address"),
            )
        })?;
    Ok((
        sock,
        SocketAddrV6::new(*local.ip(), port, 0, local.scope_id()),
    ))
}

/// The waiting loop of a session: calls `poll(until)` until it yields, re-punching at the
/// configured interval, and fails once the timeout has passed.
fn wait_for<T>(
    cfg: &SessionConfig,
    ev: Events,
    puncher: &Puncher,
    poll: impl FnMut(Instant) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let waiting = Waiting {
        timeout: cfg.timeout,
        repunch: cfg.repunch,
    };
    waiting
        .run(&Instant::now, poll, || {
            puncher.punch()?;
            punched(ev, puncher, cfg, true);
            Ok(())
        })
        .map_err(|e| match e {
            WaitError::TimedOut(after) => anyhow::anyhow!(
                "no connection from the peer [{}]:{} within {} (check the hop limit with `synergy-craft probe`, and that the peer is sending)",
                cfg.peer.addr,
                cfg.peer_port,
                crate::param::show_duration(after)
            ),
            WaitError::Failed(e) => e,
        })
}

/// How a session waits for its peer: until the timeout (None: for ever), re-punching every
/// `repunch` (None: never). Pure: the clock, the polling and the punch are given.
struct Waiting {
    timeout: Option<Duration>,
    repunch: Option<Duration>,
}

#[derive(Debug)]
enum WaitError {
    TimedOut(Duration),
    Failed(anyhow::Error),
}

impl Waiting {
    /// Calls `poll(until)` until it yields a value, `until` being the next re-punch or the
    /// timeout, whichever comes first; calls `repunch` each time a re-punch is due.
    fn run<T>(
        &self,
        now: &dyn Fn() -> Instant,
        mut poll: impl FnMut(Instant) -> anyhow::Result<Option<T>>,
        mut repunch: impl FnMut() -> anyhow::Result<()>,
    ) -> Result<T, WaitError> {
        let start = now();
        let give_up = self.timeout.map(|t| start + t);
        let mut next_punch = self.repunch.map(|r| start + r);
        loop {
            let far = now() + Duration::from_secs(3600);
            let until = [give_up, next_punch]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(far);
            if let Some(v) = poll(until).map_err(WaitError::Failed)? {
                return Ok(v);
            }
            let t = now();
            if give_up.is_some_and(|g| t >= g) {
                return Err(WaitError::TimedOut(self.timeout.unwrap_or_default()));
            }
            if let (Some(at), Some(every)) = (next_punch, self.repunch)
                && t >= at
            {
                repunch().map_err(WaitError::Failed)?;
                next_punch = Some(t + every);
            }
        }
    }
}

/// What arrives for the local port, segment by segment: the raw watch, or a script in tests.
trait Arrivals {
    fn next(&mut self, until: Instant) -> Result<Option<Seen>, NetError>;
}

impl Arrivals for PortWatch {
    fn next(&mut self, until: Instant) -> Result<Option<Seen>, NetError> {
        PortWatch::next(self, until)
    }
}

/// Watches the local port on a thread: segments from the peer are passed on, strangers are logged
/// and nothing else happens to them (the firewall or the kernel refuses them, nothing is relayed).
fn spawn_watch(
    watch: impl Arrivals + Send + 'static,
    peer: SocketAddrV6,
    ev: Events,
    proto: Proto,
) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || sort_arrivals(watch, peer, ev, proto, &tx));
    rx
}

/// Passes the peer's segments to `tx` and reports the others as strangers, until the source
/// fails or ends.
fn sort_arrivals(
    mut watch: impl Arrivals,
    peer: SocketAddrV6,
    ev: Events,
    proto: Proto,
    tx: &mpsc::Sender<Seen>,
) {
    loop {
        match watch.next(Instant::now() + Duration::from_secs(3600)) {
            Ok(Some(seen)) if seen.src.ip() == peer.ip() && seen.src.port() == peer.port() => {
                if tx.send(seen).is_err() {
                    // The session no longer waits for the peer; keep logging strangers.
                }
            }
            Ok(Some(seen)) => stranger(
                ev,
                proto,
                Some(std::net::SocketAddr::V6(seen.src)),
                &format!("ignored {}", proto.name()),
            ),
            Ok(None) => {}
            Err(e) => {
                log::warn!(
                    "stopped watching the local port: {}",
                    crate::with_causes(&e)
                );
                return;
            }
        }
    }
}

/// Waits in poll() until `fd` is readable or `until` has passed; true when readable.
fn readable(fd: BorrowedFd<'_>, until: Instant) -> std::io::Result<bool> {
    let left = until.saturating_duration_since(Instant::now());
    Ok(crate::net::poll_one(fd, libc::POLLIN, Some(left))? != 0)
}

/// Something from an address that is not the peer was turned away.
fn stranger(ev: Events, proto: Proto, from: Option<std::net::SocketAddr>, what: &str) {
    let from = from.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
    ev.emit(
        "stranger",
        &format!("{what} from {from}: not the peer"),
        json!({ "proto": proto, "from": from }),
    );
}

fn connected(ev: Events, peer: SocketAddrV6, proto: Proto) {
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

#[cfg(test)]
mod tests {
    //! The session's waiting and sorting with a scripted clock and scripted arrivals.
    use std::cell::{Cell, RefCell};

    use super::*;

    const QUIET: Events = Events {
        json: false,
        quiet: true,
    };

    /// A clock that moves only when a poll waits: each poll that finds nothing advances it to
    /// the time it was given (as a real wait would), counting the polls.
    struct Scripted {
        t: Cell<Instant>,
        polls: Cell<u32>,
        punches: RefCell<Vec<Duration>>,
    }

    impl Scripted {
        fn new() -> Self {
            Scripted {
                t: Cell::new(Instant::now()),
                polls: Cell::new(0),
                punches: RefCell::new(Vec::new()),
            }
        }

        /// Runs `w` with a peer that comes on poll `arrives` (None: never).
        fn run(&self, w: &Waiting, arrives: Option<u32>) -> Result<u32, WaitError> {
            let start = self.t.get();
            w.run(
                &|| self.t.get(),
                |until| {
                    self.polls.set(self.polls.get() + 1);
                    if Some(self.polls.get()) == arrives {
                        return Ok(Some(self.polls.get()));
                    }
                    self.t.set(until);
                    Ok(None)
                },
                || {
                    self.punches.borrow_mut().push(self.t.get() - start);
                    Ok(())
                },
            )
        }
    }

    /// The punch goes out again every interval while the session waits, and the waiting ends
    /// when the peer comes.
    #[test]
    fn repunches_at_each_interval_until_the_peer_comes() {
        let c = Scripted::new();
        let w = Waiting {
            timeout: None,
            repunch: Some(Duration::from_secs(25)),
        };
        assert_eq!(c.run(&w, Some(4)).unwrap(), 4);
        let s = Duration::from_secs;
        assert_eq!(*c.punches.borrow(), [s(25), s(50), s(75)]);
    }

    /// The timeout ends the waiting with the time waited, and re-punches due before it went out.
    #[test]
    fn times_out_after_the_re_punches_due_before() {
        let c = Scripted::new();
        let w = Waiting {
            timeout: Some(Duration::from_secs(60)),
            repunch: Some(Duration::from_secs(25)),
        };
        let e = c.run(&w, None).unwrap_err();
        assert!(matches!(e, WaitError::TimedOut(t) if t == Duration::from_secs(60)));
        let s = Duration::from_secs;
        assert_eq!(*c.punches.borrow(), [s(25), s(50)]);
        // Polled until each re-punch, then until the timeout: no busy loop.
        assert_eq!(c.polls.get(), 3);
    }

    /// Without re-punching the waiting polls once until the timeout.
    #[test]
    fn without_repunch_polls_once_until_the_timeout() {
        let c = Scripted::new();
        let w = Waiting {
            timeout: Some(Duration::from_secs(5)),
            repunch: None,
        };
        assert!(matches!(c.run(&w, None), Err(WaitError::TimedOut(_))));
        assert_eq!((c.polls.get(), c.punches.borrow().len()), (1, 0));
    }

    /// A poll that fails ends the waiting with its error, and so does a punch that fails.
    #[test]
    fn a_failed_poll_or_punch_ends_the_waiting() {
        let w = Waiting {
            timeout: None,
            repunch: Some(Duration::from_millis(1)),
        };
        let r: Result<(), _> = w.run(&Instant::now, |_| anyhow::bail!("poll broke"), || Ok(()));
        assert!(matches!(r, Err(WaitError::Failed(e)) if e.to_string() == "poll broke"));
        let t = Cell::new(Instant::now());
        let r: Result<(), _> = w.run(
            &|| t.get(),
            |until| {
                t.set(until);
                Ok(None)
            },
            || anyhow::bail!("punch broke"),
        );
        assert!(matches!(r, Err(WaitError::Failed(e)) if e.to_string() == "punch broke"));
    }

    /// Segments from the peer's address and port are passed on; the same address from another
    /// port, or another address, is a stranger and is not.
    #[test]
    fn only_the_peers_segments_are_passed_on() {
        struct Script(Vec<SocketAddrV6>);
        impl Arrivals for Script {
            fn next(&mut self, _: Instant) -> Result<Option<Seen>, NetError> {
                match self.0.pop() {
                    Some(src) => Ok(Some(Seen { src, tcp: None })),
                    None => Err(NetError::io(
                        "script",
                        SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0),
                        std::io::Error::other("over"),
                    )),
                }
            }
        }
        use std::net::Ipv6Addr;
        let at = |a: &str, p| SocketAddrV6::new(a.parse().unwrap(), p, 0, 0);
        let peer = at(crate::fixtures::B, 5555);
        let (tx, rx) = mpsc::channel();
        let arrivals = vec![
            at(crate::fixtures::B, 5556),
            peer,
            at("2001:db8:2::6", 5555),
            peer,
        ];
        sort_arrivals(Script(arrivals), peer, QUIET, Proto::Udp, &tx);
        drop(tx);
        assert_eq!(rx.iter().map(|s| s.src).collect::<Vec<_>>(), [peer, peer]);
    }
}
