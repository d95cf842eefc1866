//! `synergy-craft probe`: checks the arguments, finds the source address when none is given, opens
//! the raw socket and drops privilege, then sends every probe of the sweep (`--count` times),
//! paced or as fast as the path allows, built once and patched per probe, in batches; reports
//! each probe (unless `--quiet`), their fates (`--watch`) and a summary. Does I/O.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use crate::cli::ProbeArgs;
use crate::config::{
    EACH_PROBE_LIMIT, ProbeConfig, THREAD_BLOCK, estimate, probe_config, site_for,
};
use crate::net::ReplySockets;
use crate::net::link::{LinkSender, SendPath};
use crate::net::raw::{BATCH, Batch, RawSender};
use crate::net::{NetError, privilege, random_u32, route, zone_index};
use crate::output::{Formatter, OutputConfig, ProbeEvent, Record, Reporter, Summary};
use crate::param::Prefix;
use crate::reply::ProbeKey;

use super::fates::{SentLog, follow};
use super::stop::Stop;
use crate::wire::patch::Patcher;
use crate::wire::probe::{ProbeRepr, WireChecksum};

// A batch's unsent packets are the bits of one u64.
const _: () = assert!(BATCH <= u64::BITS as usize);

/// `--watch` follows at most this many probes.
const WATCH_MAX: u64 = 4096;

pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let cfg = probe_config(args, &mut random_u32, &|p| std::fs::read_to_string(p))?;
    if cfg.watch.is_some() && cfg.total > WATCH_MAX {
        return Err(crate::config::ConfigError::Invalid {
            flag: "--watch",
            value: format!("{} probes", cfg.total),
            rule: "follows at most 4096 probes",
        }
        .into());
    }
    // Every target's path, opened while the privilege is there.
    let targets = cfg
        .targets
        .iter()
        .map(|dst| Target::open(&cfg, dst))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = targets
        .first()
        .ok_or_else(|| anyhow::anyhow!("no target"))?;
    let one_source = targets.iter().all(|t| t.src == first.src);
    let threads = cfg.threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One sending path per thread, each for every target, aimed at each in turn.
    let senders = (0..threads)
        .map(|_| {
            if cfg.dry_run {
                Ok(None)
            } else {
                open_path(&cfg, first, one_source).map(Some)
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut replies = match cfg.watch {
        Some(_) if !cfg.dry_run => {
            if !one_source {
                return Err(crate::config::ConfigError::Invalid {
                    flag: "--watch",
                    value: format!("{} targets", targets.len()),
                    rule: "follows targets reached from one source address: give --src",
                }
                .into());
            }
            Some(ReplySockets::open(
                first.src,
                first.src_scope,
                first.template.transport.next_header(),
            )?)
        }
        _ => None,
    };
    privilege::drop_all()?;

    let stop = Stop::install()?;
    if cfg.total > EACH_PROBE_LIMIT {
        let lines = if cfg.quiet {
            "no line per probe (--each-probe for them)"
        } else {
            "a line per probe"
        };
        let _ = writeln!(
            std::io::stderr(),
            "synergy-craft: {} {} probes, {}; {lines}",
            if cfg.dry_run { "building" } else { "sending" },
            cfg.total,
            estimate(cfg.total, cfg.interval, threads)
        );
    }
    let mut reporter = Reporter::new(&cfg.output)?;
    let plan = Plan::new(&cfg, threads);
    let shared = Shared {
        cfg: &cfg,
        targets: &targets,
        plan: &plan,
        stop: &stop,
        started: Instant::now(),
        sent_so_far: AtomicU64::new(0),
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        committed: std::sync::Mutex::new(None),
    };
    let (outcomes, written) = send_all(&shared, senders, first.patcher.len(), &mut reporter);
    if plan.progress {
        let _ = writeln!(std::io::stderr());
    }
    let mut total = Outcome::default();
    let mut failure = written.err();
    for (o, r) in outcomes {
        total.merge(o);
        if let Err(e) = r {
            failure.get_or_insert(e);
        }
    }
    let summary = Summary {
        built: total.built,
        sent: if cfg.dry_run { 0 } else { total.sent },
        dry_run: cfg.dry_run,
        elapsed: total.ended.map_or(Duration::ZERO, |e| e - shared.started),
        errors: total.errors,
        interrupted: stop.requested().map(super::stop::signal_name),
    };
    reporter.summary(
        &summary,
        cfg.quiet || cfg.total > 1 || stop.requested().is_some(),
    )?;
    // A thread's failure (or the writer's) ends the run, after the summary of what was sent.
    if let Some(e) = failure {
        reporter.finish()?;
        return Err(e);
    }
    if let (Some(replies), Some(watch)) = (replies.as_mut(), cfg.watch) {
        let tally = follow(
            replies,
            &total.log.unwrap_or_default(),
            watch,
            &|| stop.requested().is_some(),
            &mut |fate| {
                if cfg.quiet {
                    Ok(())
                } else {
                    reporter.fate(fate)
                }
            },
        )?;
        reporter.fates_summary(tally.answered, tally.silent, &tally.rtts)?;
    }
    reporter.finish()?;
    stop.check()?;
    if summary.errors.values().sum::<u64>() > 0 && summary.sent == 0 {
        let why: Vec<String> = summary
            .errors
            .iter()
            .map(|(e, n)| format!("{e} ({n}×)"))
            .collect();
        anyhow::bail!("no probe could be sent: {}", why.join(", "));
    }
    Ok(())
}

/// Sends the run with one thread per sending path (`senders`; probes `len` bytes long), each
/// claiming blocks, while this thread writes their reports in order: each thread's outcome and
/// failure, and the writer's result.
fn send_all(
    shared: &Shared<'_>,
    senders: Vec<Option<SendPath>>,
    len: usize,
    reporter: &mut Reporter,
) -> (Vec<(Outcome, anyhow::Result<()>)>, anyhow::Result<()>) {
    std::thread::scope(|s| {
        // Every thread's records fit in the channel at once: a send to the writer never waits.
        let (to_writer, parts) = std::sync::mpsc::sync_channel::<Part>(senders.len() * RECORDS);
        let (mut back, mut gates, mut handles) = (Vec::new(), Vec::new(), Vec::new());
        for (id, sender) in senders.into_iter().enumerate() {
            let (to_worker, free) = std::sync::mpsc::channel::<Record>();
            for _ in 0..RECORDS {
                // Cannot fail: `free` is alive.
                let _ = to_worker.send(Record::default());
            }
            back.push(to_worker);
            let (gate, go) = std::sync::mpsc::channel::<()>();
            gates.push(gate);
            let to_writer = to_writer.clone();
            let worker = Worker::new(id, sender, len, &shared.cfg.output);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("send-{id}"))
                    .spawn_scoped(s, move || {
                        let _guard = FailOnPanic(&shared.failed);
                        // Nothing is sent until every thread has started.
                        if go.recv().is_err() {
                            return (Outcome::default(), Ok(()));
                        }
                        worker.run(shared, &to_writer, &free)
                    }),
            );
        }
        drop(to_writer);
        let started: Result<Vec<_>, _> = handles.into_iter().collect();
        let handles = match started {
            Ok(h) => h,
            // Dropping the gates ends the threads that did start, before they send anything.
            Err(e) => {
                return (
                    Vec::new(),
                    Err(anyhow::Error::from(e).context("starting a sending thread")),
                );
            }
        };
        for gate in gates {
            // A thread that is gone has its outcome joined below.
            let _ = gate.send(());
        }
        // The reports, block by block in the run's order, while the threads send.
        let written = write_in_order(
            shared.plan.report_each,
            shared.plan.progress,
            &parts,
            &back,
            &shared.failed,
            &mut |r: &Record| reporter.write(r),
            &|| progress(shared),
        );
        drop(parts);
        let outcomes = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (
                        Outcome::default(),
                        Err(anyhow::anyhow!("a sending thread panicked")),
                    )
                })
            })
            .collect::<Vec<_>>();
        (outcomes, written)
    })
}

/// Opens one sending path (each thread has its own): the link path, or a raw socket bound to
/// the source when every target has the same one (no source lookup per packet).
fn open_path(cfg: &ProbeConfig, first: &Target, one_source: bool) -> anyhow::Result<SendPath> {
    Ok(match &cfg.link {
        Some((iface, mac)) => {
            let l = LinkSender::open(iface, *mac)?;
            if let Some(mtu) = l.mtu.filter(|m| first.patcher.len() > *m) {
                return Err(NetError::LargerThanMtu {
                    len: first.patcher.len(),
                    dst: first.template.ip.dst,
                    mtu,
                }
                .into());
            }
            SendPath::Link(l)
        }
        None => {
            let raw = RawSender::open(one_source.then_some((first.src, first.src_scope)))?;
            if let Some(i) = &cfg.interface {
                raw.bind_device(i)?;
            }
            SendPath::Ip(raw)
        }
    })
}

