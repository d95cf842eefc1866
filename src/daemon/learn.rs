//! The daemon's route memory at work: the punches it sent lately, the raw sockets that see the
//! answers from the peer's side (a TCP RST, an SCTP ABORT, an ICMPv6 rejection from outside the
//! local site: the SocketSynergy draft's sign of a hop limit too high) and what they teach the
//! route memory (`routes`): that route's maximum becomes one below the refused hop limit. Only
//! auto punches teach (a caller that fixes its hop limit cannot aim refusals at the memory), and
//! no lesson goes below what is known to cross the local firewalls. Does I/O.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::net::rawrecv::{RawPoll, RawReceiver};
use crate::net::{NetError, route};
use crate::param::Prefix;
use crate::reply::{Fate, ProbeKey, match_reply};
use crate::routes::store::Memory;
use crate::routes::{Lesson, Source};
use crate::wire::icmpv6::{IcmpErrorRepr, QuotedTransport};
use crate::wire::ipv6::proto;
use crate::wire::probe::ProbeRepr;

/// How long after a punch an answer to it is taken as one.
const ANSWER_WINDOW: Duration = Duration::from_secs(5);
/// The most punches remembered for answers (the oldest are forgotten first).
const RECENT_MAX: usize = 65_536;

/// A punch's flow as an answer names it: the peer's address, the protocol, the local port and the
/// peer's port.
type FlowTuple = (Ipv6Addr, u8, u16, u16);

/// The auto punches of the last [`ANSWER_WINDOW`], by flow: the latest of each (a kept flow's
/// repunches are one probe), found by one hash lookup per arriving packet.
#[derive(Default)]
struct Recent {
    by_flow: HashMap<FlowTuple, (Instant, ProbeKey, u8)>,
    order: VecDeque<(Instant, FlowTuple)>,
}

impl Recent {
    fn note(&mut self, key: ProbeKey, hop: u8, now: Instant) {
        while let Some(&(t, f)) = self.order.front() {
            if now.duration_since(t) <= ANSWER_WINDOW && self.order.len() < RECENT_MAX {
                break;
            }
            self.order.pop_front();
            if self.by_flow.get(&f).is_some_and(|(u, _, _)| *u == t) {
                self.by_flow.remove(&f);
            }
        }
        let f = (key.dst, key.proto, key.sport, key.dport);
        self.by_flow.insert(f, (now, key, hop));
        self.order.push_back((now, f));
    }

    fn find(&self, f: &FlowTuple, now: Instant) -> Option<(ProbeKey, u8)> {
        self.by_flow
            .get(f)
            .filter(|(t, _, _)| now.duration_since(*t) <= ANSWER_WINDOW)
            .map(|(_, k, h)| (*k, *h))
    }
}

/// The flow an arriving packet would answer: from an ICMPv6 error's quote, or from a transport
/// header's ports (the packet comes from the peer to the local port). None for anything else.
fn answered_flow(p: &crate::net::rawrecv::Packet<'_>) -> Option<FlowTuple> {
    if p.proto == proto::ICMPV6 {
        let q = IcmpErrorRepr::parse(p.bytes).ok()?.quote?;
        let (sport, dport) = match q.transport? {
            QuotedTransport::Tcp {
                src_port, dst_port, ..
            }
            | QuotedTransport::Udp {
                src_port, dst_port, ..
            }
            | QuotedTransport::Sctp {
                src_port, dst_port, ..
            } => (src_port, dst_port),
        };
        return Some((q.dst, q.next_header, sport, dport));
    }
    let ports = p.bytes.get(0..4)?;
    let (peer_port, local_port) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    Some((p.from, p.proto, local_port, peer_port))
}

/// What is told of a refused auto punch: its key and the most its route now allows.
type OnRefused = Box<dyn Fn(&ProbeKey, u8) + Send + Sync>;

/// The route memory, the auto punches the daemon sent lately, and what it learnt.
pub struct Learner {
    memory: Mutex<Memory>,
    recent: Mutex<Recent>,
    /// The daemon's `--min-hop`: no lesson lowers a maximum below it.
    floor: u8,
    pub learnt: AtomicU64,
    /// Unix second until which answers not learnt are not logged again.
    quiet_until: AtomicU64,
    /// Told of a refused punch and the route's maximum now (the keeper lowers the flow).
    on_refused: std::sync::OnceLock<OnRefused>,
}

impl Learner {
    pub fn new(memory: Memory, floor: u8) -> Self {
        Learner {
            memory: Mutex::new(memory),
            recent: Mutex::default(),
            floor,
            learnt: AtomicU64::new(0),
            quiet_until: AtomicU64::new(0),
            on_refused: std::sync::OnceLock::new(),
        }
    }

    /// Sets what is told of a refused auto punch and the most its route now allows (once).
    pub fn on_refused(&self, f: impl Fn(&ProbeKey, u8) + Send + Sync + 'static) {
        let _ = self.on_refused.set(Box::new(f));
    }

