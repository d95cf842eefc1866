//! The keeper: keeps punched holes open, as the SocketSynergy draft asks ("the hole must be
//! actively kept open"), by punching each kept flow again before the firewalls' conntrack timeout
//! for it ends, at a jittered interval so that thousands of flows never go out in one burst, until
//! its socket is closed or its caller lets go. The schedule (`Keeper`) is pure and runs on a clock
//! the caller passes; `serve` is the loop that asks the kernel and sends, through two closures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddrV6;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::punch::check::Proto;

/// How long the local firewalls keep an unanswered flow: the keeper punches again within
/// [1/2, 3/4] of it. Defaults are Linux's (`nf_conntrack_udp_timeout` 30 s,
/// `nf_conntrack_tcp_timeout_syn_sent` 120 s, `nf_conntrack_sctp_timeout_cookie_wait` 3 s); a
/// firewall with shorter ones needs them set (`daemon --conntrack-timeout udp=5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub udp: Duration,
    pub tcp: Duration,
    pub sctp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            udp: Duration::from_secs(30),
            tcp: Duration::from_secs(120),
            sctp: Duration::from_secs(3),
        }
    }
}

impl Timeouts {
    /// Sets one timeout from `PROTO=DURATION` (udp, tcp or sctp; 1 s to a day, as humantime
    /// writes durations, or seconds as a number): `daemon --conntrack-timeout`, and for a
    /// program's own keeper `$SYNERGY_CONNTRACK_TIMEOUT` (a comma-separated list). None when the
    /// text is not one.
    pub fn set(&mut self, item: &str) -> Option<()> {
        let (proto, d) = item.trim().split_once('=')?;
        let d = match d.trim().parse::<f64>() {
            Ok(s) if (1.0..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
            Ok(_) => return None,
            Err(_) => humantime::parse_duration(d.trim()).ok()?,
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&d) {
            return None;
        }
        match proto.trim().parse::<Proto>().ok()? {
            Proto::Udp => self.udp = d,
            Proto::Tcp => self.tcp = d,
            Proto::Sctp => self.sctp = d,
        }
        Some(())
    }

    /// Linux's defaults with `$SYNERGY_CONNTRACK_TIMEOUT` applied (not in setuid/setgid
    /// programs): a program's own keeper, facing firewalls whose timeouts are shorter. An item
    /// that is not `PROTO=DURATION` is logged and left out.
    pub fn from_env() -> Self {
        let mut t = Timeouts::default();
        if let Some(list) = crate::daemon::client::secure_env("SYNERGY_CONNTRACK_TIMEOUT") {
            for item in list.split(',').filter(|i| !i.trim().is_empty()) {
                if t.set(item).is_none() {
                    log::warn!(
                        "$SYNERGY_CONNTRACK_TIMEOUT: {item:?} is not PROTO=DURATION (udp, tcp or sctp; 1s to 1d): left out"
                    );
                }
            }
        }
        t
    }

    pub fn of(&self, proto: Proto) -> Duration {
        match proto {
            Proto::Udp => self.udp,
            Proto::Tcp => self.tcp,
            Proto::Sctp => self.sctp,
        }
    }
}

/// A kept flow: the socket (by its SO_COOKIE, never held open), whose it is (the uid, and the
/// process that asked: its flows end when it exits), and what to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub cookie: u64,
    pub uid: u32,
    /// The group that admitted the caller, charged for the flow too (None: admitted as a uid).
    pub group: Option<u32>,
    pub pid: i32,
    pub proto: Proto,
    pub local: SocketAddrV6,
    pub peer: SocketAddrV6,
    pub hop_limit: u8,
    /// The hop limit was auto's choice (the route memory's): answers to its punches teach it.
    pub auto: bool,
}

/// A kept flow's probe, built once when the flow is kept: its bytes as sent, and the key the
/// answers to it are matched by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub bytes: Box<[u8]>,
    pub key: crate::reply::ProbeKey,
}

/// Whom a kept flow is charged to: its uid, and the group that admitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charge {
    Uid(u32),
    Group(u32),
}

