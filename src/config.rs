//! Turns the raw command line (`cli`) into a checked probe configuration, once: every number in
//! range, every flag fitting the protocol, random defaults drawn. Pure: randomness is passed in.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::cli::ProbeArgs;
use crate::param::{Host, ParamError, Port, Prefix, parse_u64};
use crate::wire::Proto;
use crate::wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport};
use crate::wire::sctp::{self, InitChunk, InitParam, SctpChunk, SctpRepr};
use crate::wire::tcp::{TcpFlags, TcpOption, TcpRepr};
use crate::wire::udp::UdpRepr;
use crate::wire::{WireError, from_hex};

/// A flag or value the user gave that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("{flag}")]
    Hex {
        flag: &'static str,
        #[source]
        source: WireError,
    },
    #[error("{flag} applies to {applies} probes only, not {proto}")]
    NotFor {
        flag: &'static str,
        applies: &'static str,
        proto: &'static str,
    },
    #[error(
        "--yes: {total} probes would take {estimate}; a run of more than {limit} probes needs --yes"
    )]
    TooLarge {
        total: u64,
        estimate: String,
        limit: u64,
    },
    /// A `--dst @FILE` that could not be read.
    #[error("--dst @{}: cannot read the file of targets", path.display())]
    TargetFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A target of a `--dst` list or file that is not an address.
    #[error("--dst{at}")]
    Target {
        at: String,
        #[source]
        source: ParamError,
    },
    /// A payload that does not fit one IPv6 packet beside the probe's header.
    #[error(
        "{flag}: {len} bytes do not fit; at most {room} fit in this {proto} probe (65535 bytes of \
         IPv6 payload less its {header}-byte header)"
    )]
    PayloadTooLarge {
        flag: &'static str,
        len: usize,
        room: usize,
        proto: &'static str,
        header: usize,
    },
    /// The swept fields' ranges multiply to more probes than a run may have.
    #[error("the swept fields' values multiply to more than 2^40 distinct probes")]
    SweepTooLarge,
    /// A value that its own parser refused, with the argument it was given to (the refusal is
    /// the source, shown after it).
    #[error("{arg}")]
    Arg {
        arg: &'static str,
        #[source]
        source: ParamError,
    },
    #[error("{flag} {value:?}: must be a whole number from {min} to {max}{why}")]
    Range {
        flag: &'static str,
        value: String,
        min: u64,
        max: u64,
        why: &'static str,
    },
    #[error("{flag} {value:?}: {rule}")]
    Invalid {
        flag: &'static str,
        value: String,
        rule: &'static str,
    },
}

pub use crate::output::OutputConfig;

/// A checked `probe` command: everything but the source address, which may come from the kernel.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub src: Option<Host>,
    /// `--dst`: one or more, probed one after the other (the slowest-varying part of the run).
    pub targets: Vec<Host>,
    /// The IPv6 header's fields but the addresses (unspecified here; set for each target).
    pub ip: IpFields,
    pub transport: Transport,
    pub payload: Vec<u8>,
    pub checksum_mode: ChecksumMode,
    pub count: u64,
    /// Distinct probes times `count`: the probes sent to each target.
    pub per_target: u64,
    /// `per_target` times the number of targets.
    pub total: u64,
    pub sweep: SweepSpec,
    /// No line per probe, only the summary.
    pub quiet: bool,
    pub interval: Duration,
    pub dry_run: bool,
    pub output: OutputConfig,
    /// `--link IFACE` and the next hop's MAC.
    pub link: Option<(String, [u8; 6])>,
    /// `-e/--interface IFACE`: the raw socket bound to it.
    pub interface: Option<String>,
    /// How long to collect replies after sending (`--watch`).
    pub watch: Option<Duration>,
    pub site: Option<Prefix>,
    /// `--threads`, when given (else [`ProbeConfig::threads`] chooses).
    pub threads: Option<u32>,
}

impl ProbeConfig {
    /// The probe as it leaves `src` for `dst`.
    pub fn repr(&self, src: Ipv6Addr, dst: Ipv6Addr) -> ProbeRepr {
        ProbeRepr {
            ip: IpFields {
                src,
                dst,
                ..self.ip
            },
            transport: self.transport.clone(),
            payload: self.payload.clone(),
            checksum_mode: self.checksum_mode,
        }
    }
}

fn num<T: TryFrom<u64>>(
    flag: &'static str,
    text: &str,
    rule: &'static str,
) -> Result<T, ConfigError> {
    parse_u64(flag, text)
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| ConfigError::Invalid {
            flag,
            value: text.to_string(),
            rule,
        })
}

/// A number that must lie in `range`; a refusal says the range in the one wording every range
/// has ("must be a whole number from MIN to MAX"), then `why` (may be empty).
fn num_in<T: TryFrom<u64> + Into<u64> + PartialOrd + Copy>(
    flag: &'static str,
    text: &str,
    range: std::ops::RangeInclusive<T>,
    why: &'static str,
) -> Result<T, ConfigError> {
    parse_u64(flag, text)
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .filter(|v| range.contains(v))
        .ok_or_else(|| ConfigError::Range {
            flag,
            value: text.to_string(),
            min: (*range.start()).into(),
            max: (*range.end()).into(),
            why,
        })
}

fn hex(flag: &'static str, text: &str) -> Result<Vec<u8>, ConfigError> {
    from_hex(text).map_err(|source| ConfigError::Hex { flag, source })
}

/// Parses a duration of at most a day: humantime's `500ms`, `1s`, `2m`, `1h`, `1m30s`, or a bare
/// number of seconds (`0.2`).
pub fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Invalid {
        flag,
        value: text.to_string(),
        rule: "write a duration up to a day: 500ms, 1s, 2m, 1h, 250us, 1m30s, or seconds as a number (0.2)",
    };
    let t = text.trim();
    // A bare number is seconds (fractions allowed); anything else is humantime's syntax
    // (ns, us, ms, s, m = minutes, h, d; parts may be combined).
    let d = match t.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Duration::from_secs_f64(v),
        Ok(_) => return Err(bad()),
        Err(_) => humantime::parse_duration(t).map_err(|_| bad())?,
    };
    if d > Duration::from_secs(86_400) {
        return Err(bad());
    }
    Ok(d)
}

/// The most payload bytes `--data-length` gives: what the 16-bit IPv6 payload length leaves after
/// a UDP header (RFC 8200 §3, RFC 768); a TCP header takes more, which the wire layer refuses.
pub const MAX_PAYLOAD: usize = 65535 - 8;

/// The most targets one `probe` run takes (`--dst` list or file).
pub const MAX_TARGETS: usize = 65536;