    pub fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers an auto punch sent, for the answers to it. (A punch whose hop limit the caller
    /// fixed teaches nothing: a caller must not be able to aim refusals at the route memory.)
    pub fn sent(&self, repr: &ProbeRepr) {
        if let Ok((_, checksum)) = repr.to_bytes() {
            self.sent_key(ProbeKey::of(repr, checksum), repr.ip.hop_limit);
        }
    }

    /// Remembers an auto punch sent by its key and hop limit (the keeper's, built once).
    pub fn sent_key(&self, key: ProbeKey, hop_limit: u8) {
        let now = Instant::now();
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(key, hop_limit, now);
    }

    /// What one packet teaches, if it answers a recent auto punch from the peer's side: the
    /// source of the lesson, and the punch's key and hop limit.
    fn lesson(&self, p: &crate::net::rawrecv::Packet<'_>) -> Option<(Source, ProbeKey, u8)> {
        let flow = answered_flow(p)?;
        let (key, hop) = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .find(&flow, Instant::now())?;
        // The whole answer is checked against the one punch it names (sequence number, tag,
        // checksum in the quote).
        let arrived = p.arrived(key.src);
        let (_, fate) = match_reply(&[key], &arrived)?;
        // An ICMPv6 error quotes what was left of the hop limit where it was refused: never more
        // than the punch had. (A caller's own datagram of the same flow, sent farther, is not the
        // punch, however alike.)
        if p.proto == proto::ICMPV6
            && IcmpErrorRepr::parse(p.bytes)
                .ok()
                .and_then(|r| r.quote)
                .is_none_or(|q| q.hop_limit > hop)
        {
            return None;
        }
        let source = match fate {
            Fate::Reset { .. } => Source::Reset,
            Fate::Aborted { .. } => Source::Abort,
            f @ (Fate::Unreachable { .. } | Fate::ParamProblem { .. })
                if f.reached_peer_side(&Prefix::default_site(key.src, key.dst)) =>
            {
                Source::Prohibited
            }
            _ => return None,
        };
        Some((source, key, hop))
    }

    /// Learns from one packet; logs what was learnt.
    fn learn(&self, p: &crate::net::rawrecv::Packet<'_>) {
        let Some((source, key, hop)) = self.lesson(p) else {
            return;
        };
        let route = match route::route_key(key.dst, 0) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "a punch to {} was refused ({}), but its route could not be looked up: {}",
                    key.dst,
                    source.name(),
                    crate::with_causes(&e)
                );
                return;
            }
        };
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // What the answer would teach is worked out on a copy first: the file is written (and
        // the lock taken) only when a maximum is really lowered.
        let mut memory = self.memory();
        let lesson = match memory.table() {
            Ok(t) => t
                .clone()
                .learn_refusal(&route, key.dst, hop, source, at, self.floor),
            Err(e) => {
                log::warn!("route learner: {}", crate::with_causes(&e));
                return;
            }
        };
        let what = format!(
            "route {route}: auto hop limit {hop} toward {} was refused ({} from {})",
            key.dst,
            source.name(),
            p.from
        );
        let taught = matches!(lesson, Lesson::Lowered(_) | Lesson::Known);
        match lesson {
            Lesson::Lowered(_) => {
                let mut now = Lesson::Known;
                match memory.update(|t| {
                    now = t.learn_refusal(&route, key.dst, hop, source, at, self.floor);
                }) {
                    Ok(_) => {
                        self.learnt.fetch_add(1, Ordering::Relaxed);
                        if let Lesson::Lowered(range) = now {
                            log::info!("{what}; the route's range is now {range}");
                        }
                    }
                    Err(e) => log::warn!(
                        "could not remember what a refused punch taught: {}",
                        crate::with_causes(&e)
                    ),
                }
            }
            Lesson::Known => {}
            other => {
                let why = match other {
                    Lesson::Contradicts(min) => format!(
                        "{} ({}) is known to be needed there (a destination nearer than the firewalls, or a forged answer)",
                        min.value,
                        min.from.name()
                    ),
                    Lesson::BelowFloor(floor) => {
                        format!("the maximum would fall below --min-hop {floor}")
                    }
                    _ => "nothing is known of the local side toward it".to_string(),
                };
                // At most one such line a second: a caller can cause them at will.
                let now = at;
                if self.quiet_until.swap(now + 1, Ordering::Relaxed) <= now {
                    log::warn!("{what}: not learnt, {why}");
                }
            }
        }
        // The refused flow, if kept, is sent lower from now on: the remote firewall must not go
        // on seeing it.
        if taught
            && let Ok(t) = memory.table()
            && let Some(max) = t.range_for(&route, key.dst).max
            && max.value < hop
            && let Some(f) = self.on_refused.get()
        {
            f(&key, max.value);
        }
    }
}

/// The raw sockets that see answers to punches on every local address: ICMPv6 (destination
/// unreachable and parameter problems only, ICMP6_FILTER), TCP (RSTs only, a socket filter) and
/// SCTP. Opened while the daemon still has CAP_NET_RAW.
pub fn open_watch() -> Result<RawPoll, NetError> {
    let any = std::net::Ipv6Addr::UNSPECIFIED;
    let icmp = RawReceiver::open(proto::ICMPV6, any, 0)?;
    icmp.pass_only_icmp(&[1, 4])?;
    let tcp = RawReceiver::open(proto::TCP, any, 0)?;
    tcp.pass_only_tcp_resets()?;
    let mut receivers = vec![icmp, tcp];
    // A kernel without SCTP still has raw SCTP sockets; if not, ABORTs are not learnt from.
    match RawReceiver::open(proto::SCTP, any, 0).and_then(|s| s.pass_only_sctp_aborts().map(|()| s))
    {
        Ok(s) => receivers.push(s),
        Err(e) => log::info!("not watching for SCTP ABORTs: {}", crate::with_causes(&e)),
    }
    Ok(RawPoll::new(receivers))
}

/// Starts the thread that learns from answers (it holds no capability).
pub fn start(mut poll: RawPoll, learner: Arc<Learner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("route-learner".into())
        .spawn(move || {
            if let Err(e) = crate::net::privilege::drop_all() {
                log::error!(
                    "the route learner could not give up its capabilities: {}",
                    crate::with_causes(&e)
                );
                return;
            }
            loop {
                match poll.next(Instant::now() + Duration::from_secs(3600)) {
                    Ok(Some(p)) => learner.learn(&p),
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("route learner: {}", crate::with_causes(&e));
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .map(|_| ())
}