/// A kept flow's identity: its socket and its peer (one UDP socket may keep many peers).
pub type FlowKey = (u64, SocketAddrV6);

impl Kept {
    pub fn key(&self) -> FlowKey {
        (self.cookie, self.peer)
    }

    fn charges(&self) -> impl Iterator<Item = Charge> {
        std::iter::once(Charge::Uid(self.uid)).chain(self.group.map(Charge::Group))
    }
}

/// What became of a due flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Punched again.
    Punched,
    /// The punch failed (the kernel refused the send); tried again at the next interval.
    Failed,
    /// Its socket is gone (closed, or no longer bound or connected for this peer): it ends.
    Gone,
}

/// Counters of the keeper since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub kept: u64,
    pub repunches: u64,
    pub failed: u64,
    pub ended_gone: u64,
    pub ended_asked: u64,
    pub ended_exited: u64,
}

/// One kept flow as `status` shows it.
#[derive(Debug, Clone, Copy)]
pub struct FlowState {
    pub flow: Kept,
    pub last: Instant,
    pub next: Instant,
    pub punches: u64,
}

struct Entry {
    flow: Kept,
    probe: Arc<Probe>,
    last: Instant,
    next: Instant,
    punches: u64,
    /// Which schedule entry is current (an older one left in the heap is skipped).
    generation: u64,
    /// Taken by `take_due` and not yet settled.
    busy: bool,
}

/// The schedule of every kept flow. Pure: time comes in as `now`.
pub struct Keeper {
    timeouts: Timeouts,
    entries: HashMap<FlowKey, Entry>,
    due: BinaryHeap<Reverse<(Instant, u64, FlowKey)>>,
    charged: HashMap<Charge, usize>,
    generation: u64,
    rng: u64,
    pub counters: Counters,
}

impl Keeper {
    pub fn new(timeouts: Timeouts, seed: u64) -> Self {
        Keeper {
            timeouts,
            entries: HashMap::new(),
            due: BinaryHeap::new(),
            charged: HashMap::new(),
            generation: 0,
            rng: seed | 1,
            counters: Counters::default(),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The wait before a flow's next punch: uniform in [1/2, 3/4] of its protocol's timeout, so
    /// that a lost punch still leaves a quarter of the timeout and flows kept together spread.
    fn interval(&mut self, proto: Proto) -> Duration {
        // xorshift64*: enough to spread the punches; nothing depends on its secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let u = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        self.timeouts.of(proto).mul_f64(0.5 + 0.25 * u)
    }

    fn schedule(&mut self, key: FlowKey, at: Instant) {
        self.generation += 1;
        let g = self.generation;
        if let Some(e) = self.entries.get_mut(&key) {
            e.next = at;
            e.generation = g;
            e.busy = false;
            self.due.push(Reverse((at, g, key)));
        }
    }

    /// Starts keeping `flow` with `probe`, whose first punch was just sent (the request's own);
    /// keeping the same socket and peer again replaces the older entry (its hop limit, its owner).
    pub fn add(&mut self, flow: Kept, probe: Arc<Probe>, now: Instant) {
        let key = flow.key();
        if let Some(old) = self.entries.remove(&key) {
            self.release(&old.flow);
        } else {
            self.counters.kept += 1;
        }
        for c in flow.charges() {
            *self.charged.entry(c).or_default() += 1;
        }
        self.entries.insert(
            key,
            Entry {
                flow,
                probe,
                last: now,
                next: now,
                punches: 1,
                generation: 0,
                busy: false,
            },
        );
        let at = now + self.interval(flow.proto);
        self.schedule(key, at);
    }

    fn release(&mut self, flow: &Kept) {
        for c in flow.charges() {
            if let Some(n) = self.charged.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    self.charged.remove(&c);
                }
            }
        }
    }

    /// Stops keeping a flow of `uid` (a caller lets go only of its own); whether it was kept.
    pub fn remove(&mut self, key: FlowKey, uid: u32) -> bool {
        match self.entries.get(&key) {
            Some(e) if e.flow.uid == uid => {
                if let Some(e) = self.entries.remove(&key) {
                    self.release(&e.flow);
                }
                self.counters.ended_asked += 1;
                true
            }
            _ => false,
        }
    }