/// The targets of `--dst`: one address, a comma-separated list, or `@FILE` with addresses
/// separated by new lines, commas or spaces (`#` starts a comment); `read` reads the file.
pub fn targets(
    text: &str,
    read: &dyn Fn(&std::path::Path) -> std::io::Result<String>,
) -> Result<Vec<Host>, ConfigError> {
    let (list, file) = match text.strip_prefix('@') {
        Some(path) => {
            let path = std::path::Path::new(path);
            let body = read(path).map_err(|source| ConfigError::TargetFile {
                path: path.to_path_buf(),
                source,
            })?;
            (body, Some(path))
        }
        None => (text.to_string(), None),
    };
    let mut out = Vec::new();
    for (n, line) in list.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for word in line.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
            let host = word.parse::<Host>().map_err(|source| ConfigError::Target {
                at: file.map_or_else(String::new, |p| format!(" {} line {}", p.display(), n + 1)),
                source,
            })?;
            out.push(host);
        }
    }
    if out.is_empty() || out.len() > MAX_TARGETS {
        return Err(ConfigError::Invalid {
            flag: "--dst",
            value: text.to_string(),
            rule: "give 1 to 65536 IPv6 addresses: one, a list A,B,... or @FILE",
        });
    }
    Ok(out)
}

/// Builds the checked configuration; `random` supplies the random defaults (ISN, tags, TSN), and
/// `read` the file of a `--dst @FILE`.
pub fn probe_config(
    a: &ProbeArgs,
    random: &mut dyn FnMut() -> u32,
    read: &dyn Fn(&std::path::Path) -> std::io::Result<String>,
) -> Result<ProbeConfig, ConfigError> {
    let proto = a.endpoint.proto;
    let pname = proto.name();
    let only = |flag: &'static str,
                given: bool,
                applies: &'static str,
                ok: bool|
     -> Result<(), ConfigError> {
        if given && !ok {
            Err(ConfigError::NotFor {
                flag,
                applies,
                proto: pname,
            })
        } else {
            Ok(())
        }
    };
    let is_tcp = proto == Proto::Tcp;
    let is_sctp = proto == Proto::Sctp;
    // The sweepable fields are checked by their table (`cli::SWEEPABLE`); these are the others.
    for (flag, given) in [
        ("--flags", a.flags.is_some()),
        ("--sack-perm", a.sack_perm),
        ("--tcp-option", !a.tcp_option.is_empty()),
    ] {
        only(flag, given, "tcp", is_tcp)?;
    }
    for (flag, given) in [
        ("--addr-types", a.addr_types.is_some()),
        ("--init-param", !a.init_param.is_empty()),
        ("--chunk", !a.chunk.is_empty()),
    ] {
        only(flag, given, "sctp", is_sctp)?;
    }
    only("--data", a.data.is_some(), "tcp and udp", !is_sctp)?;
    only(
        "--data-string",
        a.data_string.is_some(),
        "tcp and udp",
        !is_sctp,
    )?;
    only(
        "--data-length",
        a.data_length.is_some(),
        "tcp and udp",
        !is_sctp,
    )?;
    let has_init = a
        .chunk
        .iter()
        .any(|c| c.trim().eq_ignore_ascii_case("init"));
    let (first, sweep) = sweep_fields(a, proto, has_init, random)?;

    let targets = targets(&a.endpoint.dst, read)?;
    let mut site = None;
    for t in &targets {
        site = site_arg(a.site_prefix.as_deref(), t)?;
    }
    let src: Option<Host> = a
        .endpoint
        .src
        .as_deref()
        .map(|s| parse_arg("--src", s))
        .transpose()?;

    let payload = match (&a.data, &a.data_string, &a.data_length) {
        (Some(h), _, _) => hex("--data", h)?,
        (None, Some(s), _) => s.as_bytes().to_vec(),
        (None, None, Some(n)) => {
            let n = num_in(
                "--data-length",
                n,
                0..=MAX_PAYLOAD as u64,
                " (the most any probe holds: 65535 bytes of IPv6 payload less a UDP header)",
            )? as usize;
            (0..n).map(|_| random().to_le_bytes()[0]).collect()
        }
        (None, None, None) => Vec::new(),
    };

    // The probe's defaults and the fields given present, then the given fields' first values.
    let transport = match proto {
        Proto::Tcp => Transport::Tcp(tcp_repr(a)?),
        Proto::Udp => Transport::Udp(UdpRepr {
            src_port: 0,
            dst_port: 0,
        }),
        Proto::Sctp => Transport::Sctp(sctp_repr(a, has_init, random)?),
    };
    let distinct = sweep
        .len()
        .filter(|n| *n <= 1 << 40)
        .ok_or(ConfigError::SweepTooLarge)?;

    let count = num_in("--count", &a.count, 1..=u64::from(u32::MAX), "")?;
    let per_target = distinct.checked_mul(count);
    let total = per_target
        .and_then(|n| n.checked_mul(targets.len() as u64))
        .filter(|n| *n <= 1 << 40)
        .ok_or_else(|| ConfigError::Invalid {
            flag: "--count",
            value: a.count.clone(),
            rule: "the sweep times --count times the targets may be at most 2^40 probes",
        })?;
    let per_target = per_target.unwrap_or(total);
    let interval = match (&a.delay, &a.rate) {
        (Some(d), _) => parse_duration("--delay", d)?,
        (None, Some(r)) if r.trim() == "max" => Duration::ZERO,
        (None, Some(r)) => {
            let pps: f64 = r.trim().parse().unwrap_or(f64::NAN);
            if !(pps.is_finite() && pps > 0.0 && pps <= 10_000_000.0) {
                return Err(ConfigError::Invalid {
                    flag: "--rate",
                    value: r.clone(),
                    rule: "probes per second, above 0 and at most 10000000",
                });
            }
            Duration::from_secs_f64(1.0 / pps)
        }
        (None, None) => Duration::ZERO,
    };

    let threads = a
        .threads
        .as_deref()
        .map(|t| num_in("--threads", t, 1..=MAX_THREADS, ""))
        .transpose()?;
    if a.watch.is_some() && threads.is_some_and(|t| t > 1) {
        return Err(ConfigError::Invalid {
            flag: "--threads",
            value: a.threads.clone().unwrap_or_default(),
            rule: "--watch follows the probes of one thread: give 1 or leave it out",
        });
    }

    if total > YES_LIMIT && !a.yes {
        return Err(ConfigError::TooLarge {
            total,
            estimate: estimate(total, interval, threads.unwrap_or(1)),
            limit: YES_LIMIT,
        });
    }

    let checksum_mode = match (&a.checksum, a.badsum) {
        (Some(c), _) if is_sctp => {
            ChecksumMode::Fixed(num_in("--checksum", c, 0..=u32::MAX, " for sctp")?)
        }
        (Some(c), _) => ChecksumMode::Fixed(u32::from(num_in(
            "--checksum",
            c,
            0..=u16::MAX,
            " for tcp and udp (0xffff)",
        )?)),
        (None, true) => ChecksumMode::Bad,
        (None, false) => ChecksumMode::Correct,
    };

    let built = first.apply(&ProbeRepr {
        ip: IpFields::new(Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, 0),
        transport,
        payload: Vec::new(),
        checksum_mode: ChecksumMode::Correct,
    });
    // The payload must fit the 16-bit IPv6 payload length beside this probe's own header.
    let header = match &built.transport {
        Transport::Tcp(t) => t.header_len(),
        Transport::Udp(_) => crate::wire::udp::HEADER_LEN,
        Transport::Sctp(_) => 0,
    };
    let room = usize::from(u16::MAX) - header;
    if payload.len() > room {
        let flag = match (&a.data, &a.data_string) {
            (Some(_), _) => "--data",
            (None, Some(_)) => "--data-string",
            _ => "--data-length",
        };
        return Err(ConfigError::PayloadTooLarge {
            flag,
            len: payload.len(),
            room,
            proto: proto.name(),
            header,
        });
    }

    if let Transport::Tcp(t) = &built.transport
        && t.options_len() > crate::wire::tcp::MAX_OPTIONS_LEN
    {
        return Err(ConfigError::Invalid {
            flag: "TCP options",
            value: format!("{} bytes", t.options_len()),
            rule: "at most 40 bytes fit in a TCP header (RFC 9293 §3.1)",
        });
    }

    Ok(ProbeConfig {
        src,
        targets,
        ip: built.ip,
        transport: built.transport,
        payload,
        checksum_mode,
        count,
        per_target,
        total,
        sweep,
        quiet: a.quiet || (total > EACH_PROBE_LIMIT && !a.each_probe),
        interval,
        dry_run: a.dry_run,
        output: OutputConfig {
            json: a.json,
            hex: a.hex,
            pcap: a.pcap.clone(),
        },
        interface: a
            .interface
            .as_deref()
            .map(|i| interface_name("--interface", i))
            .transpose()?,
        link: match (&a.link, &a.next_hop_mac) {
            (Some(i), Some(m)) => Some((
                interface_name("--link", i)?,
                crate::param::parse_mac(m).ok_or_else(|| ConfigError::Invalid {
                    flag: "--next-hop-mac",
                    value: m.clone(),
                    rule: "write a MAC address as aa:bb:cc:dd:ee:ff",
                })?,
            )),
            _ => None,
        },
        watch: a
            .watch
            .as_deref()
            .map(|w| parse_duration("--watch", w))
            .transpose()?,
        site,
        threads,
    })
}

