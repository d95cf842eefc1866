//! `synergy-craft routes` and `synergy-craft status`: the route memory as read from its state
//! file, and the daemon's state as it answers a status request, as text or as one JSON event.
//! Does I/O.

use crate::cli::ReportArgs;
use crate::routes::{Bound, store};
use std::io::Write as _;

pub fn routes(args: &ReportArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let path = store::path();
    let table = store::load(&path)?;
    if args.json {
        let v = crate::output::json_event(
            "routes",
            serde_json::json!({ "file": path.display().to_string(), "routes": table.views() }),
        );
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let views = table.views();
    if views.is_empty() {
        writeln!(
            out,
            "route memory {}: nothing learnt or set (run `hops`, or `daemon --hop-range`)",
            path.display()
        )?;
        return Ok(());
    }
    writeln!(out, "route memory {}", path.display())?;
    writeln!(out, "{:<44} {:<24} {:<24}", "ROUTE", "MIN", "MAX")?;
    let end = |b: Option<Bound>| match b {
        Some(b) if b.at > 0 => format!("{} ({}, {})", b.value, b.from.name(), ago(b.at)),
        Some(b) => format!("{} ({})", b.value, b.from.name()),
        None => "?".to_string(),
    };
    for r in views {
        let name = match r.kind {
            "operator" => format!("{} (operator)", r.route),
            _ => r.route.clone(),
        };
        let empty = if r.empty { "  EMPTY: auto refuses" } else { "" };
        writeln!(
            out,
            "{name:<44} {:<24} {:<24}{empty}",
            end(r.min),
            end(r.max)
        )?;
    }
    Ok(())
}

/// How long ago a Unix time was, in words.
fn ago(at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(at);
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

pub fn status(args: &ReportArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    use crate::daemon::client::DaemonError;
    let doc = crate::daemon::client::status().map_err(|e| match e {
        // Its words are a punch's ("no privilege to punch ..."): a status request says its own.
        DaemonError::Unavailable { path, why } => anyhow::anyhow!(
            "the synergy-craft daemon at {path} is unavailable: {}",
            crate::with_causes(&why)
        ),
        other => anyhow::Error::from(other),
    })?;
    if args.json {
        print!("{doc}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&doc)
        .map_err(|e| anyhow::anyhow!("the daemon's status is not JSON: {e}"))?;
    let n = |p: &str| v.pointer(p).cloned().unwrap_or(serde_json::Value::Null);
    let secs = |p: &str| {
        n(p).as_f64()
            .map_or("?".into(), |ms| format!("{:.1} s", ms / 1e3))
    };
    writeln!(
        out,
        "daemon pid {}, up {}; kept holes are punched within 1/2-3/4 of the conntrack timeouts udp {}, tcp {}, sctp {}",
        n("/pid"),
        secs("/uptime_ms"),
        secs("/conntrack_timeouts_ms/udp"),
        secs("/conntrack_timeouts_ms/tcp"),
        secs("/conntrack_timeouts_ms/sctp"),
    )?;
    writeln!(
        out,
        "requests {}, punches {}; kept now {} (since start {}, repunches {}, failed {}, ended: socket closed {}, let go {}, process exited {}); route lessons {}",
        n("/counters/requests"),
        n("/counters/punches"),
        n("/counters/kept_now"),
        n("/counters/kept"),
        n("/counters/repunches"),
        n("/counters/repunch_failures"),
        n("/counters/ended_closed"),
        n("/counters/ended_unkept"),
        n("/counters/ended_exited"),
        n("/counters/routes_learnt"),
    )?;
    let flows = v["flows"].as_array().cloned().unwrap_or_default();
    if !flows.is_empty() {
        writeln!(
            out,
            "{:<5} {:<28} {:<28} {:>3} {:>6} {:>8} {:>10} {:>10}",
            "PROTO", "LOCAL", "PEER", "HOP", "UID", "PUNCHES", "LAST AGO", "NEXT IN"
        )?;
    }
    for f in flows {
        let ms = |k: &str| {
            f[k].as_f64()
                .map_or("?".into(), |m| format!("{:.1} s", m / 1e3))
        };
        writeln!(
            out,
            "{:<5} {:<28} {:<28} {:>3} {:>6} {:>8} {:>10} {:>10}",
            f["proto"].as_str().unwrap_or("?"),
            f["local"].as_str().unwrap_or("?"),
            f["peer"].as_str().unwrap_or("?"),
            f["hop_limit"],
            f["uid"],
            f["punches"],
            ms("last_punch_ago_ms"),
            ms("next_punch_in_ms"),
        )?;
    }
    let routes = v["routes"].as_array().map_or(0, Vec::len);
    writeln!(
        out,
        "{routes} route(s) in the route memory (synergy-craft routes)"
    )?;
    Ok(())
}