    /// Ends every flow the process `pid` asked for (it has exited); how many there were.
    pub fn remove_process(&mut self, pid: i32) -> usize {
        let gone: Vec<Kept> = self
            .entries
            .values()
            .filter(|e| e.flow.pid == pid)
            .map(|e| e.flow)
            .collect();
        for f in &gone {
            self.entries.remove(&f.key());
            self.release(f);
        }
        self.counters.ended_exited += gone.len() as u64;
        gone.len()
    }

    /// A refusal from the peer's side taught that `max` is the most toward `peer`: every kept
    /// auto flow from `local` to `peer` of `proto` sent higher gets `max` and the probe `rebuild`
    /// makes for it, so that the remote firewall does not see it again. A flow being punched
    /// right now is left (its next refusal lowers it). How many were lowered.
    pub fn lower(
        &mut self,
        local: SocketAddrV6,
        peer: SocketAddrV6,
        proto: Proto,
        max: u8,
        rebuild: impl Fn(&Kept) -> Option<Probe>,
    ) -> usize {
        let mut n = 0;
        for e in self.entries.values_mut() {
            let f = e.flow;
            if f.auto
                && !e.busy
                && f.hop_limit > max
                && f.proto == proto
                && f.local.ip() == local.ip()
                && f.local.port() == local.port()
                && f.peer.ip() == peer.ip()
                && f.peer.port() == peer.port()
            {
                let lowered = Kept {
                    hop_limit: max,
                    ..f
                };
                if let Some(p) = rebuild(&lowered) {
                    e.flow = lowered;
                    e.probe = Arc::new(p);
                    n += 1;
                }
            }
        }
        n
    }

    pub fn is_kept(&self, key: FlowKey) -> bool {
        self.entries.contains_key(&key)
    }

    /// How many flows are charged to a uid or a group.
    pub fn count_of(&self, c: Charge) -> usize {
        self.charged.get(&c).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// When the next flow is due (None: nothing kept).
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, g, key))) = self.due.peek().copied() {
            match self.entries.get(&key) {
                Some(e) if e.generation == g && !e.busy => return Some(at),
                _ => {
                    self.due.pop();
                }
            }
        }
        None
    }

    /// Takes every flow due by `now + slack` (punching a little early lets one wake-up serve
    /// the flows due close together): each must be settled with [`Keeper::settle`].
    pub fn take_due(&mut self, now: Instant, slack: Duration) -> Vec<(Kept, Arc<Probe>)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, g, key))) = self.due.peek().copied() {
            if at > now + slack {
                break;
            }
            self.due.pop();
            if let Some(e) = self.entries.get_mut(&key)
                && e.generation == g
                && !e.busy
            {
                e.busy = true;
                out.push((e.flow, Arc::clone(&e.probe)));
            }
        }
        out
    }

    /// Records what became of a flow taken by [`Keeper::take_due`]: punched or failed, it is due
    /// again after a fresh interval; gone, it ends. A flow let go or replaced meanwhile is left
    /// as it is.
    pub fn settle(&mut self, flow: &Kept, outcome: Outcome, now: Instant) {
        let key = flow.key();
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if !e.busy || e.flow != *flow {
            return;
        }
        match outcome {
            Outcome::Gone => {
                self.entries.remove(&key);
                self.release(flow);
                self.counters.ended_gone += 1;
            }
            Outcome::Punched | Outcome::Failed => {
                if outcome == Outcome::Punched {
                    e.last = now;
                    e.punches += 1;
                    self.counters.repunches += 1;
                } else {
                    self.counters.failed += 1;
                }
                let at = now + self.interval(flow.proto);
                self.schedule(key, at);
            }
        }
    }

    /// Every kept flow (of `uid`, or all), for `status`.
    pub fn flows(&self, uid: Option<u32>) -> Vec<FlowState> {
        let mut v: Vec<FlowState> = self
            .entries
            .values()
            .filter(|e| uid.is_none_or(|u| e.flow.uid == u))
            .map(|e| FlowState {
                flow: e.flow,
                last: e.last,
                next: e.next,
                punches: e.punches,
            })
            .collect();
        v.sort_by_key(|f| (f.flow.local, f.flow.peer, f.flow.cookie));
        v
    }
}

