//! The daemon's route memory at work: the punches it sent lately, the raw sockets that see the
//! answers from the peer's side (a TCP RST, an SCTP ABORT, an ICMPv6 rejection from outside the
//! local site: the SocketSynergy draft's sign of a hop limit too high) and what they teach the
//! route memory (`routes`): that route's maximum becomes one below the refused hop limit. Does
//! I/O.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::net::rawrecv::{RawPoll, RawReceiver};
use crate::net::{NetError, route};
use crate::param::Prefix;
use crate::reply::{Arrived, Fate, ProbeKey, match_reply};
use crate::routes::Source;
use crate::routes::store::Memory;
use crate::wire::ipv6::proto;
use crate::wire::probe::ProbeRepr;

/// How long after a punch an answer to it is taken as one.
const ANSWER_WINDOW: Duration = Duration::from_secs(5);
/// The most punches remembered for answers (the oldest are forgotten first).
const RECENT_MAX: usize = 65_536;

/// The route memory, what the daemon sent lately, and what it learnt.
pub struct Learner {
    memory: Mutex<Memory>,
    recent: Mutex<VecDeque<(Instant, ProbeKey, u8)>>,
    pub learnt: AtomicU64,
}

impl Learner {
    pub fn new(memory: Memory) -> Self {
        Learner {
            memory: Mutex::new(memory),
            recent: Mutex::default(),
            learnt: AtomicU64::new(0),
        }
    }

    pub fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a punch sent, for the answers to it.
    pub fn sent(&self, repr: &ProbeRepr) {
        if let Ok((_, checksum)) = repr.to_bytes() {
            self.sent_key(ProbeKey::of(repr, checksum), repr.ip.hop_limit);
        }
    }

    /// Remembers a punch sent by its key and hop limit (the keeper's, built once).
    pub fn sent_key(&self, key: ProbeKey, hop_limit: u8) {
        let now = Instant::now();
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        while r
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > ANSWER_WINDOW)
            || r.len() >= RECENT_MAX
        {
            r.pop_front();
        }
        r.push_back((now, key, hop_limit));
    }

    fn recent(&self) -> Vec<(ProbeKey, u8)> {
        let now = Instant::now();
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= ANSWER_WINDOW)
            .map(|(_, k, h)| (*k, *h))
            .collect()
    }

    /// What one packet teaches, if it answers a recent punch from the peer's side: the source
    /// of the lesson, and the punch's key and hop limit.
    fn lesson(&self, p: &crate::net::rawrecv::Packet<'_>) -> Option<(Source, ProbeKey, u8)> {
        let sent = self.recent();
        if sent.is_empty() {
            return None;
        }
        let keys: Vec<ProbeKey> = sent.iter().map(|(k, _)| *k).collect();
        let found = if p.proto == proto::ICMPV6 {
            match_reply(
                &keys,
                &Arrived::Icmp {
                    from: p.from,
                    msg: p.bytes,
                },
            )
        } else {
            // The raw sockets listen on every address: try each local address punched from.
            let mut srcs: Vec<_> = keys.iter().map(|k| k.src).collect();
            srcs.sort();
            srcs.dedup();
            srcs.into_iter().find_map(|to| {
                match_reply(
                    &keys,
                    &Arrived::Transport {
                        proto: p.proto,
                        from: p.from,
                        to,
                        bytes: p.bytes,
                    },
                )
            })
        }?;
        let (i, fate) = found;
        let (key, hop) = sent[i];
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
        let mut changed = None;
        let written = self
            .memory()
            .update(|t| {
                changed = t.learn_refusal(&route, hop, source, at);
            })
            .map(|_| ());
        match (written, changed) {
            (Ok(_), Some(range)) => {
                self.learnt.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "route {route}: hop limit {hop} toward {} was refused ({} from {}); the route's range is now {range}",
                    key.dst,
                    source.name(),
                    p.from
                );
            }
            (Ok(_), None) => {}
            (Err(e), _) => log::warn!(
                "could not remember what a refused punch taught: {}",
                crate::with_causes(&e)
            ),
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
    match RawReceiver::open(proto::SCTP, any, 0) {
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