/// The most sending threads `--threads` takes.
pub const MAX_THREADS: u32 = 64;
/// Probes a sending thread takes at a time in a run at full speed (16 batches of 64).
pub const THREAD_BLOCK: u64 = 1024;

impl ProbeConfig {
    /// How many threads send this run on a machine where this process may use `cpus` cores:
    /// `--threads` when given; else one per core, as many as help: one for `--watch` (it follows
    /// one thread's probes), no more than the run has blocks of [`THREAD_BLOCK`] probes (a
    /// thread's unit of work at full speed), and for a paced run no more than its rate needs at
    /// about what one thread reaches (`MAX_RATE_ESTIMATE`).
    pub fn threads(&self, cpus: usize) -> u32 {
        if let Some(t) = self.threads {
            return t;
        }
        if self.watch.is_some() {
            return 1;
        }
        let blocks = self.total.div_ceil(THREAD_BLOCK);
        let for_rate = if self.interval.is_zero() {
            u64::MAX
        } else {
            (1.0 / self.interval.as_secs_f64() / MAX_RATE_ESTIMATE).ceil() as u64
        };
        let cpus = u64::try_from(cpus).unwrap_or(1);
        let n = cpus
            .min(blocks)
            .min(for_rate)
            .clamp(1, u64::from(MAX_THREADS));
        u32::try_from(n).unwrap_or(1)
    }
}

/// Past this many probes a run prints no line per probe unless `--each-probe` asks for them.
pub const EACH_PROBE_LIMIT: u64 = 1000;
/// Past this many probes a run needs `--yes`.
pub const YES_LIMIT: u64 = 100_000_000;
/// What `--rate max` reaches through the IPv6 stack on the machines measured (docs/PERFORMANCE.md),
/// for estimates only.
const MAX_RATE_ESTIMATE: f64 = 300_000.0;