/// A keeper shared by the threads that add flows and the one that punches.
#[derive(Clone)]
pub struct Shared(Arc<(Mutex<Keeper>, Condvar)>);

impl Shared {
    pub fn new(k: Keeper) -> Self {
        Shared(Arc::new((Mutex::new(k), Condvar::new())))
    }

    pub fn lock(&self) -> MutexGuard<'_, Keeper> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a flow and wakes the punching thread (its next wake-up may now be earlier).
    pub fn add(&self, flow: Kept, probe: Probe, now: Instant) {
        self.lock().add(flow, Arc::new(probe), now);
        self.0.1.notify_all();
    }
}

/// How long one wake-up may reach ahead: flows due within it are punched together.
pub const SLACK: Duration = Duration::from_millis(50);

/// The keeper's loop, for ever: sleeps until a flow is due, then asks `alive` whether the due
/// flows' sockets still exist (never holding them: by their cookies; one answer per flow, in
/// order) and sends `punch` for each that does, both without the lock, so that adding and
/// `status` never wait for the kernel.
pub fn serve(
    keeper: &Shared,
    mut alive: impl FnMut(&[Kept]) -> Vec<std::io::Result<bool>>,
    mut punch: impl FnMut(&Kept, &Probe) -> bool,
) -> ! {
    loop {
        let due = {
            let mut k = keeper.lock();
            loop {
                let now = Instant::now();
                match k.next_due() {
                    Some(at) if at <= now + SLACK => break k.take_due(now, SLACK),
                    Some(at) => {
                        k = keeper
                            .0
                            .1
                            .wait_timeout(k, at - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None => k = keeper.0.1.wait(k).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        let flows: Vec<Kept> = due.iter().map(|(f, _)| *f).collect();
        let mut answers = alive(&flows).into_iter();
        let outcomes: Vec<(Kept, Outcome)> = due
            .into_iter()
            .map(|(f, probe)| {
                let outcome = match answers.next() {
                    Some(Ok(false)) => Outcome::Gone,
                    Some(Ok(true)) if punch(&f, &probe) => Outcome::Punched,
                    Some(Ok(true)) => Outcome::Failed,
                    // The kernel could not be asked: nothing is sent for a socket not seen.
                    Some(Err(e)) => {
                        log::warn!("keeper: asking the kernel for a kept socket: {e}");
                        Outcome::Failed
                    }
                    None => Outcome::Failed,
                };
                (f, outcome)
            })
            .collect();
        let now = Instant::now();
        let mut k = keeper.lock();
        for (f, o) in &outcomes {
            k.settle(f, *o, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(i: u16, uid: u32) -> Kept {
        Kept {
            cookie: u64::from(i) + 1,
            uid,
            group: Some(4242),
            pid: 100 + i32::from(i % 2),
            proto: Proto::Udp,
            local: SocketAddrV6::new("2001:db8:1::11".parse().unwrap(), 4000 + i, 0, 0),
            peer: SocketAddrV6::new("2001:db8:2::5".parse().unwrap(), 5000, 0, 0),
            hop_limit: 2,
            auto: false,
        }
    }

    fn probe() -> Arc<Probe> {
        let repr = crate::fixtures::udp_probe(4000, 2);
        let (bytes, checksum) = repr.to_bytes().unwrap();
        Arc::new(Probe {
            bytes: bytes.into(),
            key: crate::reply::ProbeKey::of(&repr, checksum),
        })
    }

    fn timeouts(udp: u64) -> Timeouts {
        Timeouts {
            udp: Duration::from_secs(udp),
            ..Timeouts::default()
        }
    }

    /// Runs the keeper on a scripted clock in steps of `step`, every socket alive unless in
    /// `gone`; returns, per flow, the times it was punched (the first punch at `add`).
    fn run(
        k: &mut Keeper,
        start: Instant,
        until: Duration,
        step: Duration,
        gone: &dyn Fn(&Kept, Duration) -> bool,
    ) -> HashMap<FlowKey, Vec<Duration>> {
        let mut punched: HashMap<FlowKey, Vec<Duration>> = HashMap::new();
        let mut t = Duration::ZERO;
        while t <= until {
            let now = start + t;
            for (f, _) in k.take_due(now, SLACK) {
                let o = if gone(&f, t) {
                    Outcome::Gone
                } else {
                    punched.entry(f.key()).or_default().push(t);
                    Outcome::Punched
                };
                k.settle(&f, o, now);
            }
            t += step;
        }
        punched
    }

    #[test]
    fn timeouts_are_read_as_written_and_nothing_else() {
        let mut t = Timeouts::default();
        assert_eq!(t.set("udp=5s"), Some(()));
        assert_eq!(t.set(" tcp = 90 "), Some(()));
        assert_eq!(
            (t.udp, t.tcp),
            (Duration::from_secs(5), Duration::from_secs(90))
        );
        for bad in [
            "udp=0",
            "udp=0s",
            "udp",
            "foo=5s",
            "udp=2d",
            "=5s",
            "udp=500ms",
        ] {
            assert_eq!(t.set(bad), None, "{bad}");
        }
        assert_eq!(t.sctp, Timeouts::default().sctp);
    }

    #[test]
    fn every_flow_is_punched_again_before_its_timeout_and_not_much_earlier() {
        let mut k = Keeper::new(timeouts(5), 7);
        let start = Instant::now();
        for i in 0..1000 {
            k.add(flow(i, 1000), probe(), start);
        }
        let step = Duration::from_millis(10);
        let p = run(&mut k, start, Duration::from_secs(60), step, &|_, _| false);
        assert_eq!(p.len(), 1000);
        for times in p.values() {
            let mut last = Duration::ZERO;
            for t in times {
                let gap = *t - last;
                // Within [T/2 - slack, 3T/4 + one step]: never late, never in a rush.
                assert!(gap <= Duration::from_millis(3750) + step, "{gap:?}");
                assert!(gap >= Duration::from_millis(2500) - SLACK - step, "{gap:?}");
                last = *t;
            }
            assert!(Duration::from_secs(60) - last <= Duration::from_millis(3760));
        }
        assert_eq!(k.counters.kept, 1000);
        assert_eq!(
            k.counters.repunches,
            p.values().map(|v| v.len() as u64).sum::<u64>()
        );
    }

    #[test]
    fn flows_kept_together_spread_out() {
        let mut k = Keeper::new(timeouts(30), 11);
        let start = Instant::now();
        for i in 0..10_000 {
            k.add(flow(i, 0), probe(), start);
        }
        // At the first round of repunches, no 100-ms window holds more than 2.5 times the mean
        // (10,000 flows over a 7.5-s window: 133 per 100 ms).
        let mut per_window = HashMap::<u128, usize>::new();
        for (f, _) in k.take_due(start + Duration::from_secs(25), Duration::ZERO) {
            let at = k.entries[&f.key()].next - start;
            *per_window.entry(at.as_millis() / 100).or_default() += 1;
        }
        let max = per_window.values().max().copied().unwrap_or(0);
        assert!(max < 333, "a 100-ms window holds {max} punches");
        assert!(per_window.len() >= 70, "{} windows", per_window.len());
    }

    #[test]
    fn a_gone_socket_ends_its_flow_and_a_let_go_one_is_never_punched_again() {
        let mut k = Keeper::new(timeouts(4), 3);
        let start = Instant::now();
        for i in 0..10 {
            k.add(flow(i, 1000), probe(), start);
        }
        assert!(
            !k.remove(flow(1, 1000).key(), 1001),
            "only the owner lets go"
        );
        assert!(k.remove(flow(1, 1000).key(), 1000));
        let p = run(
            &mut k,
            start,
            Duration::from_secs(20),
            Duration::from_millis(10),
            &|f, t| f.cookie == 3 && t > Duration::from_secs(5),
        );
        assert!(!p.contains_key(&flow(1, 1000).key()));
        let gone = &p[&flow(2, 1000).key()];
        assert!(gone.iter().all(|t| *t <= Duration::from_secs(5)));
        assert!(!k.is_kept(flow(2, 1000).key()));
        assert_eq!(k.len(), 8);
        assert_eq!(k.count_of(Charge::Uid(1000)), 8);
        assert_eq!((k.counters.ended_gone, k.counters.ended_asked), (1, 1));
    }

    #[test]
    fn a_process_that_exits_ends_its_flows_alone() {
        let mut k = Keeper::new(timeouts(4), 9);
        let start = Instant::now();
        for i in 0..10 {
            k.add(flow(i, 1000), probe(), start);
        }
        // Flows 0, 2, ... were asked for by pid 100, the others by pid 101.
        assert_eq!(k.remove_process(100), 5);
        assert_eq!(k.remove_process(100), 0);
        assert_eq!(k.len(), 5);
        assert_eq!(k.count_of(Charge::Uid(1000)), 5);
        assert_eq!(k.count_of(Charge::Group(4242)), 5);
        assert!(k.is_kept(flow(1, 1000).key()) && !k.is_kept(flow(0, 1000).key()));
        let due = k.take_due(start + Duration::from_secs(4), Duration::ZERO);
        assert!(due.iter().all(|(f, _)| f.pid == 101), "{due:?}");
        assert_eq!(k.counters.ended_exited, 5);
    }

    #[test]
    fn a_refused_auto_flow_is_lowered_and_others_are_not() {
        let mut k = Keeper::new(timeouts(4), 13);
        let start = Instant::now();
        let mut auto = flow(0, 7);
        auto.auto = true;
        auto.hop_limit = 4;
        let mut fixed = flow(1, 7);
        fixed.hop_limit = 4;
        k.add(auto, probe(), start);
        k.add(fixed, probe(), start);
        let n = k.lower(auto.local, auto.peer, Proto::Udp, 3, |f| {
            assert_eq!(f.hop_limit, 3);
            Some((*probe()).clone())
        });
        assert_eq!(n, 1);
        let due = k.take_due(start + Duration::from_secs(4), Duration::ZERO);
        let hops: Vec<(u16, u8)> = due
            .iter()
            .map(|(f, _)| (f.local.port(), f.hop_limit))
            .collect();
        assert!(
            hops.contains(&(4000, 3)) && hops.contains(&(4001, 4)),
            "{hops:?}"
        );
        // Being punched: left as it is, and settled as usual.
        assert_eq!(
            k.lower(auto.local, auto.peer, Proto::Udp, 2, |_| Some(
                (*probe()).clone()
            )),
            0
        );
        for (f, _) in &due {
            k.settle(f, Outcome::Punched, start + Duration::from_secs(4));
        }
        assert!(k.next_due().is_some());
    }

    #[test]
    fn a_flow_let_go_while_being_punched_stays_gone() {
        let mut k = Keeper::new(timeouts(4), 5);
        let start = Instant::now();
        k.add(flow(0, 7), probe(), start);
        let due = k.take_due(start + Duration::from_secs(3), Duration::ZERO);
        assert_eq!(due.len(), 1);
        assert!(k.remove(due[0].0.key(), 7));
        k.settle(&due[0].0, Outcome::Punched, start + Duration::from_secs(3));
        assert_eq!(k.len(), 0);
        assert_eq!(k.next_due(), None);
        // Kept anew while the old entry was being punched: the new one stands.
        k.add(flow(0, 7), probe(), start);
        let due = k.take_due(start + Duration::from_secs(3), Duration::ZERO);
        let mut again = flow(0, 7);
        again.hop_limit = 3;
        k.add(again, probe(), start + Duration::from_secs(3));
        k.settle(&due[0].0, Outcome::Gone, start + Duration::from_secs(3));
        assert!(k.is_kept(again.key()));
        assert_eq!(k.count_of(Charge::Uid(7)), 1);
    }
}
