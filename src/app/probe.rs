//! `synergy-craft probe`: checks the arguments, finds the source address when none is given, opens
//! the raw socket and drops privilege, then sends every probe of the sweep (`--count` times),
//! paced or as fast as the path allows, built once and patched per probe, in batches; reports
//! each probe (unless `--quiet`), their fates (`--watch`) and a summary. Does I/O.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
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
        eprintln!(
            "synergy-craft: {} {} probes, {}; {lines}",
            if cfg.dry_run { "building" } else { "sending" },
            cfg.total,
            estimate(cfg.total, cfg.interval)
        );
    }
    let mut reporter = Reporter::new(&cfg.output)?;
    let plan = Plan::new(&cfg, threads);
    let started = Instant::now();
    let sent_so_far = AtomicU64::new(0);
    let shared = Shared {
        cfg: &cfg,
        targets: &targets,
        plan: &plan,
        stop: &stop,
        started,
        sent_so_far: &sent_so_far,
    };
    let (outcomes, written) = std::thread::scope(|s| {
        let mut lanes = Vec::new();
        let mut handles = Vec::new();
        for (id, sender) in senders.into_iter().enumerate() {
            let (to_writer, from_worker) = std::sync::mpsc::sync_channel::<Record>(RECORDS);
            let (to_worker, free) = std::sync::mpsc::channel::<Record>();
            for _ in 0..RECORDS {
                // Cannot fail: `free` is alive.
                let _ = to_worker.send(Record::default());
            }
            lanes.push((from_worker, to_worker));
            let shared = &shared;
            let worker = Worker::new(id as u64, sender, first.patcher.len(), &cfg.output);
            let handle = std::thread::Builder::new()
                .name(format!("send-{id}"))
                .spawn_scoped(s, move || worker.run(shared, to_writer, free));
            handles.push(handle);
        }
        // The reports, block by block in the run's order, while the workers send.
        let written = write_in_order(&plan, lanes, &mut |r: &Record| reporter.write(r), &|| {
            progress(&shared)
        });
        let outcomes = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a sending thread panicked"))),
                Err(e) => Err(anyhow::Error::from(e).context("starting a sending thread")),
            })
            .collect::<Vec<_>>();
        (outcomes, written)
    });
    if plan.progress {
        eprintln!();
    }
    let mut total = Outcome::default();
    for o in outcomes {
        total.merge(o?);
    }
    written?;
    let summary = Summary {
        built: total.built,
        sent: if cfg.dry_run { 0 } else { total.sent },
        dry_run: cfg.dry_run,
        elapsed: total.ended.map_or(Duration::ZERO, |e| e - started),
        errors: total.errors,
        interrupted: stop.requested().map(super::stop::signal_name),
    };
    reporter.summary(
        &summary,
        cfg.quiet || cfg.total > 1 || stop.requested().is_some(),
    )?;
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

/// How a run is cut into blocks and dealt to threads: block `b` of the run (probes of one
/// target: [`THREAD_BLOCK`] of them, fewer when a target has fewer per thread, sent in batches
/// of 64; for a paced run one batch of about a millisecond's worth) goes to thread
/// `b mod threads`; the writer takes the blocks back in order
/// `0, 1, 2, ...`, so lines and pcap records come in the order of the probes' indexes whatever
/// thread sent them. A block is also a thread's unit of hand-over to the writer (one wake-up
/// and one write per block).
struct Plan {
    threads: u64,
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