/// Records in flight per thread: being filled, queued for the writer, being written.
const RECORDS: usize = 4;

/// A record is handed to the writer once it holds this many bytes, even in the middle of a
/// block, so that a thread's memory stays bounded whatever the probes' size (one probe's report
/// more at most: a JSON line of a 64 KiB probe is about 260 KiB).
const PART_BYTES: usize = 1 << 20;

/// How a run is cut into blocks: probes of one target, [`THREAD_BLOCK`] of them (fewer when a
/// target has fewer per thread), sent in batches of 64; for a paced run one batch of about a
/// millisecond's worth. The threads claim blocks in order, each the next one when it is free;
/// a claimed block is sent whole (a paced one unless the run is stopped before it is due and
/// no later block has gone: [`Shared::commit`]), so the blocks sent are always the first ones,
/// and the writer puts their reports back in block order: lines and pcap records come in the
/// order of the probes' indexes, and a run stopped early has reported a whole prefix.
struct Plan {
    /// Probes per block.
    per_block: u64,
    /// Blocks per target (the last one may be short).
    blocks_per_target: u64,
    blocks: u64,
    /// A line or a pcap record per probe.
    report_each: bool,
    /// A progress line on stderr (a terminal, and a long run).
    progress: bool,
}

impl Plan {
    fn new(cfg: &ProbeConfig, threads: u32) -> Self {
        Plan {
            report_each: !cfg.quiet || cfg.output.pcap.is_some(),
            progress: std::io::stderr().is_terminal() && cfg.total >= 100_000,
            ..Plan::split(
                cfg.per_target,
                cfg.targets.len() as u64,
                cfg.interval,
                threads,
            )
        }
    }

    /// `targets` times `per_target` probes, paced at `interval` (zero: full speed), for
    /// `threads` threads; reporting nothing.
    fn split(per_target: u64, targets: u64, interval: Duration, threads: u32) -> Self {
        let per_block = if interval.is_zero() {
            // A small run is still shared: each thread gets at least one block of a target.
            per_target
                .div_ceil(u64::from(threads.max(1)))
                .next_multiple_of(BATCH as u64)
                .clamp(BATCH as u64, THREAD_BLOCK)
        } else {
            // Paced runs send in batches of about a millisecond's worth, so that the schedule holds.
            let per_ms = Duration::from_millis(1).as_secs_f64() / interval.as_secs_f64();
            (per_ms as usize).clamp(1, BATCH) as u64
        };
        let blocks_per_target = per_target.div_ceil(per_block);
        Plan {
            per_block,
            blocks_per_target,
            blocks: blocks_per_target * targets,
            report_each: false,
            progress: false,
        }
    }

    /// Block `b`: its target, and the range of that target's probes it holds.
    fn block(&self, b: u64, per_target: u64) -> (usize, std::ops::Range<u64>) {
        let t = b / self.blocks_per_target;
        let start = (b % self.blocks_per_target) * self.per_block;
        (
            usize::try_from(t).unwrap_or(usize::MAX),
            start..(start + self.per_block).min(per_target),
        )
    }
}

/// What every sending thread reads, and the run's next block.
struct Shared<'a> {
    cfg: &'a ProbeConfig,
    targets: &'a [Target],
    plan: &'a Plan,
    stop: &'a Stop,
    started: Instant,
    /// Probes sent so far by every thread, for the progress line.
    sent_so_far: AtomicU64,
    /// The next block to claim.
    next: AtomicU64,
    /// A thread or the writer failed: the others claim nothing more.
    failed: AtomicBool,
    /// The highest paced block committed to be sent (see [`Shared::commit`]).
    committed: std::sync::Mutex<Option<u64>>,
}

impl Shared<'_> {
    /// Claims the next block: None once the run is done, stopped by a signal, or failed.
    fn claim(&self) -> Option<u64> {
        if self.stop.requested().is_some() || self.failed.load(Ordering::Relaxed) {
            return None;
        }
        let b = self.next.fetch_add(1, Ordering::Relaxed);
        (b < self.plan.blocks).then_some(b)
    }

    /// Whether paced block `b`, due now (or stopped while waiting), is to be sent: yes unless
    /// the run is stopped and no later block has been committed. Checked and recorded under
    /// one lock, so that the blocks sent are always the first ones: a block is given up only
    /// when every block after it is too (a block committed later is sent, and one committed
    /// before the stop was due before it, as is every block before that).
    fn commit(&self, b: u64) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return false;
        }
        let mut highest = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        if self.stop.requested().is_some() && highest.is_none_or(|h| h < b) {
            return false;
        }
        *highest = Some(highest.map_or(b, |h| h.max(b)));
        true
    }
}