/// How long `total` probes take at `interval` (zero: as fast as the path allows, about
/// `MAX_RATE_ESTIMATE` per thread of `threads`), in words.
pub fn estimate(total: u64, interval: Duration, threads: u32) -> String {
    let (secs, how) = if interval.is_zero() {
        let rate = MAX_RATE_ESTIMATE * f64::from(threads.max(1));
        (
            total as f64 / rate,
            format!(
                " at about {rate:.0} probes/s, what --rate max reaches here{}",
                if threads > 1 {
                    format!(" with {threads} threads")
                } else {
                    String::new()
                }
            ),
        )
    } else {
        (
            total as f64 * interval.as_secs_f64(),
            format!(" at {:.0} probes/s", 1.0 / interval.as_secs_f64()),
        )
    };
    let t = if secs < 1.0 {
        "under a second".to_string()
    } else if secs < 120.0 {
        format!("about {secs:.0} s")
    } else if secs < 7200.0 {
        format!("about {:.0} minutes", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("about {:.0} hours", secs / 3600.0)
    } else {
        format!("about {:.0} days", secs / 86_400.0)
    };
    format!("{t}{how}")
}

/// The TCP header's flags and the options that are not sweepable fields; the sweepable fields
/// (and their options) are set from the table after (`cli::SWEEPABLE`, `Variant::apply`).
fn tcp_repr(a: &ProbeArgs) -> Result<TcpRepr, ConfigError> {
    let mut options = Vec::new();
    if a.sack_perm {
        options.push(TcpOption::SackPermitted);
    }
    for raw in &a.tcp_option {
        let bytes = hex("--tcp-option", raw)?;
        if bytes.is_empty() {
            return Err(ConfigError::Invalid {
                flag: "--tcp-option",
                value: raw.clone(),
                rule: "give at least one byte",
            });
        }
        // RFC 9293 §3.1: kinds 0 and 1 are one byte; every other option's second byte is its
        // length. A crafting tool sends what it is given, but says when that length is wrong.
        if let (Some(&kind), Some(&len)) = (bytes.first(), bytes.get(1))
            && kind > 1
            && usize::from(len) != bytes.len()
        {
            log::warn!(
                "--tcp-option {raw}: its length byte says {len} but {} bytes are given; sent as given",
                bytes.len()
            );
        } else if bytes.len() == 1 && bytes[0] > 1 {
            log::warn!(
                "--tcp-option {raw}: option kind {} has no length byte; sent as given",
                bytes[0]
            );
        }
        options.push(TcpOption::Raw { bytes });
    }
    let flags = match &a.flags {
        Some(f) => f.parse::<TcpFlags>().map_err(|_| ConfigError::Invalid {
            flag: "--flags",
            value: f.clone(),
            rule: "use letters (SA), names (SYN,ACK), a number (0x12) or none",
        })?,
        None => TcpFlags(TcpFlags::SYN),
    };
    Ok(TcpRepr {
        src_port: 0,
        dst_port: 0,
        seq: 0,
        ack: 0,
        flags,
        window: 0,
        urgent: 0,
        options,
    })
}

/// The SCTP packet's chunks; the sweepable fields of the header and of each INIT are set from
/// the table after (`cli::SWEEPABLE`, which also refuses INIT fields without an INIT).
fn sctp_repr(
    a: &ProbeArgs,
    has_init: bool,
    random: &mut dyn FnMut() -> u32,
) -> Result<SctpRepr, ConfigError> {
    if !has_init {
        let given = a
            .addr_types
            .as_ref()
            .map(|v| ("--addr-types", v.clone()))
            .or_else(|| a.init_param.first().map(|v| ("--init-param", v.clone())));
        if let Some((flag, value)) = given {
            return Err(ConfigError::Invalid {
                flag,
                value,
                rule: "applies to an INIT chunk: add --chunk init (the default SCTP probe is the punch, an ERROR chunk with a Stale Cookie cause)",
            });
        }
    }
    let mut params = Vec::new();
    if let Some(list) = &a.addr_types {
        let mut types = Vec::new();
        for t in list.split(',') {
            types.push(match t.trim().to_ascii_lowercase().as_str() {
                "ipv4" | "4" => sctp::ADDRESS_TYPE_IPV4,
                "ipv6" | "6" => sctp::ADDRESS_TYPE_IPV6,
                _ => {
                    return Err(ConfigError::Invalid {
                        flag: "--addr-types",
                        value: list.clone(),
                        rule: "a list of ipv4,ipv6",
                    });
                }
            });
        }
        params.push(InitParam::supported_address_types(&types));
    }
    for p in &a.init_param {
        let (t, v) = p.split_once(':').ok_or_else(|| ConfigError::Invalid {
            flag: "--init-param",
            value: p.clone(),
            rule: "write TYPE:HEX",
        })?;
        params.push(InitParam {
            ptype: num_in("--init-param", t, 0..=u16::MAX, " (the parameter type)")?,
            value: hex("--init-param", v)?,
        });
    }
    let init = InitChunk {
        initiate_tag: 0,
        a_rwnd: 0,
        outbound_streams: 0,
        inbound_streams: 0,
        initial_tsn: 0,
        params,
    };
    let chunks = if a.chunk.is_empty() {
        vec![SctpChunk::stale_cookie_error(random())]
    } else {
        let mut chunks = Vec::new();
        for c in &a.chunk {
            if c.trim().eq_ignore_ascii_case("init") {
                chunks.push(SctpChunk::Init(init.clone()));
                continue;
            }
            let rule = "write init, or TYPE:FLAGS:HEX (e.g. 6:0: for ABORT)";
            let mut parts = c.splitn(3, ':');
            let (Some(t), Some(f), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ConfigError::Invalid {
                    flag: "--chunk",
                    value: c.clone(),
                    rule,
                });
            };
            chunks.push(SctpChunk::Generic {
                ctype: num("--chunk", t, rule)?,
                flags: num("--chunk", f, rule)?,
                value: hex("--chunk", v)?,
            });
        }
        chunks
    };
    Ok(SctpRepr {
        src_port: 0,
        dst_port: 0,
        verification_tag: 0,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn cfg(args: &str) -> Result<ProbeConfig, ConfigError> {
        let cli = Cli::try_parse_from(format!("synergy-craft probe {args}").split_whitespace())
            .expect("clap");
        let Command::Probe(a) = cli.command else {
            panic!("not a probe command")
        };
        let mut n = 0;
        probe_config(
            &a,
            &mut || {
                n += 1;
                0x1000 + n
            },
            &|p| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    p.display().to_string(),
                ))
            },
        )
    }

    const EP: &str = "--sport 4444 --dst 2001:db8:2::5 --dport 5555";

    #[test]
    fn targets_come_as_one_a_list_or_a_file() {
        let none = |_: &std::path::Path| -> std::io::Result<String> { unreachable!() };
        let addrs = |t: Vec<Host>| t.iter().map(|h| h.addr.to_string()).collect::<Vec<_>>();
        assert_eq!(
            addrs(targets("2001:db8::1", &none).unwrap()),
            ["2001:db8::1"]
        );
        assert_eq!(
            addrs(targets("2001:db8::1,2001:db8::2", &none).unwrap()),
            ["2001:db8::1", "2001:db8::2"]
        );
        let file = |p: &std::path::Path| -> std::io::Result<String> {
            assert_eq!(p, std::path::Path::new("list.txt"));
            Ok("# peers\n2001:db8::1\n\n2001:db8::2, 2001:db8::3 # two more\n".into())
        };
        assert_eq!(
            addrs(targets("@list.txt", &file).unwrap()),
            ["2001:db8::1", "2001:db8::2", "2001:db8::3"]
        );
        let bad = |_: &std::path::Path| Ok("2001:db8::1\nnope\n".to_string());
        let e = targets("@list.txt", &bad).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Target { at, .. } if at == " list.txt line 2"),
            "{e}"
        );
        let empty = |_: &std::path::Path| Ok("# nothing\n".to_string());
        assert!(targets("@list.txt", &empty).is_err());
        assert!(targets("", &none).is_err());
        let missing = |_: &std::path::Path| Err(std::io::ErrorKind::NotFound.into());
        assert!(matches!(
            targets("@gone", &missing),
            Err(ConfigError::TargetFile { .. })
        ));
    }

    /// `--threads` is taken as given (1-64; not above 1 with `--watch`); by default one per
    /// core, as many as help: one for `--watch`, no more than blocks of the run, no more than a
    /// paced run's rate needs.
    #[test]
    fn threads_are_as_given_or_one_per_core_as_many_as_help() {
        let threads = |args: &str, cpus| {
            cfg(&format!(
                "--proto udp --dst 2001:db8:2::5 --dport 5555 {args}"
            ))
            .map(|c| c.threads(cpus))
        };
        assert_eq!(threads("--sport 1 --threads 3", 2).unwrap(), 3);
        assert_eq!(threads("--sport 1-60000 --rate max", 4).unwrap(), 4);
        assert_eq!(threads("--sport 1-60000 --rate max", 1).unwrap(), 1);
        assert_eq!(
            threads("--sport 1-65535 --rate max", 200).unwrap(),
            MAX_THREADS
        );
        assert_eq!(threads("--sport 1-60000 --rate max", 200).unwrap(), 59);
        // Blocks of 1024: 3000 probes are three.
        assert_eq!(threads("--sport 1-3000 --rate max", 8).unwrap(), 3);
        assert_eq!(threads("--sport 1-64", 8).unwrap(), 1);
        // One thread reaches about 300,000 probes/s.
        assert_eq!(threads("--sport 1-60000 --rate 1000", 8).unwrap(), 1);
        assert_eq!(threads("--sport 1-60000 --rate 1000000", 8).unwrap(), 4);
        assert_eq!(threads("--sport 1-60 --watch 1s", 8).unwrap(), 1);
        assert_eq!(threads("--sport 1 --watch 1s --threads 1", 8).unwrap(), 1);
        for bad in [
            "--sport 1 --threads 0",
            "--sport 1 --threads 65",
            "--sport 1 --threads two",
            "--sport 1 --watch 1s --threads 2",
        ] {
            let e = threads(bad, 2).unwrap_err();
            assert!(e.to_string().contains("--threads"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_sweep_table_has_every_field_once_in_the_order_they_vary() {
        use crate::wire::patch::SweepField as F;
        let fields: Vec<F> = crate::cli::SWEEPABLE.iter().map(|f| f.field).collect();
        let mut sorted = fields.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(fields, sorted);
        assert_eq!(fields.len(), crate::wire::patch::FIELDS);
    }

    #[test]
    fn one_flag_two_fields() {
        let c = cfg(&format!("--proto tcp {EP} --timestamp 5 --dry-run")).unwrap();
        let Transport::Tcp(t) = &c.transport else {
            panic!()
        };
        assert!(
            t.options
                .contains(&TcpOption::Timestamps { tsval: 5, tsecr: 0 })
        );
        let c = cfg(&format!("--proto sctp {EP} --chunk init --streams 3")).unwrap();
        let Transport::Sctp(s) = &c.transport else {
            panic!()
        };
        let SctpChunk::Init(i) = &s.chunks[0] else {
            panic!()
        };
        assert_eq!((i.outbound_streams, i.inbound_streams), (3, 3));
        let c = cfg(&format!("--proto sctp {EP} --chunk init --streams 3:1-2")).unwrap();
        assert_eq!(c.sweep.swept(), [crate::wire::patch::SweepField::InStreams]);
    }

    #[test]
    fn every_target_gets_the_whole_sweep() {
        let c =
            cfg("--proto udp --sport 1-3 --dst 2001:db8::1,2001:db8::2 --dport 5 -c 2").unwrap();
        assert_eq!((c.per_target, c.total, c.targets.len()), (6, 12, 2));
    }

    #[test]
    fn defaults() {
        let c = cfg(&format!("--proto tcp {EP}")).unwrap();
        assert_eq!(c.ip.hop_limit, 3);
        let Transport::Tcp(t) = &c.transport else {
            panic!()
        };
        assert_eq!((t.seq, t.flags.0, t.window), (0x1001, TcpFlags::SYN, 65535));
        let c = cfg(&format!("--proto sctp {EP}")).unwrap();
        let Transport::Sctp(s) = &c.transport else {
            panic!()
        };
        assert_eq!(s.verification_tag, 0);
        // The default is the punch: one ERROR chunk with a Stale Cookie cause.
        assert_eq!(s.chunks.len(), 1);
        assert_eq!(s.chunks[0].chunk_type(), 9);
        let c = cfg(&format!("--proto sctp {EP} --chunk init")).unwrap();
        let Transport::Sctp(s) = &c.transport else {
            panic!()
        };
        let SctpChunk::Init(i) = &s.chunks[0] else {
            panic!()
        };
        assert_ne!(i.initiate_tag, 0);
        // The table's values of the INIT's fields.
        assert_eq!(
            (i.a_rwnd, i.outbound_streams, i.inbound_streams),
            (65535, 10, 65535)
        );
        assert_eq!(c.ip.payload_len, None);
    }

    /// A field that needs the link layer is taken with --link or --dry-run, refused otherwise.
    #[test]
    fn payload_length_needs_the_link_layer() {
        let c = cfg(&format!("--proto udp {EP} --payload-length 8 --dry-run")).unwrap();
        assert_eq!(c.ip.payload_len, Some(8));
        let c = cfg(&format!(
            "--proto tcp {EP} --payload-length 0-2 --link eth0 --next-hop-mac 02:00:00:00:00:01"
        ))
        .unwrap();
        assert_eq!(
            c.sweep.swept(),
            [crate::wire::patch::SweepField::PayloadLen]
        );
        assert_eq!(c.total, 3);
        let e = cfg(&format!("--proto udp {EP} --payload-length 8")).unwrap_err();
        assert!(e.to_string().contains("--payload-length") && e.to_string().contains("--link"));
    }

    /// The help of each table flag says its default as the table has it.
    #[test]
    fn help_says_the_table_defaults() {
        assert_eq!(
            crate::cli::sweep_help("--streams"),
            "SCTP INIT stream counts: OUT:IN, or one number for both [sweep, each part; default: 10:65535]"
        );
        assert!(crate::cli::sweep_help("--seq").ends_with("[sweep; default: random]"));
        assert!(crate::cli::sweep_help("--mss").ends_with("[sweep; default: none]"));
    }

    #[test]
    fn refusals() {
        for (args, needle) in [
            (format!("--proto udp {EP} --seq 1"), "applies to tcp"),
            (format!("--proto tcp {EP} --init-tag 5"), "applies to sctp"),
            (
                format!("--proto sctp {EP} --init-tag 5"),
                "add --chunk init",
            ),
            (format!("--proto sctp {EP} --streams 3"), "add --chunk init"),
            (format!("--proto sctp {EP} --data 00"), "tcp and udp"),
            (format!("--proto tcp {EP} --hop-limit 256"), "0 to 255"),
            (format!("--proto tcp {EP} --flow 0x100000"), "0 to 1048575"),
            (format!("--proto tcp {EP} --data abc"), "odd number"),
            (format!("--proto tcp {EP} --data zz"), "non-hex"),
            (format!("--proto sctp {EP} --init-tag 0"), "1 to 4294967295"),
            (format!("--proto tcp {EP} --wscale 15"), "0 to 14"),
            (format!("--proto tcp {EP} --count 0"), "--count"),
            (format!("--proto tcp {EP} --rate 0"), "--rate"),
            (
                format!("--proto tcp {EP} --tcp-option {}", "00".repeat(41)),
                "40 bytes",
            ),
            (
                "--proto tcp --sport 0 --dst 2001:db8::1 --dport 1".to_string(),
                "1 to 65535",
            ),
            (
                "--proto tcp --sport 1 --dst 2001:db8::1 --dport 65536".to_string(),
                "1 to 65535",
            ),
            (
                "--proto tcp --sport 1 --dst 192.0.2.1 --dport 1".to_string(),
                "IPv4",
            ),
            (
                "--proto tcp --sport 1 --dst fe80::1 --dport 1".to_string(),
                "scope",
            ),
        ] {
            let e = format!("{:#}", anyhow::Error::from(cfg(&args).expect_err(&args)));
            assert!(e.contains(needle), "{args}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("--delay", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("--delay", "2").unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_duration("--delay", "250us").unwrap(),
            Duration::from_micros(250)
        );
        assert!(parse_duration("--delay", "-1").is_err());
        assert!(parse_duration("--delay", "fast").is_err());
    }

    #[test]
    fn chunks_in_order() {
        let c = cfg(&format!("--proto sctp {EP} --chunk init --chunk 6:1:0102")).unwrap();
        let Transport::Sctp(s) = &c.transport else {
            panic!()
        };
        assert!(matches!(s.chunks[0], SctpChunk::Init(_)));
        assert_eq!(
            s.chunks[1],
            SctpChunk::Generic {
                ctype: 6,
                flags: 1,
                value: vec![1, 2]
            }
        );
    }
}

/// Whether a session waits for the peer (`listen`) or meets it half way (`connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    Listen,
    Connect,
}

/// How `listen` answers a TCP peer (see `cli::TcpMode` for what each does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    Synergy,
    Classic,
}

/// A checked `listen` or `connect` command.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mode: SessionMode,
    pub proto: Proto,
    pub local: Host,
    pub local_port: Port,
    pub peer: Host,
    pub peer_port: Port,
    pub hop_limit: crate::param::HopChoice,
    /// The local site for an `auto` hop limit; None: `Prefix::default_site`.
    pub site: Option<Prefix>,
    pub timeout: Option<Duration>,
    /// None: no re-punching.
    pub repunch: Option<Duration>,
    pub tcp_mode: TcpMode,
    pub linger: Duration,
    pub json: bool,
    /// `--pcap FILE`: every probe sent, written as it goes.
    pub pcap: Option<std::path::PathBuf>,
}

/// Default re-punch interval: half the Linux default unreplied timeout of the protocol
/// (nf_conntrack_tcp_timeout_syn_sent 120 s, udp_timeout 30 s, sctp_timeout_closed 10 s).
pub fn default_repunch(proto: Proto) -> Duration {
    // One probe (48 to 92 bytes) per interval, well inside the shortest timeouts seen on real
    // firewalls, not Linux's defaults: UDP entries are forgotten after as little as 5 s on some
    // CPE (Linux: 30 s unreplied, 120 s stream), so every 2 s, also while relaying; TCP waits
    // in SYN_SENT (Linux 120 s, CPE from 30 s), so every 20 s while waiting for the peer (an
    // established TCP entry is never re-punched: a SYN would be INVALID there); an SCTP entry
    // made by an INIT lives 10 s in Linux (CLOSED), so every 5 s.
    Duration::from_secs(match proto {
        Proto::Tcp => 20,
        Proto::Udp => 2,
        Proto::Sctp => 5,
    })
}

/// One endpoint field given positionally or as a flag, not both differently.
/// Parses `text`, naming the argument `arg` when it is refused.
fn parse_arg<T: std::str::FromStr<Err = ParamError>>(
    arg: &'static str,
    text: &str,
) -> Result<T, ConfigError> {
    text.parse()
        .map_err(|source| ConfigError::Arg { arg, source })
}

fn one_of<'a, T: PartialEq + std::fmt::Display + ?Sized>(
    name: &'static str,
    pos: Option<&'a T>,
    flag: Option<&'a T>,
) -> Result<&'a T, ConfigError> {
    match (pos, flag) {
        (Some(p), Some(f)) if p != f => Err(ConfigError::Invalid {
            flag: name,
            value: format!("{p} and {f}"),
            rule: "given twice, differently",
        }),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(ConfigError::Invalid {
            flag: name,
            value: String::new(),
            rule: "missing: give PROTO LOCAL_ADDR LOCAL_PORT PEER_ADDR PEER_PORT HOP_LIMIT, positionally or as flags",
        }),
    }
}