    /// `targets` times `per_target` probes, paced at `interval` (zero: full speed), among
    /// `threads` threads; reporting nothing.
    fn split(per_target: u64, targets: u64, interval: Duration, threads: u32) -> Self {
        let threads = u64::from(threads.max(1));
        let per_block = if interval.is_zero() {
            // A small run is still shared: each thread gets at least one block of a target.
            per_target
                .div_ceil(threads)
                .next_multiple_of(BATCH as u64)
                .clamp(BATCH as u64, THREAD_BLOCK)
        } else {
            // Paced runs send in batches of about a millisecond's worth, so that the schedule holds.
            let per_ms = Duration::from_millis(1).as_secs_f64() / interval.as_secs_f64();
            (per_ms as usize).clamp(1, BATCH) as u64
        };
        let blocks_per_target = per_target.div_ceil(per_block);
        Plan {
            threads,
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

/// What every sending thread reads.
struct Shared<'a> {
    cfg: &'a ProbeConfig,
    targets: &'a [Target],
    plan: &'a Plan,
    stop: &'a Stop,
    started: Instant,
    /// Probes sent so far by every thread, for the progress line.
    sent_so_far: &'a AtomicU64,
}

/// The two ends a sending thread's records travel between it and the writer: filled ones to
/// the writer, written ones back.
type Lane = (Receiver<Record>, std::sync::mpsc::Sender<Record>);

/// Writes the threads' records with `write` in the run's block order (see [`Plan`]), giving
/// each back to its thread once written; calls `tick` about every 250 ms (the progress line)
/// when the plan shows progress. A thread that ended early (a signal, an error) sent nothing
/// after its last record: its later blocks are passed over and the other threads' records still
/// written, so that every probe sent is reported. On a write error the lanes are dropped, which
/// ends the threads.
fn write_in_order(
    plan: &Plan,
    lanes: Vec<Lane>,
    write: &mut dyn FnMut(&Record) -> anyhow::Result<()>,
    tick: &dyn Fn(),
) -> anyhow::Result<()> {
    let mut ended = vec![false; lanes.len()];
    let mut last_tick = Instant::now();
    if !plan.report_each {
        // Nothing to write: wait for the threads, showing progress.
        for (from_worker, _) in &lanes {
            loop {
                match from_worker.recv_timeout(Duration::from_millis(250)) {
                    Err(RecvTimeoutError::Timeout) if plan.progress => tick(),
                    Err(RecvTimeoutError::Timeout) | Ok(_) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        return Ok(());
    }
    for b in 0..plan.blocks {
        if ended.iter().all(|e| *e) {
            break;
        }
        let w = usize::try_from(b % plan.threads).unwrap_or(0);
        let (Some(lane), Some(end)) = (lanes.get(w), ended.get_mut(w)) else {
            break;
        };
        if *end {
            continue;
        }
        match lane.0.recv() {
            Ok(rec) => {
                write(&rec)?;
                // The thread may have ended; its record is then simply dropped.
                let _ = lane.1.send(rec);
            }
            Err(_) => *end = true,
        }
        if plan.progress && last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = Instant::now();
            tick();
        }
    }
    Ok(())
}

fn progress(shared: &Shared<'_>) {
    let (cfg, secs) = (shared.cfg, shared.started.elapsed().as_secs_f64().max(1e-9));
    let done = shared.sent_so_far.load(Ordering::Relaxed);
    let verb = if cfg.dry_run { "built" } else { "sent" };
    eprint!(
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
    id: u64,
    sender: Option<SendPath>,
    batch: Batch,
    formatter: Formatter,
    out: Outcome,
    /// The packets of the current batch the kernel did not take (bit k: packet k; BATCH is 64).
    unsent: u64,
}

impl Worker {
    /// Thread `id` of a run of probes `len` bytes long.
    fn new(id: u64, sender: Option<SendPath>, len: usize, output: &OutputConfig) -> Self {
        Worker {
            id,
            sender,
            batch: Batch::new(len),
            formatter: Reporter::formatter(output),
            out: Outcome::default(),
            unsent: 0,
        }
    }

    /// Sends (or builds) this thread's blocks, one batch each, until the run ends or a signal
    /// stops it; when the run reports each probe, each block's reports go to the writer in a
    /// record, taken empty from `free` first. `to_writer` is dropped when the thread ends.
    fn run(
        mut self,
        sh: &Shared<'_>,
        to_writer: SyncSender<Record>,
        free: Receiver<Record>,
    ) -> anyhow::Result<Outcome> {
        let (cfg, plan) = (sh.cfg, sh.plan);
        let distinct = cfg.per_target / cfg.count;
        let watch = cfg.watch.is_some();
        // The target aimed at, and its probe as last reported (varied in place).
        let mut aimed: Option<(usize, ProbeRepr)> = None;
        let mut b = self.id;
        while b < plan.blocks {
            let (t, block) = plan.block(b, cfg.per_target);
            b += plan.threads;
            let Some(target) = sh.targets.get(t) else {
                break;
            };
            let offset = t as u64 * cfg.per_target;
            if !cfg.interval.is_zero() {
                let due = sh.started + cfg.interval.mul_f64((offset + block.start) as f64);
                // Slept in slices, so that a signal stops a slow run at once.
                while let Some(wait) = due.checked_duration_since(Instant::now()) {
                    if sh.stop.requested().is_some() {
                        break;
                    }
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
            }
            if sh.stop.requested().is_some() {
                break;
            }
            if aimed.as_ref().is_none_or(|(a, _)| *a != t) {
                if let Some(s) = &self.sender {
                    s.aim(target.template.ip.dst, target.dst_scope)?;
                }
                aimed = Some((t, target.template.clone()));
            }
            let mut record = if plan.report_each {
                match free.recv() {
                    Ok(mut r) => {
                        r.clear();
                        Some(r)
                    }
                    // The writer has gone (it failed): nothing more can be reported.
                    Err(_) => break,
                }
            } else {
                None
            };
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
                    // Read back once: the watch's key and the report's checksum.
                    let key = ProbeKey::from_packet(bytes);
                    if watch
                        && went
                        && let Some(key) = key
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
                    if let (Some(r), Some(repr)) = (&mut record, repr.as_deref_mut()) {
                        cfg.sweep.variant(i % distinct).apply_to(repr);
                        let checksum = checksum_of(repr, key);
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
                    }
                }
            }
            if let Some(r) = record
                && to_writer.send(r).is_err()
            {
                break;
            }
        }
        Ok(self.out)
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

/// The checksum a patched probe carries: its key's, read back from its bytes, else built again.
fn checksum_of(repr: &ProbeRepr, key: Option<ProbeKey>) -> WireChecksum {
    match key.map(|k| k.checksum) {
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
    /// each within one target and at most 64 per batch of a paced run; each thread gets its
    /// share, none of them more than one block more than another.
    #[test]
    fn blocks_hold_every_probe_once_in_order_and_are_shared() {
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
            let mut per_thread = vec![0u64; threads as usize];
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
                per_thread[(b % plan.threads) as usize] += 1;
            }
            assert_eq!(next, (targets as usize - 1, per_target));
            let (most, least) = (
                per_thread.iter().max().unwrap(),
                per_thread.iter().min().unwrap(),
            );
            assert!(most - least <= 1, "{per_thread:?}");
            if plan.blocks >= u64::from(threads) {
                assert!(*least >= 1, "a thread left out: {per_thread:?}");
            }
        }
    }

    /// The writer writes the threads' records in block order whatever order they are made in,
    /// gives each back, and when a thread ends early still writes the others' later blocks.
    #[test]
    fn records_are_written_in_block_order_and_a_thread_ending_early_loses_only_its_own() {
        let plan = Plan {
            threads: 3,
            per_block: 64,
            blocks_per_target: 12,
            blocks: 12,
            report_each: true,
            progress: false,
        };
        let blocks = plan.blocks;
        let mut lanes = Vec::new();
        let mut workers = Vec::new();
        for w in 0..3u64 {
            let (to_writer, from_worker) = std::sync::mpsc::sync_channel::<Record>(RECORDS);
            let (to_worker, free) = std::sync::mpsc::channel::<Record>();
            for _ in 0..RECORDS {
                to_worker.send(Record::default()).unwrap();
            }
            lanes.push((from_worker, to_worker));
            workers.push(std::thread::spawn(move || {
                let mut b = w;
                while b < blocks {
                    // Thread 1 ends after its second block (1, 4); thread 2 is slow to start.
                    if w == 1 && b >= 7 {
                        break;
                    }
                    if w == 2 && b == 2 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let mut r = free.recv().unwrap();
                    r.clear();
                    r.lines.extend_from_slice(format!("{b}\n").as_bytes());
                    to_writer.send(r).unwrap();
                    b += 3;
                }
            }));
        }
        let mut got = String::new();
        write_in_order(
            &plan,
            lanes,
            &mut |r: &Record| {
                got.push_str(std::str::from_utf8(&r.lines)?);
                Ok(())
            },
            &|| {},
        )
        .unwrap();
        for w in workers {
            w.join().unwrap();
        }
        let want: Vec<String> = (0..blocks)
            .filter(|b| !(b % 3 == 1 && *b >= 7))
            .map(|b| b.to_string())
            .collect();
        assert_eq!(got.lines().collect::<Vec<_>>(), want);
    }
}