/// Sets the run's failure flag when a sending thread panics, so that the others stop.
struct FailOnPanic<'a>(&'a AtomicBool);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// A thread's record on its way to the writer: the reports of block `block` (all of them, or
/// the next part of them; `last`: the block's last part), from thread `owner`.
struct Part {
    block: u64,
    last: bool,
    owner: usize,
    record: Record,
}

/// Writes the threads' records with `write` in block order, each block's parts in the order
/// they were made (`report_each`), giving each record back to its thread (`back`) once written;
/// calls `tick` about every 250 ms when `progress`. Returns when every thread has ended (the
/// channel is closed). The blocks sent are the first ones; should a thread fail in the middle
/// of a block (the others then stop: `failed`, and give up waiting for records held here), the
/// later blocks held back are written at the end, in order, so that every probe sent is
/// reported. A write error sets `failed` and is returned once every thread has ended; records
/// go on coming back to their threads, unwritten.
fn write_in_order(
    report_each: bool,
    progress: bool,
    parts: &Receiver<Part>,
    back: &[std::sync::mpsc::Sender<Record>],
    failed: &AtomicBool,
    write: &mut dyn FnMut(&Record) -> anyhow::Result<()>,
    tick: &dyn Fn(),
) -> anyhow::Result<()> {
    let mut current = 0u64;
    // Parts of later blocks, until their turn (at most RECORDS per thread).
    let mut held: BTreeMap<u64, VecDeque<Part>> = BTreeMap::new();
    let mut last_tick = Instant::now();
    // The first write error: from then on nothing is written, the run is told to stop
    // (`failed`), and every record goes straight back, so that no thread waits for one.
    let mut error: Option<anyhow::Error> = None;
    let mut put = |p: Part, write: &mut dyn FnMut(&Record) -> anyhow::Result<()>| {
        if error.is_none()
            && let Err(e) = write(&p.record)
        {
            failed.store(true, Ordering::Relaxed);
            error = Some(e);
        }
        if let Some(b) = back.get(p.owner) {
            // The thread may have ended; its record is then simply dropped.
            let _ = b.send(p.record);
        }
    };
    loop {
        let part = match parts.recv_timeout(Duration::from_millis(250)) {
            Ok(p) => Some(p),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if progress && last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = Instant::now();
            tick();
        }
        let Some(part) = part else { continue };
        if !report_each {
            continue;
        }
        if part.block != current {
            held.entry(part.block).or_default().push_back(part);
            continue;
        }
        let mut done = part.last;
        put(part, write);
        // Then what was held back for the blocks that follow, as far as they are whole.
        while done {
            current += 1;
            done = false;
            let Some(queue) = held.remove(&current) else {
                break;
            };
            for p in queue {
                done = p.last;
                put(p, write);
            }
        }
    }
    for p in held.into_values().flatten() {
        put(p, write);
    }
    error.map_or(Ok(()), Err)
}

fn progress(shared: &Shared<'_>) {
    let (cfg, secs) = (shared.cfg, shared.started.elapsed().as_secs_f64().max(1e-9));
    let done = shared.sent_so_far.load(Ordering::Relaxed);
    let verb = if cfg.dry_run { "built" } else { "sent" };
    let _ = write!(
        std::io::stderr(),
        "\r{verb} {done}/{} ({:.0}%) at {:.0} probes/s ",
        cfg.total,
        100.0 * done as f64 / cfg.total as f64,
        done as f64 / secs
    );
}

/// What one thread did.
#[derive(Default)]
struct Outcome {
    built: u64,
    sent: u64,
    errors: BTreeMap<String, u64>,
    /// When its last batch was sent.
    ended: Option<Instant>,
    /// For --watch (one thread): the probes that went out.
    log: Option<SentLog>,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.built += o.built;
        self.sent += o.sent;
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.ended = self.ended.max(o.ended);
        if o.log.is_some() {
            self.log = o.log;
        }
    }
}

