//! `synergy-craft hops`: traces the flow's path with every hop limit at once and prints each hop
//! and the recommended punch hop limit. Does I/O.

use std::io::Write as _;
use std::net::SocketAddrV6;
use std::time::Instant;

use serde_json::json;

use crate::cli::HopsArgs;
use crate::config::{hops_config, site_for};
use crate::net::ReplySockets;
use crate::net::raw::RawSender;
use crate::net::{privilege, random_u32, route, zone_index};
use crate::trace::hops::{Place, recommend};
use crate::trace::{TraceSpec, trace};

/// What a trace teaches the route memory (`routes`): the recommended hop limit is the route's
/// minimum (it crossed every local firewall), and a trace that reached the peer's side at hop
/// limit H makes H - 1 its maximum. Written to the state file when this process may (root's
/// `hops`); otherwise a warning says why not. Returns what the `hops` event reports: the route,
/// its range now and the file, or None when nothing was learnt or written.
pub(crate) fn remember(
    rec: &crate::trace::hops::Recommendation,
    peer: SocketAddrV6,
) -> Option<serde_json::Value> {
    let max = rec.peer_side_from.map(|h| h.saturating_sub(1));
    if rec.hop_limit.is_none() && max.is_none() {
        return None;
    }
    let path = crate::routes::store::path();
    let written = crate::net::route::route_key(*peer.ip(), peer.scope_id())
        .map_err(anyhow::Error::from)
        .and_then(|key| {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Root writes in the daemon's user's directory: with CAP_DAC_OVERRIDE raised for this
            // one step (store::update follows no link and makes its file anew).
            let t =
                crate::net::privilege::with_effective(crate::net::privilege::DAC_OVERRIDE, || {
                    crate::routes::store::update(&path, |t| {
                        t.learn_trace(&key, rec.hop_limit, max, at)
                    })
                })?;
            Ok((key.clone(), t.range_for(&key, *peer.ip())))
        });
    match written {
        Ok((key, range)) => Some(json!({
            "file": path.display().to_string(),
            "route": key.to_string(),
            "range": range.to_string(),
            "min": range.min,
            "max": range.max,
        })),
        Err(e) => {
            log::warn!(
                "the route memory was not updated with this trace: {}",
                crate::with_causes(e.as_ref())
            );
            None
        }
    }
}

pub fn run(args: &HopsArgs) -> anyhow::Result<()> {
    let cfg = hops_config(args)?;
    super::pcap_of_probes(cfg.pcap.as_deref())?;
    let dst_scope = zone_index(cfg.dst.zone.as_deref())?;
    let (src, scope) = match &cfg.src {
        Some(h) => (h.addr, zone_index(h.zone.as_deref())?),
        None => (
            route::lookup_on(
                cfg.dst.addr,
                cfg.dport.get(),
                dst_scope,
                cfg.interface.as_deref(),
            )?
            .src,
            dst_scope,
        ),
    };
    let local = SocketAddrV6::new(src, cfg.sport.get(), 0, scope);
    let peer = SocketAddrV6::new(cfg.dst.addr, cfg.dport.get(), 0, dst_scope);
    let site = site_for(cfg.site, src, cfg.dst.addr)?;
    let transport = cfg.proto.next_header();
    let sender = RawSender::open(Some((src, scope)))?;
    if let Some(i) = &cfg.interface {
        sender.bind_device(i)?;
    }
    let mut replies = ReplySockets::open(src, scope, transport)?;
    // CAP_DAC_OVERRIDE stays permitted (not effective) until the route memory is written: the
    // directory is the daemon's user's.
    privilege::drop_all_keeping(&[privilege::DAC_OVERRIDE.0])?;

    let spec = TraceSpec {
        flow: crate::punch::kernel_like(cfg.proto, peer),
        local,
        peer,
        max_hops: cfg.max_hops,
        wait: cfg.wait,
        max_silent: cfg.max_silent,
        site,
        base: random_u32(),
    };
    let started = Instant::now();
    let hops = trace(&spec, &sender, &mut replies)?;
    let elapsed = started.elapsed();
    let rec = recommend(&hops);
    let remembered = remember(&rec, peer);
    privilege::drop_all()?;
    // Show hops up to the last one that answered; the silent rest is summarised.
    let shown = hops
        .iter()
        .rposition(|h| h.place != Place::Silent)
        .map_or(0, |i| i + 1);
    // Written with errors returned: a reader that has gone (`| head`) ends the command cleanly.
    let mut out = std::io::stdout().lock();
    if cfg.json {
        let v = crate::output::json_event(
            "hops",
            json!({
                "proto": spec.flow.proto(),
                "src": format!("[{src}]:{}", cfg.sport),
                "dst": format!("[{}]:{}", cfg.dst.addr, cfg.dport),
                "site_prefix": site.to_string(),
                "hops": &hops,
                "max_hops": cfg.max_hops,
                "recommended_hop_limit": rec.hop_limit,
                "recommendation": rec,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                "route_memory": remembered,
            }),
        );
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "hops {} [{src}]:{} > [{}]:{}, site {site}",
            cfg.proto.name(),
            cfg.sport,
            cfg.dst.addr,
            cfg.dport
        )?;
        writeln!(
            out,
            "{:>3}  {:<28} {:>9}  {:<9} what",
            "hop", "responder", "rtt", "where"
        )?;
        for h in &hops[..shown] {
            let place = match h.place {
                Place::Inside => "inside",
                Place::Outside => "outside",
                Place::PeerSide => "peer side",
                Place::Silent => "-",
            };
            writeln!(
                out,
                "{:>3}  {:<28} {:>9}  {:<9} {}",
                h.hop_limit,
                h.responder().map_or("*".to_string(), |a| a.to_string()),
                h.rtt.map_or("*".to_string(), |d| format!(
                    "{:.2} ms",
                    d.as_secs_f64() * 1000.0
                )),
                place,
                h.fate.map_or("no reply".to_string(), |f| f.describe())
            )?;
        }
        if shown < hops.len() {
            writeln!(
                out,
                "{:>3}  hop limits {}-{}: no reply",
                "",
                shown + 1,
                hops.len()
            )?;
        }
        writeln!(out, "{}", rec.describe())?;
        if let Some(m) = &remembered {
            writeln!(
                out,
                "route memory {}: route {} now {}",
                m["file"].as_str().unwrap_or("?"),
                m["route"].as_str().unwrap_or("?"),
                m["range"].as_str().unwrap_or("?")
            )?;
        }
        writeln!(out, "traced in {:.1} ms", elapsed.as_secs_f64() * 1000.0)?;
    }
    if rec.hop_limit.is_none() {
        anyhow::bail!("{}", rec.describe());
    }
    Ok(())
}
