//! `synergy-craft probe`: checks the arguments, finds the source address when none is given, opens
//! the raw socket and drops privilege, then builds, reports and sends each probe. Does I/O.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::cli::ProbeArgs;
use crate::config::probe_config;
use crate::config::site_or_default;
use crate::discover::Replies;
use crate::net::{NetError, privilege, random_u32, raw::RawSender, route, zone_index};
use crate::output::{FateEvent, ProbeEvent, Reporter};
use crate::param::Prefix;
use crate::reply::ProbeKey;

pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let cfg = probe_config(args, &mut random_u32)?;
    let dst_scope = zone_index(cfg.dst.zone.as_deref())?;
    let dport = cfg.repr(cfg.dst.addr).transport.ports().1;
    // The route is needed for a kernel-chosen source and, when sending, for the MTU check.
    let route = if cfg.src.is_none() || !cfg.dry_run {
        Some(route::lookup(cfg.dst.addr, dport, dst_scope)?)
    } else {
        None
    };
    let (src, src_scope, src_from_kernel) = match (&cfg.src, &route) {
        (Some(h), _) => (h.addr, zone_index(h.zone.as_deref())?, false),
        (None, Some(r)) => (r.src, dst_scope, true),
        (None, None) => unreachable!("route looked up when no source is given"),
    };
    if src_from_kernel {
        log::info!(
            "source address {src}: chosen by the kernel's routing table toward {}",
            cfg.dst.addr
        );
    }
    let repr = cfg.repr(src);
    let (bytes, checksum) = repr.to_bytes()?;

    let sender = if cfg.dry_run {
        None
    } else {
        if let Some(mtu) = route.and_then(|r| r.mtu) {
            if bytes.len() > mtu {
                return Err(NetError::LargerThanMtu {
                    len: bytes.len(),
                    dst: cfg.dst.addr,
                    mtu,
                }
                .into());
            }
        }
        let s = RawSender::open(Some((src, src_scope)))?;
        Some(s)
    };
    let mut replies = match (cfg.watch, &sender) {
        (Some(_), Some(_)) => Some(Replies::open(src, src_scope, repr.transport.next_header())?),
        _ => None,
    };
    privilege::drop_all();

    let mut reporter = Reporter::new(&cfg.output)?;
    let start = Instant::now();
    let mut sent_at = Vec::with_capacity(if cfg.watch.is_some() {
        cfg.count.min(1 << 20) as usize
    } else {
        0
    });
    for i in 0..cfg.count {
        if i > 0 && !cfg.interval.is_zero() {
            // Pace against a fixed schedule so that per-probe overhead does not add up.
            let due = start
                + cfg
                    .interval
                    .saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if let Some(s) = &sender {
            if cfg.watch.is_some() && sent_at.len() < (1 << 20) {
                sent_at.push(Instant::now());
            }
            s.send(&bytes, cfg.dst.addr, dst_scope)
                .with_context(|| format!("probe {} of {}", i + 1, cfg.count))?;
        }
        reporter.probe(&ProbeEvent {
            index: i + 1,
            count: cfg.count,
            repr: &repr,
            bytes: &bytes,
            checksum,
            sent: sender.is_some(),
            time: SystemTime::now(),
            src_from_kernel,
        })?;
    }
    if let (Some(replies), Some(watch)) = (replies.as_mut(), cfg.watch) {
        let site = site_or_default(cfg.site, src);
        report_fates(
            &mut reporter,
            replies,
            &repr,
            checksum,
            &sent_at,
            watch,
            &site,
        )?;
    }
    reporter.finish()
}

/// Collects for `watch` after the last probe what came back for it, and reports each fate, or
/// that nothing came back.
fn report_fates(
    reporter: &mut Reporter,
    replies: &mut Replies,
    repr: &crate::wire::probe::ProbeRepr,
    checksum: crate::wire::probe::WireChecksum,
    sent_at: &[Instant],
    watch: Duration,
    site: &Prefix,
) -> anyhow::Result<()> {
    let keys = [ProbeKey::of(repr, checksum)];
    let deadline = sent_at.last().copied().unwrap_or_else(Instant::now) + watch;
    let mut any = false;
    while let Some((_, fate, at)) = replies.next_match(&keys, deadline)? {
        // The copy it answers is taken to be the last one sent before it arrived.
        let n = sent_at.iter().rposition(|t| *t <= at).unwrap_or(0);
        reporter.fate(&FateEvent {
            index: n as u64 + 1,
            count: sent_at.len() as u64,
            hop_limit: repr.ip.hop_limit,
            fate: Some(fate),
            rtt: Some(at.duration_since(sent_at[n])),
            too_high: fate.reached_peer_side(site),
            watch,
        })?;
        any = true;
    }
    if !any {
        reporter.fate(&FateEvent {
            index: sent_at.len() as u64,
            count: sent_at.len() as u64,
            hop_limit: repr.ip.hop_limit,
            fate: None,
            rtt: None,
            too_high: false,
            watch,
        })?;
    }
    Ok(())
}