/// One target of a run: its probe and the patcher that varies it.
struct Target {
    template: ProbeRepr,
    patcher: Patcher,
    dst_scope: u32,
    src: std::net::Ipv6Addr,
    src_scope: u32,
    /// The source address was the kernel's choice.
    src_from_kernel: bool,
    /// The local site, for the fates of `--watch`.
    site: Prefix,
}

impl Target {
    /// Looks up the route toward `dst` (for a kernel-chosen source and, when sending, the MTU)
    /// and builds the probe.
    fn open(cfg: &ProbeConfig, dst: &crate::param::Host) -> anyhow::Result<Self> {
        let dst_scope = zone_index(dst.zone.as_deref())?;
        let dport = cfg.transport.ports().1;
        let route = if cfg.src.is_none() || !cfg.dry_run {
            Some(route::lookup_on(
                dst.addr,
                dport,
                dst_scope,
                cfg.interface.as_deref(),
            )?)
        } else {
            None
        };
        let (src, src_scope, src_from_kernel) = match (&cfg.src, &route) {
            (Some(h), _) => (h.addr, zone_index(h.zone.as_deref())?, false),
            (None, Some(r)) => (r.src, dst_scope, true),
            (None, None) => unreachable!("route looked up when no source is given"),
        };
        let site = site_for(cfg.site, src, dst.addr)?;
        if src_from_kernel {
            log::info!(
                "source address {src}: chosen by the kernel's routing table toward {}",
                dst.addr
            );
        }
        let template = cfg.repr(src, dst.addr);
        let patcher = Patcher::new(&template, &cfg.sweep.swept())?;
        if !cfg.dry_run
            && let Some(mtu) = route.and_then(|r| r.mtu)
            && patcher.len() > mtu
        {
            return Err(NetError::LargerThanMtu {
                len: patcher.len(),
                dst: dst.addr,
                mtu,
            }
            .into());
        }
        Ok(Target {
            template,
            patcher,
            dst_scope,
            src,
            src_scope,
            src_from_kernel,
            site,
        })
    }
}

/// One sending thread: its path, its batch, and what it did.
struct Worker {
    id: usize,
    sender: Option<SendPath>,
    batch: Batch,
    formatter: Formatter,
    out: Outcome,
    /// The packets of the current batch the kernel did not take (bit k: packet k; BATCH is 64).
    unsent: u64,
}

/// How a thread's sending ended early.
enum Ended {
    /// A signal, another thread's failure, or the writer gone: nothing more to do.
    Stopped,
    Failed(anyhow::Error),
}

impl Worker {
    /// Thread `id` of a run of probes `len` bytes long.
    fn new(id: usize, sender: Option<SendPath>, len: usize, output: &OutputConfig) -> Self {
        Worker {
            id,
            sender,
            batch: Batch::new(len),
            formatter: Reporter::formatter(output),
            out: Outcome::default(),
            unsent: 0,
        }
    }

    /// Sends (or builds) blocks, claiming the next one whenever it is free, until the run is
    /// done, stopped or failed; when the run reports each probe, the reports go to the writer
    /// in parts, each in a record taken empty from `free`. Returns what it did and whether it
    /// failed (the others are then told to stop).
    fn run(
        mut self,
        sh: &Shared<'_>,
        to_writer: &SyncSender<Part>,
        free: &Receiver<Record>,
    ) -> (Outcome, anyhow::Result<()>) {
        let result = match self.blocks(sh, to_writer, free) {
            Ok(()) | Err(Ended::Stopped) => Ok(()),
            Err(Ended::Failed(e)) => {
                sh.failed.store(true, Ordering::Relaxed);
                Err(e)
            }
        };
        (self.out, result)
    }