/// Builds the checked session configuration from the raw arguments.
pub fn session_config(
    a: &crate::cli::SessionArgs,
    mode: SessionMode,
) -> Result<SessionConfig, ConfigError> {
    let proto = *one_of("--proto", a.pos_proto.as_ref(), a.proto.as_ref())?;
    if proto == Proto::Sctp && mode == SessionMode::Connect {
        return Err(ConfigError::Invalid {
            flag: "PROTO",
            value: proto.name().to_string(),
            rule: "tcp or udp",
        });
    }
    let timeout = a
        .timeout
        .as_deref()
        .map(|t| parse_duration("--timeout", t))
        .transpose()?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(ConfigError::Invalid {
            flag: "--timeout",
            value: a.timeout.clone().unwrap_or_default(),
            rule: "must be above 0 (leave --timeout out to wait without end)",
        });
    }
    let repunch = match a.repunch.as_deref() {
        None => Some(default_repunch(proto)),
        Some(t) => Some(parse_duration("--repunch", t)?).filter(|d| !d.is_zero()),
    };
    if repunch.is_some_and(|d| d < Duration::from_millis(100)) {
        return Err(ConfigError::Invalid {
            flag: "--repunch",
            value: a.repunch.clone().unwrap_or_default(),
            rule: "at least 100ms, or 0 for none",
        });
    }
    let peer: Host = parse_arg(
        "PEER_ADDR (--peer-addr)",
        one_of(
            "PEER_ADDR",
            a.pos_peer_addr.as_deref(),
            a.peer_addr.as_deref(),
        )?,
    )?;
    let local: Host = parse_arg(
        "LOCAL_ADDR (--local-addr)",
        one_of(
            "LOCAL_ADDR",
            a.pos_local_addr.as_deref(),
            a.local_addr.as_deref(),
        )?,
    )?;
    let site = site_arg(a.site_prefix.as_deref(), &peer)?;
    site_for(site, local.addr, peer.addr)?;
    Ok(SessionConfig {
        mode,
        proto,
        local,
        local_port: parse_arg(
            "LOCAL_PORT (--local-port)",
            one_of(
                "LOCAL_PORT",
                a.pos_local_port.as_deref(),
                a.local_port.as_deref(),
            )?,
        )?,
        site,
        peer,
        peer_port: parse_arg(
            "PEER_PORT (--peer-port)",
            one_of(
                "PEER_PORT",
                a.pos_peer_port.as_deref(),
                a.peer_port.as_deref(),
            )?,
        )?,
        hop_limit: one_of(
            "HOP_LIMIT",
            a.pos_hop_limit.as_deref(),
            a.hop_limit.as_deref(),
        )?
        .parse()?,
        timeout,
        repunch,
        tcp_mode: match a.tcp_mode {
            crate::cli::TcpMode::Synergy => TcpMode::Synergy,
            crate::cli::TcpMode::Classic => TcpMode::Classic,
        },
        linger: parse_duration("--linger", &a.linger)?,
        json: a.json,
        pcap: a.pcap.clone(),
    })
}

