//! Reports probes to people and scripts: one human line each on stdout, or JSON Lines (`--json`),
//! optional hex, and a pcap file (link type IPv6, 229) that tcpdump and Wireshark read. The
//! per-probe bytes are made by `record` (pure); this module writes them, in large blocks, and
//! the events of a run that are few (fates, summaries). Does I/O (stdout and the pcap file).

mod record;
pub use record::{Formatter, Record};

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapWriter};
use serde_json::json;

use crate::wire::probe::{ProbeRepr, WireChecksum};

/// The version of the JSON event schema: docs/JSON.md, docs/schema/events.v1.json. Every JSON
/// object synergy-craft writes carries it as `v`.
pub const JSON_VERSION: u64 = 1;

/// How and where to report each probe.
#[derive(Debug, Clone, Default)]
pub struct OutputConfig {
    pub json: bool,
    pub hex: bool,
    pub pcap: Option<PathBuf>,
}

/// One JSON event as every command writes it: `v`, `event`, then `fields` (anything that
/// serializes to an object), with every floating-point number rounded to three decimals
/// (durations are milliseconds, so to the microsecond). Tested below.
pub fn json_event(event: &str, fields: impl serde::Serialize) -> serde_json::Value {
    fn round(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                if let Some(r) = n
                    .as_f64()
                    .map(|f| (f * 1000.0).round() / 1000.0)
                    .and_then(serde_json::Number::from_f64)
                {
                    *n = r;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(round),
            serde_json::Value::Object(o) => o.values_mut().for_each(round),
            _ => {}
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("v".into(), JSON_VERSION.into());
    out.insert("event".into(), event.into());
    // Any Serialize, not only this crate's serde_json::Value (a caller may hold another build of
    // serde_json). A value that is not an object adds no fields.
    if let Ok(serde_json::Value::Object(f)) = serde_json::to_value(&fields) {
        out.extend(f);
    }
    let mut v = serde_json::Value::Object(out);
    round(&mut v);
    v
}

/// Where each probe is reported: stdout, and the pcap file when one is asked for.
pub struct Reporter {
    json: bool,
    /// The pcap file, its header written; records are appended as they come, unbuffered (they
    /// come in large blocks).
    pcap: Option<(File, PathBuf)>,
    out: io::Stdout,
}

/// One probe as it was built and, unless dry-run, sent.
pub struct ProbeEvent<'a> {
    pub index: u64,
    pub count: u64,
    pub repr: &'a ProbeRepr,
    pub bytes: &'a [u8],
    pub checksum: WireChecksum,
    pub sent: bool,
    pub time: SystemTime,
    /// The source address was chosen by the kernel's routing table, not given.
    pub src_from_kernel: bool,
}

/// The end of a sending run.
pub struct Summary {
    pub built: u64,
    pub sent: u64,
    /// Nothing was to be sent (`--dry-run`).
    pub dry_run: bool,
    pub elapsed: std::time::Duration,
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The signal that stopped the run early (SIGINT, SIGTERM), if one did.
    pub interrupted: Option<&'static str>,
}

/// What became of a probe (`probe --watch`); `fate` None: nothing came back.
pub struct FateEvent {
    pub index: u64,
    pub count: u64,
    pub hop_limit: u8,
    pub fate: Option<crate::reply::Fate>,
    pub rtt: Option<std::time::Duration>,
    /// The reply shows the probe reached the peer's side.
    pub too_high: bool,
    /// The probe had identical twins in the run: the reply was matched to it by send order.
    pub in_order: bool,
    pub watch: std::time::Duration,
}

/// Round-trip times of the replies of a run: minimum, mean and maximum (nping's closing
/// statistics). Pure.
#[derive(Debug, Default, Clone)]
pub struct RttStats {
    n: u32,
    sum: std::time::Duration,
    min: Option<std::time::Duration>,
    max: Option<std::time::Duration>,
}

impl RttStats {
    pub fn add(&mut self, rtt: std::time::Duration) {
        self.n += 1;
        self.sum += rtt;
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        self.max = Some(self.max.map_or(rtt, |m| m.max(rtt)));
    }

    pub fn min(&self) -> Option<std::time::Duration> {
        self.min
    }

    pub fn max(&self) -> Option<std::time::Duration> {
        self.max
    }

    /// The mean, None without a reply.
    pub fn avg(&self) -> Option<std::time::Duration> {
        (self.n > 0).then(|| self.sum / self.n)
    }
}

impl Reporter {
    pub fn fate(&mut self, ev: &FateEvent) -> anyhow::Result<()> {
        let mut out = self.out.lock();
        let rtt_ms = ev.rtt.map(|d| d.as_secs_f64() * 1000.0);
        if self.json {
            let v = json_event(
                "fate",
                json!({
                    "index": ev.index,
                    "count": ev.count,
                    "hop_limit": ev.hop_limit,
                    "fate": ev.fate.map_or(json!({ "fate": "silent" }), |f| json!(f)),
                    "rtt_ms": rtt_ms,
                    "too_high": ev.too_high,
                    "matched_in_order": ev.in_order,
                }),
            );
            writeln!(out, "{v}")?;
        } else {
            let what = match (ev.fate, rtt_ms) {
                (Some(crate::reply::Fate::Expired { by, code: 0 }), Some(ms)) => {
                    format!(
                        "expired at hop {} at router {by} after {ms:.2} ms",
                        ev.hop_limit
                    )
                }
                (Some(f), Some(ms)) => format!("{} after {ms:.2} ms", f.describe()),
                _ => format!(
                    "nothing came back within {}",
                    crate::param::show_duration(ev.watch)
                ),
            };
            let warn = if ev.too_high {
                " — it reached the peer's side: hop limit too high"
            } else {
                ""
            };
            let order = if ev.in_order {
                " (identical probes: matched in send order)"
            } else {
                ""
            };
            writeln!(out, "fate {}/{}: {what}{warn}{order}", ev.index, ev.count)?;
        }
        Ok(())
    }

    /// The closing statistics of a `--watch`, as nping's: how many probes got a reply, how many
    /// none (lost), and the round-trip times of the replies.
    pub fn fates_summary(
        &mut self,
        answered: u64,
        silent: u64,
        rtt: &RttStats,
    ) -> anyhow::Result<()> {
        let mut out = self.out.lock();
        let total = answered + silent;
        let lost_pct = if total == 0 {
            0.0
        } else {
            silent as f64 * 100.0 / total as f64
        };
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        if self.json {
            let v = json_event(
                "fates",
                json!({
                    "answered": answered,
                    "silent": silent,
                    "lost_percent": lost_pct,
                    "rtt_min_ms": ms(rtt.min()),
                    "rtt_avg_ms": ms(rtt.avg()),
                    "rtt_max_ms": ms(rtt.max()),
                }),
            );
            writeln!(out, "{v}")?;
        } else {
            let times = match (ms(rtt.min()), ms(rtt.avg()), ms(rtt.max())) {
                (Some(min), Some(avg), Some(max)) => {
                    format!("; rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms")
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "fates: {answered} of {total} probes answered, {silent} silent ({lost_pct:.1}% lost){times}",
            )?;
        }
        Ok(())
    }

    pub fn new(cfg: &OutputConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let pcap = match &cfg.pcap {
            Some(p) => Some((
                open_pcap(p).with_context(|| format!("creating pcap file {}", p.display()))?,
                p.clone(),
            )),
            None => None,
        };
        Ok(Reporter {
            json: cfg.json,
            pcap,
            out: io::stdout(),
        })
    }

    /// The formatter of probe records for this output (each sending thread has its own).
    pub fn formatter(cfg: &OutputConfig) -> Formatter {
        Formatter::new(cfg.json, cfg.hex, cfg.pcap.is_some())
    }

    /// Writes a block of probe reports made by a [`Formatter`]: its lines to stdout and its
    /// records to the pcap file, each in one write.
    pub fn write(&mut self, r: &Record) -> anyhow::Result<()> {
        use anyhow::Context;
        if !r.lines.is_empty() {
            self.out.lock().write_all(&r.lines)?;
        }
        if let Some((f, path)) = &mut self.pcap
            && !r.pcap.is_empty()
        {
            f.write_all(&r.pcap)
                .with_context(|| format!("writing to pcap file {}", path.display()))?;
        }
        Ok(())
    }

    /// The run's summary: a JSON event with `--json`, else a line on stderr (when `show`).
    pub fn summary(&mut self, s: &Summary, show: bool) -> anyhow::Result<()> {
        let secs = s.elapsed.as_secs_f64();
        let pps = if secs > 0.0 {
            s.sent as f64 / secs
        } else {
            0.0
        };
        if self.json {
            let v = json_event(
                "summary",
                json!({ "built": s.built, "sent": s.sent, "elapsed_ms": secs * 1000.0, "pps": pps.round(), "errors": s.errors,
                            "interrupted": s.interrupted }),
            );
            writeln!(self.out.lock(), "{v}")?;
        } else if show {
            let errors = if s.errors.is_empty() {
                "no send errors".to_string()
            } else {
                s.errors
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let stopped = s
                .interrupted
                .map(|sig| format!(" (stopped early by {sig})"))
                .unwrap_or_default();
            if s.dry_run {
                let _ = writeln!(
                    std::io::stderr(),
                    "synergy-craft: built {} (dry run, nothing sent){stopped}",
                    probes(s.built)
                );
            } else {
                let _ = writeln!(
                    std::io::stderr(),
                    "synergy-craft: sent {} in {secs:.3} s, {pps:.0} probes/s; {errors}{stopped}",
                    probes(s.sent)
                );
            }
        }
        Ok(())
    }

    /// Flushes stdout (the pcap file is written unbuffered).
    pub fn finish(self) -> anyhow::Result<()> {
        self.out.lock().flush()?;
        Ok(())
    }
}

/// The pcap header of every file synergy-craft writes: link type raw IPv6 (229), whole packets,
/// microsecond times, big-endian (as every record of [`record::pcap_record`]).
fn pcap_header() -> PcapHeader {
    PcapHeader {
        datalink: DataLink::IPV6,
        snaplen: 65535 + 40,
        endianness: pcap_file::Endianness::Big,
        ts_resolution: pcap_file::TsResolution::MicroSecond,
        ..Default::default()
    }
}

/// Creates the file and writes its header; records follow with [`record::pcap_record`].
fn open_pcap(path: &Path) -> anyhow::Result<File> {
    Ok(PcapWriter::with_header(File::create(path)?, pcap_header())?.into_writer())
}

/// The `--pcap` file of `hops`, `listen` and `connect`: every probe the process sends, written
/// unbuffered as it goes (they send few), so that a run ended by a signal leaves a whole file.
pub struct PcapFile {
    w: std::sync::Mutex<File>,
    path: PathBuf,
}

impl PcapFile {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let w =
            open_pcap(path).with_context(|| format!("creating pcap file {}", path.display()))?;
        Ok(PcapFile {
            w: std::sync::Mutex::new(w),
            path: path.to_path_buf(),
        })
    }

    /// Writes one packet, time-stamped now; a failure is logged (the run goes on).
    pub fn write(&self, packet: &[u8]) {
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut rec = Vec::with_capacity(16 + packet.len());
        record::pcap_record(ts, packet, &mut rec);
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.write_all(&rec) {
            log::warn!("writing to pcap file {}: {e}", self.path.display());
        }
    }
}

/// "1 probe", "2 probes".
fn probes(n: u64) -> String {
    if n == 1 {
        "1 probe".into()
    } else {
        format!("{n} probes")
    }
}

#[cfg(test)]
mod tests {
    use super::json_event;

    #[test]
    fn events_carry_the_version_and_round_floats_to_microseconds() {
        let e = json_event(
            "fate",
            serde_json::json!({ "rtt_ms": 0.049963999999999995, "hops": [{ "rtt_ms": 1.23456 }], "n": 3 }),
        );
        assert_eq!(
            e.to_string(),
            r#"{"event":"fate","hops":[{"rtt_ms":1.235}],"n":3,"rtt_ms":0.05,"v":1}"#
        );
        // An event without fields is the version and the name.
        assert_eq!(
            json_event("fates", ()).to_string(),
            r#"{"event":"fates","v":1}"#
        );
    }

    #[test]
    fn rtt_statistics_are_min_mean_max_of_the_replies() {
        use std::time::Duration;
        let mut s = super::RttStats::default();
        assert_eq!((s.min(), s.avg(), s.max()), (None, None, None));
        for ms in [3, 1, 8] {
            s.add(Duration::from_millis(ms));
        }
        assert_eq!(
            (s.min(), s.avg(), s.max()),
            (
                Some(Duration::from_millis(1)),
                Some(Duration::from_millis(4)),
                Some(Duration::from_millis(8))
            )
        );
    }
}