    fn blocks(
        &mut self,
        sh: &Shared<'_>,
        to_writer: &SyncSender<Part>,
        free: &Receiver<Record>,
    ) -> Result<(), Ended> {
        let (cfg, plan) = (sh.cfg, sh.plan);
        let distinct = cfg.per_target / cfg.count;
        let watch = cfg.watch.is_some();
        // An empty record, taken before a block is claimed so that a claimed block can always
        // be reported (a thread waiting for one holds no block back).
        // Waits no longer than the run lasts: once a thread or the writer has failed, the
        // record may be one the writer holds for a block that will never be whole.
        let take = || -> Result<Record, Ended> {
            loop {
                match free.recv_timeout(Duration::from_millis(50)) {
                    Ok(mut r) => {
                        r.clear();
                        return Ok(r);
                    }
                    Err(RecvTimeoutError::Timeout) if !sh.failed.load(Ordering::Relaxed) => {}
                    Err(_) => return Err(Ended::Stopped),
                }
            }
        };
        // The target aimed at, and its probe as last reported (varied in place).
        let mut aimed: Option<(usize, ProbeRepr)> = None;
        loop {
            let mut record = if plan.report_each {
                Some(take()?)
            } else {
                None
            };
            let Some(b) = sh.claim() else {
                return Ok(());
            };
            let (t, block) = plan.block(b, cfg.per_target);
            let target = sh
                .targets
                .get(t)
                .ok_or_else(|| Ended::Failed(anyhow::anyhow!("block {b} has no target")))?;
            let offset = t as u64 * cfg.per_target;
            if !cfg.interval.is_zero() {
                let due = sh.started + cfg.interval.mul_f64((offset + block.start) as f64);
                // Slept in slices, so that a signal or a failure stops a slow run at once.
                while let Some(wait) = due.checked_duration_since(Instant::now()) {
                    if sh.stop.requested().is_some() || sh.failed.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
                if !sh.commit(b) {
                    return Err(Ended::Stopped);
                }
            }
            if aimed.as_ref().is_none_or(|(a, _)| *a != t) {
                if let Some(s) = &self.sender {
                    s.aim(target.template.ip.dst, target.dst_scope)
                        .map_err(|e| Ended::Failed(e.into()))?;
                }
                aimed = Some((t, target.template.clone()));
            }
            let mut start = block.start;
            while start < block.end {
                let batch = start..(start + BATCH as u64).min(block.end);
                start = batch.end;
                self.batch.clear();
                for i in batch.clone() {
                    let v = cfg.sweep.variant(i % distinct);
                    let Some(slot) = self.batch.slot() else { break };
                    target.patcher.write(&v, slot);
                }
                self.out.built += self.batch.len as u64;
                // Taken before sending: a reply's arrival time (the kernel's) is never before it.
                let sent_at = Instant::now();
                self.transmit();
                let went = if self.sender.is_some() {
                    self.batch.len as u64 - u64::from(self.unsent.count_ones())
                } else {
                    self.batch.len as u64
                };
                sh.sent_so_far.fetch_add(went, Ordering::Relaxed);
                self.out.ended = Some(Instant::now());
                if record.is_none() && !watch {
                    continue;
                }
                let now = SystemTime::now();
                let mut repr = aimed.as_mut().map(|(_, r)| r);
                for (k, i) in batch.enumerate() {
                    let bytes = self.batch.packet(k);
                    // A packet the kernel refused was built, not sent, and has no fate to watch.
                    let went = self.sender.is_some() && self.unsent & (1 << k) == 0;
                    if watch
                        && went
                        && let Some(key) = ProbeKey::from_packet(bytes)
                    {
                        self.out.log.get_or_insert_default().record(
                            key,
                            sent_at,
                            bytes
                                .get(crate::wire::ipv6::field::HOP_LIMIT)
                                .copied()
                                .unwrap_or(0),
                            target.site,
                        );
                    }
                    let (Some(r), Some(repr)) = (&mut record, repr.as_deref_mut()) else {
                        continue;
                    };
                    cfg.sweep.variant(i % distinct).apply_to(repr);
                    let checksum = checksum_of(repr, bytes);
                    self.formatter.probe(
                        &ProbeEvent {
                            index: offset + i + 1,
                            count: cfg.total,
                            repr,
                            bytes,
                            checksum,
                            sent: went,
                            time: now,
                            src_from_kernel: target.src_from_kernel,
                        },
                        !cfg.quiet,
                        r,
                    );
                    if r.lines.len() + r.pcap.len() >= PART_BYTES && i + 1 < block.end {
                        let full = std::mem::replace(r, take()?);
                        self.hand_over(to_writer, b, false, full)?;
                    }
                }
            }
            if let Some(r) = record {
                self.hand_over(to_writer, b, true, r)?;
            }
        }
    }

    fn hand_over(
        &self,
        to_writer: &SyncSender<Part>,
        block: u64,
        last: bool,
        record: Record,
    ) -> Result<(), Ended> {
        to_writer
            .send(Part {
                block,
                last,
                owner: self.id,
                record,
            })
            // The writer has gone (it failed): nothing more can be reported.
            .map_err(|_| Ended::Stopped)
    }

    /// Sends the batch, retrying what the kernel could not take at once (ENOBUFS: the queue is
    /// full) a bounded number of times; counts errors by kind and marks each packet not sent in
    /// `unsent` (bit k: the batch's packet k).
    fn transmit(&mut self) {
        self.unsent = 0;
        let Some(s) = &self.sender else { return };
        let mut from = 0;
        let mut tries = 0;
        while from < self.batch.len {
            match s.send_batch(&self.batch, from) {
                Ok(n) => {
                    from += n;
                    self.out.sent += n as u64;
                }
                Err(e) => {
                    *self.out.errors.entry(error_kind(&e)).or_default() += 1;
                    tries += 1;
                    if tries > 1000 {
                        // Give the rest of this batch up; it is counted above.
                        for k in from..self.batch.len {
                            self.unsent |= 1 << k;
                        }
                        return;
                    }
                    if e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == std::io::ErrorKind::WouldBlock
                    {
                        std::thread::yield_now();
                    } else {
                        // Not a passing condition: skip the packet that failed.
                        self.unsent |= 1 << from;
                        from += 1;
                    }
                }
            }
        }
    }
}

fn error_kind(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => "ENOBUFS".into(),
        Some(libc::EMSGSIZE) => "EMSGSIZE".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::EPERM) => "EPERM".into(),
        _ => e.kind().to_string(),
    }
}