#[cfg(test)]
mod session_tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn cfg(args: &str) -> Result<SessionConfig, ConfigError> {
        let cli =
            Cli::try_parse_from(format!("synergy-craft {args}").split_whitespace()).expect("clap");
        match cli.command {
            Command::Listen(a) => session_config(&a, SessionMode::Listen),
            Command::Connect(a) => session_config(&a, SessionMode::Connect),
            _ => unreachable!(),
        }
    }

    #[test]
    fn positional_and_flags_agree() {
        let p = cfg("listen tcp 2001:db8:1::11 4444 2001:db8:2::5 5555 2").unwrap();
        let f = cfg("listen --proto tcp --local-addr 2001:db8:1::11 --local-port 4444 --peer-addr 2001:db8:2::5 --peer-port 5555 --hop-limit 2").unwrap();
        assert_eq!(
            (p.local, p.local_port, p.peer, p.peer_port, p.hop_limit),
            (f.local, f.local_port, f.peer, f.peer_port, f.hop_limit)
        );
        assert_eq!(p.repunch, Some(Duration::from_secs(20)));
        assert!(
            cfg("listen udp 2001:db8:1::11 4444 2001:db8:2::5 5555 2 --repunch 0")
                .unwrap()
                .repunch
                .is_none()
        );
    }

    #[test]
    fn refusals() {
        for (args, needle) in [
            (
                "listen tcp 2001:db8:1::11 4444 2001:db8:2::5 5555",
                "missing",
            ),
            (
                "listen tcp 2001:db8:1::11 4444 2001:db8:2::5 5555 2 --hop-limit 3",
                "differently",
            ),
            (
                "connect sctp 2001:db8:1::11 4444 2001:db8:2::5 5555 2",
                "tcp or udp",
            ),
            ("listen tcp 10.0.0.1 4444 2001:db8:2::5 5555 2", "IPv4"),
            (
                "listen tcp 2001:db8:1::11 0 2001:db8:2::5 5555 2",
                "1 to 65535",
            ),
            (
                "listen tcp 2001:db8:1::11 1 2001:db8:2::5 5555 300",
                "1 to 255, or auto",
            ),
            (
                "listen tcp 2001:db8:1::11 1 2001:db8:2::5 5555 0",
                "or auto",
            ),
            (
                "listen udp 2001:db8:1::11 1 2001:db8:2::5 5555 2 --timeout 0",
                "above 0",
            ),
            (
                "listen udp 2001:db8:1::11 1 2001:db8:2::5 5555 2 --repunch 1ms",
                "100ms",
            ),
        ] {
            let e = format!("{:#}", anyhow::Error::from(cfg(args).expect_err(args)));
            assert!(e.contains(needle), "{args}: {e}");
        }
    }
}

