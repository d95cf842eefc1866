//! `synergy-craft probe`: checks the arguments, finds the source address when none is given, opens
//! the raw socket and drops privilege, then builds, reports and sends each probe. Does I/O.

use std::time::{Instant, SystemTime};

use anyhow::Context;

use crate::cli::ProbeArgs;
use crate::config::probe_config;
use crate::net::{NetError, privilege, random_u32, raw::RawSender, route, zone_index};
use crate::output::{ProbeEvent, Reporter};

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
        privilege::drop_all();
        Some(s)
    };

    let mut reporter = Reporter::new(&cfg.output)?;
    let start = Instant::now();
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
    reporter.finish()
}