/// The checksum a patched probe carries, read from its bytes (else built again).
fn checksum_of(repr: &ProbeRepr, bytes: &[u8]) -> WireChecksum {
    match WireChecksum::read(bytes) {
        Some(c) => c,
        None => repr
            .to_bytes()
            .map(|(_, c)| c)
            .unwrap_or(WireChecksum::Internet(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of a run, taken in order, hold every probe of every target once, in order,
    /// each within one target, at most 64 in a paced run's; a run at full speed has at least
    /// one block per thread when it has a batch per thread.
    #[test]
    fn blocks_hold_every_probe_once_in_order() {
        for (per_target, targets, interval, threads) in [
            (1, 1, Duration::ZERO, 1),
            (400, 1, Duration::ZERO, 2),
            (400, 3, Duration::ZERO, 2),
            (100_000, 2, Duration::ZERO, 2),
            (3840, 1, Duration::ZERO, 3),
            (1000, 2, Duration::from_micros(10), 4),
            (7, 5, Duration::from_secs(1), 8),
        ] {
            let plan = Plan::split(per_target, targets, interval, threads);
            let mut next = (0usize, 0u64);
            for b in 0..plan.blocks {
                let (t, r) = plan.block(b, per_target);
                if next.1 == per_target {
                    next = (next.0 + 1, 0);
                }
                assert_eq!((t, r.start), next, "block {b} of {per_target}x{targets}");
                assert!(r.end > r.start && r.end <= per_target);
                if !interval.is_zero() {
                    assert!(r.end - r.start <= BATCH as u64);
                }
                next.1 = r.end;
            }
            assert_eq!(next, (targets as usize - 1, per_target));
            if interval.is_zero() && per_target >= u64::from(threads) * BATCH as u64 {
                assert!(plan.blocks_per_target >= u64::from(threads));
            }
        }
    }

    /// What the writer writes of the parts coming on `from` until the channel closes.
    fn write_all(from: &Receiver<Part>, back: &[std::sync::mpsc::Sender<Record>]) -> String {
        let mut got = String::new();
        write_in_order(
            true,
            false,
            from,
            back,
            &AtomicBool::new(false),
            &mut |r: &Record| {
                got.push_str(std::str::from_utf8(&r.lines)?);
                Ok(())
            },
            &|| {},
        )
        .unwrap();
        got
    }

    /// Parts sent by `threads` fake threads, each `(block, last, text)` after the one before
    /// it in the list, from the thread that claimed the block; returns what the writer wrote.
    fn written(threads: usize, parts: &[(usize, u64, bool, &str)]) -> String {
        let (to_writer, from) = std::sync::mpsc::sync_channel::<Part>(64);
        let mut back = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..threads {
            let (to_worker, free) = std::sync::mpsc::channel::<Record>();
            back.push(to_worker);
            keep.push(free);
        }
        let parts: Vec<(usize, u64, bool, String)> = parts
            .iter()
            .map(|(o, b, l, t)| (*o, *b, *l, t.to_string()))
            .collect();
        let sender = std::thread::spawn(move || {
            for (owner, block, last, text) in parts {
                let mut record = Record::default();
                record.lines.extend_from_slice(text.as_bytes());
                to_writer
                    .send(Part {
                        block,
                        last,
                        owner,
                        record,
                    })
                    .unwrap();
            }
        });
        let got = write_all(&from, &back);
        sender.join().unwrap();
        // Every record went back to the thread it came from.
        let returned: usize = keep.iter().map(|k| k.try_iter().count()).sum();
        assert_eq!(returned, got.split_whitespace().count());
        got
    }

    /// Whatever order the blocks arrive in, and however they are cut into parts, the writer
    /// writes them in block order, each block's parts in their order; what a failed thread left
    /// behind is written at the end.
    #[test]
    fn parts_are_written_in_block_order() {
        // Block 1 before block 0; block 2 in two parts with block 3 between them.
        let got = written(
            2,
            &[
                (1, 1, true, "1 "),
                (0, 0, false, "0a "),
                (1, 2, false, "2a "),
                (0, 0, true, "0b "),
                (0, 3, true, "3 "),
                (1, 2, true, "2b "),
            ],
        );
        assert_eq!(got, "0a 0b 1 2a 2b 3 ");
        // Block 0 never finished (its thread failed): the later blocks still written, in order.
        let got = written(
            3,
            &[
                (2, 2, true, "2 "),
                (0, 0, false, "0a "),
                (1, 1, true, "1 "),
                (2, 3, true, "3 "),
            ],
        );
        assert_eq!(got, "0a 1 2 3 ");
    }

    /// A write that fails tells the run to stop, writes nothing more, and still gives every
    /// record back, held ones included, so that no thread waits for one; the error comes back
    /// once the threads have ended.
    #[test]
    fn a_failed_write_stops_the_run_and_gives_every_record_back() {
        let (to_writer, from) = std::sync::mpsc::sync_channel::<Part>(8);
        let (to_worker, free) = std::sync::mpsc::channel::<Record>();
        for (block, last) in [(1, true), (0, false), (0, true), (2, true)] {
            let mut record = Record::default();
            record.lines.push(b'x');
            to_writer
                .send(Part {
                    block,
                    last,
                    owner: 0,
                    record,
                })
                .unwrap();
        }
        drop(to_writer);
        let failed = AtomicBool::new(false);
        let mut writes = 0;
        let result = write_in_order(
            true,
            false,
            &from,
            &[to_worker],
            &failed,
            &mut |_: &Record| {
                writes += 1;
                anyhow::bail!("Broken pipe")
            },
            &|| {},
        );
        assert!(result.is_err());
        assert!(failed.load(Ordering::Relaxed));
        assert_eq!(writes, 1, "nothing written after the error");
        assert_eq!(free.try_iter().count(), 4, "every record given back");
    }

    /// Real threads claiming blocks from one counter, stopped part way: the blocks reported are
    /// exactly the first ones, in order, each once.
    #[test]
    fn a_stopped_run_reports_a_whole_prefix_of_its_blocks() {
        let (to_writer, from) = std::sync::mpsc::sync_channel::<Part>(3 * RECORDS);
        let next = std::sync::Arc::new(AtomicU64::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut back = Vec::new();
        let mut threads = Vec::new();
        for owner in 0..3 {
            let (to_worker, free) = std::sync::mpsc::channel::<Record>();
            for _ in 0..RECORDS {
                to_worker.send(Record::default()).unwrap();
            }
            back.push(to_worker);
            let (to_writer, next, stop) = (to_writer.clone(), next.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                loop {
                    let Ok(mut record) = free.recv() else { return };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let block = next.fetch_add(1, Ordering::Relaxed);
                    if block == 500 {
                        stop.store(true, Ordering::Relaxed);
                    }
                    record.clear();
                    record
                        .lines
                        .extend_from_slice(format!("{block}\n").as_bytes());
                    to_writer
                        .send(Part {
                            block,
                            last: true,
                            owner,
                            record,
                        })
                        .unwrap();
                }
            }));
        }
        drop(to_writer);
        let got = write_all(&from, &back);
        for t in threads {
            t.join().unwrap();
        }
        let blocks: Vec<u64> = got.lines().map(|l| l.parse().unwrap()).collect();
        assert!(blocks.len() > 500);
        assert_eq!(blocks, (0..blocks.len() as u64).collect::<Vec<_>>());
    }
}