/// A checked `hops` command.
#[derive(Debug, Clone)]
pub struct HopsConfig {
    pub proto: Proto,
    pub src: Option<Host>,
    pub sport: Port,
    pub dst: Host,
    pub dport: Port,
    pub max_hops: u8,
    /// How long each hop limit's reply is waited for before the next is sent.
    pub wait: Duration,
    /// The trace stops after this many silent hop limits in a row.
    pub max_silent: u8,
    /// `-e/--interface IFACE`: the trace's raw socket bound to it.
    pub interface: Option<String>,
    /// `--pcap FILE`: every probe of the trace.
    pub pcap: Option<std::path::PathBuf>,
    /// None: `Prefix::default_site`, once the source address is known.
    pub site: Option<Prefix>,
    pub json: bool,
}

pub fn hops_config(a: &crate::cli::HopsArgs) -> Result<HopsConfig, ConfigError> {
    let max_hops: u8 = num_in("--max-hops", &a.max_hops, 1..=64, "")?;
    let max_silent: u8 = num_in("--max-silent", &a.max_silent, 1..=64, "")?;
    let dst: Host = parse_arg("--dst", &a.endpoint.dst)?;
    Ok(HopsConfig {
        proto: a.endpoint.proto,
        src: a
            .endpoint
            .src
            .as_deref()
            .map(|s| parse_arg("--src", s))
            .transpose()?,
        sport: parse_arg("--sport", &a.endpoint.sport)?,
        site: site_arg(a.site_prefix.as_deref(), &dst)?,
        dst,
        dport: parse_arg("--dport", &a.endpoint.dport)?,
        max_hops,
        wait: parse_duration("--wait", &a.wait)?,
        max_silent,
        interface: a
            .interface
            .as_deref()
            .map(|i| interface_name("--interface", i))
            .transpose()?,
        json: a.json,
        pcap: a.pcap.clone(),
    })
}

/// An interface name as Linux allows it (dev_valid_name): 1 to 15 bytes, no '/', no white space,
/// not `.` or `..`. Whether it exists is asked where it is used.
fn interface_name(flag: &'static str, text: &str) -> Result<String, ConfigError> {
    let ok = (1..=15).contains(&text.len())
        && text != "."
        && text != ".."
        && !text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(text.to_string())
    } else {
        Err(ConfigError::Invalid {
            flag,
            value: text.to_string(),
            rule: "an interface name: 1 to 15 characters, no '/', ':' or spaces",
        })
    }
}

/// The local site of a flow from `src` to `peer`: the one given, which must hold `src` (the site
/// is the network the probe starts in; `site_arg` saw that it leaves the peer out), or
/// `Prefix::default_site`.
pub fn site_for(
    site: Option<Prefix>,
    src: std::net::Ipv6Addr,
    peer: std::net::Ipv6Addr,
) -> Result<Prefix, ConfigError> {
    match site {
        Some(s) if !s.contains(src) => Err(ConfigError::Invalid {
            flag: "--site-prefix",
            value: s.to_string(),
            rule: "must contain the local (source) address: the site is the network the probe starts in",
        }),
        Some(s) => Ok(s),
        None => Ok(Prefix::default_site(src, peer)),
    }
}

/// `--site-prefix`, checked: the site is the local network, so it must leave the peer out (a
/// site holding the peer would count the peer's own firewall as local).
fn site_arg(given: Option<&str>, peer: &Host) -> Result<Option<Prefix>, ConfigError> {
    let Some(text) = given else { return Ok(None) };
    let site: Prefix = text.parse()?;
    if site.contains(peer.addr) {
        return Err(ConfigError::Invalid {
            flag: "--site-prefix",
            value: text.to_string(),
            rule: "must not contain the peer's address (the site is the local network, the peer is outside it)",
        });
    }
    Ok(Some(site))
}

/// The fields a `probe` sweeps (those given more than one value), in the order they vary: the
/// order of `wire::patch::SweepField`, hop limit slowest, the last field fastest.
#[derive(Debug, Clone, Default)]
pub struct SweepSpec {
    pub fields: Vec<(crate::wire::patch::SweepField, crate::param::Sweep)>,
}

impl SweepSpec {
    /// The number of distinct probes (the cartesian product), or None when it overflows.
    pub fn len(&self) -> Option<u64> {
        self.fields
            .iter()
            .try_fold(1u64, |acc, (_, s)| acc.checked_mul(s.len()))
    }

    pub fn swept(&self) -> Vec<crate::wire::patch::SweepField> {
        self.fields.iter().map(|(f, _)| *f).collect()
    }

    /// The `i`-th probe's values (`i` < len).
    pub fn variant(&self, mut i: u64) -> crate::wire::patch::Variant {
        let mut v = crate::wire::patch::Variant::default();
        for (f, s) in self.fields.iter().rev() {
            v = v.with(*f, s.get(i % s.len()));
            i /= s.len();
        }
        v
    }
}

