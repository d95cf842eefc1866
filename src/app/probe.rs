//! `synergy-craft probe`: checks the arguments, finds the source address when none is given, opens
//! the raw socket and drops privilege, then sends every probe of the sweep (`--count` times),
//! paced or as fast as the path allows, built once and patched per probe, in batches; reports
//! each probe (unless `--quiet`), their fates (`--watch`) and a summary. Does I/O.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use crate::cli::ProbeArgs;
use crate::config::{EACH_PROBE_LIMIT, ProbeConfig, estimate, probe_config, site_for};
use crate::net::ReplySockets;
use crate::net::link::{LinkSender, SendPath};
use crate::net::raw::{BATCH, Batch, RawSender};
use crate::net::{NetError, privilege, random_u32, route, zone_index};
use crate::output::{ProbeEvent, Reporter, Summary};
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
    // One sending path for every target, aimed at each in turn.
    let sender = if cfg.dry_run {
        None
    } else {
        Some(match &cfg.link {
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
                // Bound to the source when there is one (no source lookup per packet).
                let raw = RawSender::open(one_source.then_some((first.src, first.src_scope)))?;
                if let Some(i) = &cfg.interface {
                    raw.bind_device(i)?;
                }
                SendPath::Ip(raw)
            }
        })
    };
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
    let mut run = Run::new(first.patcher.len(), cfg.watch.is_some());
    for (t, target) in targets.iter().enumerate() {
        if stop.requested().is_some() {
            break;
        }
        if let Some(s) = &sender {
            s.aim(target.template.ip.dst, target.dst_scope)?;
        }
        run.send(
            &cfg,
            target,
            sender.as_ref(),
            t as u64 * cfg.per_target,
            &mut reporter,
            &stop,
        )?;
    }
    let summary = run.summary(!cfg.dry_run, stop.requested().map(super::stop::signal_name));
    reporter.summary(
        &summary,
        cfg.quiet || cfg.total > 1 || stop.requested().is_some(),
    )?;
    if let (Some(replies), Some(watch)) = (replies.as_mut(), cfg.watch) {
        let tally = follow(
            replies,
            &run.log,
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

/// The state of one sending run.
struct Run {
    batch: Batch,
    built: u64,
    sent: u64,
    errors: BTreeMap<String, u64>,
    started: Instant,
    elapsed: Duration,
    /// For --watch: the probes that went out.
    log: SentLog,
    /// The packets of the current batch the kernel did not take (bit k: packet k; BATCH is 64).
    unsent: u64,
    watch: bool,
}

impl Run {
    /// A run of probes `len` bytes long.
    fn new(len: usize, watch: bool) -> Self {
        Run {
            batch: Batch::new(len),
            built: 0,
            sent: 0,
            errors: BTreeMap::new(),
            started: Instant::now(),
            elapsed: Duration::ZERO,
            log: SentLog::default(),
            unsent: 0,
            watch,
        }
    }

    /// Sends (or builds) the probes of `target`, the first of them probe `offset` of the run.
    fn send(
        &mut self,
        cfg: &ProbeConfig,
        target: &Target,
        sender: Option<&SendPath>,
        offset: u64,
        reporter: &mut Reporter,
        stop: &Stop,
    ) -> anyhow::Result<()> {
        let (template, patcher) = (&target.template, &target.patcher);
        let distinct = cfg.per_target / cfg.count;
        let paced = !cfg.interval.is_zero();
        // Paced runs send in batches of about a millisecond's worth, so that the schedule holds.
        let per_batch = if paced {
            let per_ms = Duration::from_millis(1).as_secs_f64() / cfg.interval.as_secs_f64();
            (per_ms as usize).clamp(1, BATCH) as u64
        } else {
            BATCH as u64
        };
        let report_each = !cfg.quiet || cfg.output.pcap.is_some();
        let progress = std::io::stderr().is_terminal() && cfg.total >= 100_000;
        let mut last_progress = Instant::now();
        let mut i = 0u64;
        while i < cfg.per_target {
            if paced {
                let due = self.started + cfg.interval.mul_f64((offset + i) as f64);
                // Slept in slices, so that a signal stops a slow run at once.
                while let Some(wait) = due.checked_duration_since(Instant::now()) {
                    if stop.requested().is_some() {
                        break;
                    }
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
            }
            if stop.requested().is_some() {
                break;
            }
            self.batch.clear();
            let first = i;
            while i < cfg.per_target && (i - first) < per_batch {
                let v = cfg.sweep.variant(i % distinct);
                let Some(slot) = self.batch.slot() else { break };
                patcher.write(&v, slot);
                i += 1;
                self.built += 1;
            }
            // Taken before sending: a reply's arrival time (the kernel's) is never before it.
            let sent_at = Instant::now();
            if let Some(s) = sender {
                self.transmit(s);
            }
            if report_each || self.watch {
                let now = SystemTime::now();
                for k in 0..self.batch.len {
                    let n = first + k as u64;
                    let bytes = self.batch.packet(k);
                    // A packet the kernel refused was built, not sent, and has no fate to watch.
                    let went = sender.is_some() && self.unsent & (1 << k) == 0;
                    // Read back once: the watch's key and the report's checksum.
                    let key = ProbeKey::from_packet(bytes);
                    if self.watch
                        && went
                        && let Some(key) = key
                    {
                        self.log.record(
                            key,
                            sent_at,
                            bytes
                                .get(crate::wire::ipv6::field::HOP_LIMIT)
                                .copied()
                                .unwrap_or(0),
                            target.site,
                        );
                    }
                    if report_each {
                        let repr = cfg.sweep.variant(n % distinct).apply(template);
                        let checksum = checksum_of(&repr, key);
                        reporter.probe(
                            &ProbeEvent {
                                index: offset + n + 1,
                                count: cfg.total,
                                repr: &repr,
                                bytes,
                                checksum,
                                sent: went,
                                time: now,
                                src_from_kernel: target.src_from_kernel,
                            },
                            !cfg.quiet,
                        )?;
                    }
                }
            }
            if progress && last_progress.elapsed() >= Duration::from_millis(250) {
                last_progress = Instant::now();
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                let (verb, done) = if sender.is_some() {
                    ("sent", self.sent)
                } else {
                    ("built", self.built)
                };
                eprint!(
                    "\r{verb} {done}/{} ({:.0}%) at {:.0} probes/s ",
                    cfg.total,
                    100.0 * (offset + i) as f64 / cfg.total as f64,
                    done as f64 / secs
                );
            }
        }
        self.elapsed = self.started.elapsed();
        if progress {
            eprintln!();
        }
        Ok(())
    }

    /// Sends the batch, retrying what the kernel could not take at once (ENOBUFS: the queue is
    /// full) a bounded number of times; counts errors by kind and marks each packet not sent in
    /// `unsent` (bit k: the batch's packet k).
    fn transmit(&mut self, s: &SendPath) {
        let mut from = 0;
        let mut tries = 0;
        self.unsent = 0;
        while from < self.batch.len {
            match s.send_batch(&self.batch, from) {
                Ok(n) => {
                    from += n;
                    self.sent += n as u64;
                }
                Err(e) => {
                    *self.errors.entry(error_kind(&e)).or_default() += 1;
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

    fn summary(&self, sending: bool, interrupted: Option<&'static str>) -> Summary {
        Summary {
            built: self.built,
            sent: if sending { self.sent } else { 0 },
            dry_run: !sending,
            elapsed: self.elapsed,
            errors: self.errors.clone(),
            interrupted,
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