/// Parses every sweepable field given, once, by the table in `cli::SWEEPABLE`: each is checked
/// against its protocols, its bounds and what else it needs (an INIT chunk, the link layer).
/// Returns the probe's first values — each field given, and the table's value of each field of
/// this protocol not given (random ones drawn from `random`, in the table's order) — and the
/// sweep of the fields given more than one value.
fn sweep_fields(
    a: &ProbeArgs,
    proto: Proto,
    has_init: bool,
    random: &mut dyn FnMut() -> u32,
) -> Result<(crate::wire::patch::Variant, SweepSpec), ConfigError> {
    use crate::cli::{Initial, Needs};
    use crate::param::Sweep;
    let mut first = crate::wire::patch::Variant::default();
    let mut fields = Vec::new();
    for f in &crate::cli::SWEEPABLE {
        let Some(text) = f.text(a) else {
            if !f.protos.contains(&proto) {
                continue;
            }
            match f.initial {
                Initial::Value(v) => first = first.with(f.field, v),
                Initial::Random => {
                    let v = loop {
                        let v = u64::from(random());
                        if (f.min..=f.max).contains(&v) {
                            break v;
                        }
                    };
                    first = first.with(f.field, v);
                }
                Initial::Unset(_) | Initial::OfFlag => {}
            }
            continue;
        };
        let sw = Sweep::parse(f.flag(), f.part.of(text), f.min, f.max)?;
        if !f.protos.contains(&proto) {
            return Err(ConfigError::NotFor {
                flag: f.flag(),
                applies: f.protos.first().map_or("", |p| p.name()),
                proto: proto.name(),
            });
        }
        let rule = match f.needs {
            Needs::Init if !has_init => Some(
                "applies to an INIT chunk: add --chunk init (the default SCTP probe is the punch, an ERROR chunk with a Stale Cookie cause)",
            ),
            Needs::Link if a.link.is_none() && !a.dry_run => Some(
                "is rewritten by the kernel on the raw socket: send with --link IFACE --next-hop-mac MAC, or look with --dry-run",
            ),
            _ => None,
        };
        if let Some(rule) = rule {
            return Err(ConfigError::Invalid {
                flag: f.flag(),
                value: text.to_string(),
                rule,
            });
        }
        first = first.with(f.field, sw.first());
        if sw.len() > 1 {
            fields.push((f.field, sw));
        }
    }
    Ok((first, SweepSpec { fields }))
}

/// The user named `name`: (uid, primary gid).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: passwd is plain data; all-zero is a valid value to be filled in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r fills `pw` using `buf`; `out` says whether it found the user.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// Every group of the user `name` (primary `gid` included), from the group database.
fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(c) = std::ffi::CString::new(name) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let want = n;
        // SAFETY: `groups` has room for `n` gids; getgrouplist says how many it needs.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return groups;
        }
        if n <= want || n > 65536 {
            return vec![gid];
        }
    }
}

/// The group named `name`'s gid.
fn lookup_group(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: group is plain data; all-zero is a valid value to be filled in.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r fills `gr` using `buf`; `out` says whether it found the group.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// The validated configuration of `daemon`.
pub fn daemon_config(
    a: &crate::cli::DaemonArgs,
) -> Result<crate::daemon::DaemonConfig, ConfigError> {
    let invalid = |flag: &'static str, value: &str, rule: &'static str| ConfigError::Invalid {
        flag,
        value: value.to_string(),
        rule,
    };
    let group = match &a.group {
        Some(g) => Some(
            lookup_group(g).ok_or_else(|| invalid("--group", g, "must name an existing group"))?,
        ),
        None => None,
    };
    let (uid, gid) = lookup_user(&a.user)
        .ok_or_else(|| invalid("--user", &a.user, "must name an existing user"))?;
    // The daemon's user can signal it, limit it and read its state: never root, never a caller.
    if uid == 0 {
        return Err(invalid(
            "--user",
            &a.user,
            "must be an unprivileged user, not root",
        ));
    }
    let admitted_group = groups_of(&a.user, gid)
        .iter()
        .any(|g| a.allow_gid.contains(g) || group == Some(*g));
    if a.allow_uid.contains(&uid) || admitted_group {
        return Err(invalid(
            "--user",
            &a.user,
            "must not be a user the daemon admits (--allow-uid, --allow-gid, --group): its callers could stop it",
        ));
    }
    let mode = match &a.mode {
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| invalid("--mode", m, "is octal permissions, 000-777, e.g. 660"))?,
        None if group.is_some() => 0o660,
        None if !a.allow_uid.is_empty() || !a.allow_gid.is_empty() => 0o666,
        None => 0o600,
    };
    if a.min_hop == 0 || a.min_hop > a.max_hop {
        return Err(invalid(
            "--min-hop",
            &format!("{}-{}", a.min_hop, a.max_hop),
            "must be at least 1 and at most --max-hop",
        ));
    }
    if a.rate == 0 {
        return Err(invalid(
            "--rate",
            "0",
            "must be at least 1 request per second",
        ));
    }
    if a.per_uid == 0 {
        return Err(invalid("--per-uid", "0", "must be at least 1 connection"));
    }
    let deadline = parse_duration("--request-timeout", &a.request_timeout)?;
    if deadline.is_zero() || deadline > Duration::from_secs(60) {
        return Err(invalid(
            "--request-timeout",
            &a.request_timeout,
            "must be more than 0 and at most 60s",
        ));
    }
    let mut allow_gids = a.allow_gid.clone();
    allow_gids.extend(group);
    let mut keep = crate::keep::Timeouts::default();
    for t in &a.conntrack_timeout {
        keep.set(t).ok_or_else(|| {
            invalid(
                "--conntrack-timeout",
                t,
                "is PROTO=DURATION with PROTO udp, tcp or sctp and DURATION from 1s to 1d, e.g. udp=5s",
            )
        })?;
    }
    let mut hop_ranges = Vec::new();
    for r in &a.hop_range {
        let bad = || {
            invalid(
                "--hop-range",
                r,
                "is PREFIX=MIN-MAX with an IPv6 prefix and hop limits 1-255, MIN at most MAX, e.g. 2001:db8:2::/48=2-3",
            )
        };
        let (prefix, range) = r.split_once('=').ok_or_else(bad)?;
        let prefix: crate::param::Prefix = prefix.parse().map_err(|_| bad())?;
        let (min, max) = range.split_once('-').ok_or_else(bad)?;
        let (min, max): (u8, u8) = (
            min.trim().parse().map_err(|_| bad())?,
            max.trim().parse().map_err(|_| bad())?,
        );
        if min == 0 || min > max {
            return Err(bad());
        }
        hop_ranges.push((prefix, min, max));
    }
    Ok(crate::daemon::DaemonConfig {
        socket: PathBuf::from(a.socket.as_deref().unwrap_or(crate::daemon::DEFAULT_SOCKET)),
        policy: crate::daemon::Policy {
            allow_uids: a.allow_uid.clone(),
            allow_gids,
            min_hop: a.min_hop,
            max_hop: a.max_hop,
            rate: a.rate,
            per_uid: a.per_uid,
            deadline,
        },
        group,
        mode,
        user: (uid, gid, a.user.clone()),
        keep,
        hop_ranges,
        routes: crate::routes::store::path(),
    })
}
