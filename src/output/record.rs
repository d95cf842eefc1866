//! One probe's report as bytes appended to buffers: its human line (and `--hex` lines), its JSON
//! line (the `probe_sent`/`probe_built` event of docs/schema/events.v1.json, keys in the order of
//! every other event) and its pcap record. Nothing is allocated per probe once the buffers have
//! grown: addresses become text once per change, numbers are written by `itoa` and `zmij` (the
//! formatters serde_json uses), the JSON is written field by field, not built as a tree, and in
//! a sweep over source ports of TCP or UDP from the line before. The bytes equal those of the
//! generic formatters (tests below). Pure: no I/O.

use std::io::Write as _;
use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::probe::{ChecksumMode, IpFields, ProbeRepr, Transport, WireChecksum};
use crate::wire::sctp::{SctpChunk, chunk_type};
use crate::wire::tcp::{TcpFlags, TcpOption, TcpRepr};

use super::ProbeEvent;

/// The reports of a run of probes, in order: lines for stdout and records for the pcap file.
#[derive(Debug, Default)]
pub struct Record {
    pub lines: Vec<u8>,
    pub pcap: Vec<u8>,
}

impl Record {
    pub fn clear(&mut self) {
        self.lines.clear();
        self.pcap.clear();
    }
}

/// How each probe is reported, and the text of what changes seldom within a run, made again
/// only when it changes: the addresses, the JSON `ip` object, the TCP flags, the time, and the
/// JSON line's parts from `"count"` to `"index":` and from `,"len":` to `,"src":"[SRC]:` but
/// for the source port (kept with the probe and event they were made for, and made again when
/// any of them differs). The packet's hex, its checksum, the index, the source port and
/// `src_from_kernel` are written for every probe.
#[derive(Debug)]
pub struct Formatter {
    json: bool,
    hex: bool,
    pcap: bool,
    src: Cached<Ipv6Addr>,
    dst: Cached<Ipv6Addr>,
    ip: Cached<IpFields>,
    flags: Cached<TcpFlags>,
    time: Cached<Duration>,
    /// The last event time and its distance from the epoch (a batch of probes shares one).
    since_epoch: Option<(SystemTime, Duration)>,
    /// The JSON line from `"count"` to `"index":`.
    event_head: Cached<(u64, Ipv6Addr, u16, bool)>,
    /// The JSON line around the probe's source port.
    probe_text: ProbeText,
}

/// The JSON text of the last probe from `,"len":` to `,"src":"[SRC]:`, but for the source
/// port's two places, kept with the probe it was made for when that is [`keepable`]: the next
/// probe of a sweep over source ports (the usual one) differs from it there only, and is
/// written from it.
#[derive(Debug, Default)]
struct ProbeText {
    /// The probe (its source port is the last one compared, not the one in the text) and its
    /// packet's length.
    key: Option<(ProbeRepr, usize)>,
    /// `,"len":N,"probe":{...,"src_port":`.
    head: Vec<u8>,
    /// The rest of the probe object and `,"src":"[SRC]:`.
    tail: Vec<u8>,
}

/// A value's text, kept until the value changes.
#[derive(Debug)]
struct Cached<T> {
    key: Option<T>,
    text: Vec<u8>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            key: None,
            text: Vec::new(),
        }
    }
}

impl<T: PartialEq + Copy> Cached<T> {
    /// The text of `key`, made by `make` when `key` is not the last one.
    fn text(&mut self, key: T, make: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        if self.key != Some(key) {
            self.text.clear();
            make(&mut self.text);
            self.key = Some(key);
        }
        &self.text
    }

    /// Appends the text of `key` to `out` (see [`Cached::text`]).
    fn put(&mut self, key: T, out: &mut Vec<u8>, make: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(self.text(key, make));
    }
}

impl Cached<Ipv6Addr> {
    /// The address's text, as Display writes it.
    fn addr(&mut self, a: Ipv6Addr) -> &[u8] {
        self.text(a, |o| {
            let _ = write!(o, "{a}");
        })
    }
}

impl Formatter {
    /// Lines as JSON or human text (with `hex` lines under each), and pcap records when `pcap`.
    pub fn new(json: bool, hex: bool, pcap: bool) -> Self {
        Formatter {
            json,
            hex,
            pcap,
            src: Cached::default(),
            dst: Cached::default(),
            ip: Cached::default(),
            flags: Cached::default(),
            time: Cached::default(),
            since_epoch: None,
            event_head: Cached::default(),
            probe_text: ProbeText::default(),
        }
    }

    /// Appends `ev`'s pcap record (when asked for) and, when `line`, its line(s).
    pub fn probe(&mut self, ev: &ProbeEvent<'_>, line: bool, out: &mut Record) {
        let ts = match self.since_epoch {
            Some((t, d)) if t == ev.time => d,
            _ => {
                let d = ev.time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                self.since_epoch = Some((ev.time, d));
                d
            }
        };
        if self.pcap {
            pcap_record(ts, ev.bytes, &mut out.pcap);
        }
        if !line {
            return;
        }
        if self.json {
            self.json_line(ev, ts, &mut out.lines);
        } else {
            self.human_line(ev, &mut out.lines);
            out.lines.push(b'\n');
            if self.hex {
                for row in ev.bytes.chunks(16) {
                    out.lines.extend_from_slice(b"    ");
                    for (i, b) in row.iter().enumerate() {
                        if i > 0 {
                            out.lines.push(b' ');
                        }
                        hex_digits(&mut out.lines, u64::from(*b), 2);
                    }
                    out.lines.push(b'\n');
                }
            }
        }
    }

    /// The human line, without its newline: `sent 1/2 tcp [SRC]:SPORT > [DST]:DPORT hlim 3 tc
    /// 0x00 flow 0x00000 flags S seq 1 ack 0 win 65535 len 60 csum 0x2cf7`.
    pub fn human_line(&mut self, ev: &ProbeEvent<'_>, out: &mut Vec<u8>) {
        let r = ev.repr;
        let (sp, dp) = r.transport.ports();
        out.extend_from_slice(if ev.sent { b"sent " } else { b"built " });
        int(out, ev.index);
        out.push(b'/');
        int(out, ev.count);
        out.push(b' ');
        out.extend_from_slice(r.transport.name().as_bytes());
        out.extend_from_slice(b" [");
        out.extend_from_slice(self.src.addr(r.ip.src));
        out.extend_from_slice(b"]:");
        int(out, sp);
        out.extend_from_slice(b" > [");
        out.extend_from_slice(self.dst.addr(r.ip.dst));
        out.extend_from_slice(b"]:");
        int(out, dp);
        // As `IpFields`'s Display.
        out.extend_from_slice(b" hlim ");
        int(out, r.ip.hop_limit);
        out.extend_from_slice(b" tc ");
        hex_prefixed(out, u64::from(r.ip.traffic_class), 2);
        out.extend_from_slice(b" flow ");
        hex_prefixed(out, u64::from(r.ip.flow_label.get()), 5);
        if let Some(len) = r.ip.payload_len {
            out.extend_from_slice(b" plen ");
            int(out, len);
        }
        match &r.transport {
            Transport::Tcp(t) => {
                out.extend_from_slice(b" flags ");
                self.flags.put(t.flags, out, |o| {
                    let _ = write!(o, "{}", t.flags);
                });
                out.extend_from_slice(b" seq ");
                int(out, t.seq);
                out.extend_from_slice(b" ack ");
                int(out, t.ack);
                out.extend_from_slice(b" win ");
                int(out, t.window);
                if !t.options.is_empty() {
                    out.extend_from_slice(b" opts [");
                    for (i, o) in t.options.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        let _ = write!(out, "{o}");
                    }
                    out.push(b']');
                }
            }
            Transport::Udp(_) => {}
            Transport::Sctp(sc) => {
                out.extend_from_slice(b" vtag ");
                hex_prefixed(out, u64::from(sc.verification_tag), 8);
                for c in &sc.chunks {
                    match c {
                        SctpChunk::Init(i) => {
                            out.extend_from_slice(b" INIT init_tag ");
                            hex_prefixed(out, u64::from(i.initiate_tag), 8);
                            out.extend_from_slice(b" tsn ");
                            int(out, i.initial_tsn);
                            out.extend_from_slice(b" a_rwnd ");
                            int(out, i.a_rwnd);
                            out.extend_from_slice(b" streams ");
                            int(out, i.outbound_streams);
                            out.push(b':');
                            int(out, i.inbound_streams);
                        }
                        SctpChunk::Generic {
                            ctype,
                            flags,
                            value,
                        } => {
                            out.extend_from_slice(b" chunk ");
                            int(out, *ctype);
                            out.extend_from_slice(match *ctype {
                                chunk_type::ERROR => b" ERROR",
                                chunk_type::ABORT => b" ABORT",
                                chunk_type::SHUTDOWN => b" SHUTDOWN",
                                _ => b"",
                            });
                            out.extend_from_slice(b" flags ");
                            hex_prefixed(out, u64::from(*flags), 2);
                            if !value.is_empty() {
                                out.extend_from_slice(b" value ");
                                hex_bytes(out, value);
                            }
                        }
                    }
                }
            }
        }
        if !r.payload.is_empty() {
            out.extend_from_slice(b" data ");
            int(out, r.payload.len());
            out.push(b'B');
        }
        out.extend_from_slice(b" len ");
        int(out, ev.bytes.len());
        out.extend_from_slice(b" csum ");
        checksum(out, ev.checksum);
        match r.checksum_mode {
            ChecksumMode::Bad => out.extend_from_slice(b" (bad on purpose)"),
            ChecksumMode::Fixed(_) => out.extend_from_slice(b" (fixed by --checksum)"),
            ChecksumMode::Correct => {}
        }
    }

    /// The JSON line, keys in byte order as serde_json's map writes them for every other event.
    fn json_line(&mut self, ev: &ProbeEvent<'_>, ts: Duration, out: &mut Vec<u8>) {
        let r = ev.repr;
        let (sp, dp) = r.transport.ports();
        out.extend_from_slice(b"{\"bytes\":\"");
        hex_bytes(out, ev.bytes);
        out.extend_from_slice(b"\",\"checksum\":\"");
        checksum(out, ev.checksum);
        let dst = &mut self.dst;
        self.event_head
            .put((ev.count, r.ip.dst, dp, ev.sent), out, |o| {
                o.extend_from_slice(b"\",\"count\":");
                int(o, ev.count);
                o.extend_from_slice(b",\"dst\":\"[");
                o.extend_from_slice(dst.addr(r.ip.dst));
                o.extend_from_slice(b"]:");
                int(o, dp);
                o.extend_from_slice(if ev.sent {
                    b"\",\"event\":\"probe_sent\",\"index\":"
                } else {
                    b"\",\"event\":\"probe_built\",\"index\":"
                });
            });
        int(out, ev.index);
        let keepable = keepable(r);
        let same = match &mut self.probe_text.key {
            Some((k, len)) if keepable && *len == ev.bytes.len() => {
                *k.transport.ports_mut().0 = sp;
                same_probe(k, r)
            }
            _ => false,
        };
        if !same {
            let mut text = std::mem::take(&mut self.probe_text.head);
            text.clear();
            text.extend_from_slice(b",\"len\":");
            int(&mut text, ev.bytes.len());
            text.extend_from_slice(b",\"probe\":");
            let port = self.json_probe(r, &mut text);
            text.extend_from_slice(b",\"src\":\"[");
            text.extend_from_slice(self.src.addr(r.ip.src));
            text.extend_from_slice(b"]:");
            let t = &mut self.probe_text;
            t.tail.clear();
            t.tail.extend_from_slice(&text[port.end..]);
            text.truncate(port.start);
            t.head = text;
            match &mut t.key {
                Some((k, len)) if keepable => {
                    keep(k, r);
                    *len = ev.bytes.len();
                }
                None if keepable => t.key = Some((r.clone(), ev.bytes.len())),
                _ => t.key = None,
            }
        }
        out.extend_from_slice(&self.probe_text.head);
        int(out, sp);
        out.extend_from_slice(&self.probe_text.tail);
        int(out, sp);
        out.extend_from_slice(if ev.src_from_kernel {
            b"\",\"src_from_kernel\":true,\"time_unix_ms\":"
        } else {
            b"\",\"src_from_kernel\":false,\"time_unix_ms\":"
        });
        // Milliseconds rounded to the microsecond, as `json_event` rounds every float.
        self.time.put(ts, out, |o| {
            float(o, ((ts.as_secs_f64() * 1000.0) * 1000.0).round() / 1000.0)
        });
        out.extend_from_slice(b",\"v\":");
        int(out, super::JSON_VERSION);
        out.extend_from_slice(b"}\n");
    }

    /// The probe as its `Serialize` writes it (the transport's fields beside `ip`, `payload`,
    /// `checksum_mode` and the `proto` tag), keys in byte order; returns where in `out` the
    /// source port's digits are.
    fn json_probe(&mut self, r: &ProbeRepr, out: &mut Vec<u8>) -> std::ops::Range<usize> {
        let port = |out: &mut Vec<u8>, p: u16| {
            let at = out.len();
            int(out, p);
            at..out.len()
        };
        match &r.transport {
            Transport::Tcp(t) => {
                out.extend_from_slice(b"{\"ack\":");
                int(out, t.ack);
                out.push(b',');
                json_mode(out, r.checksum_mode);
                out.extend_from_slice(b",\"dst_port\":");
                int(out, t.dst_port);
                out.extend_from_slice(b",\"flags\":\"");
                self.flags.put(t.flags, out, |o| {
                    let _ = write!(o, "{}", t.flags);
                });
                out.push(b'"');
                self.json_ip(r, out);
                out.extend_from_slice(b",\"options\":[");
                for (i, o) in t.options.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_option(out, o);
                }
                out.push(b']');
                json_payload(out, &r.payload);
                out.extend_from_slice(b",\"proto\":\"tcp\",\"seq\":");
                int(out, t.seq);
                out.extend_from_slice(b",\"src_port\":");
                let at = port(out, t.src_port);
                out.extend_from_slice(b",\"urgent\":");
                int(out, t.urgent);
                out.extend_from_slice(b",\"window\":");
                int(out, t.window);
                out.push(b'}');
                at
            }
            Transport::Udp(u) => {
                out.push(b'{');
                json_mode(out, r.checksum_mode);
                out.extend_from_slice(b",\"dst_port\":");
                int(out, u.dst_port);
                self.json_ip(r, out);
                json_payload(out, &r.payload);
                out.extend_from_slice(b",\"proto\":\"udp\",\"src_port\":");
                let at = port(out, u.src_port);
                out.push(b'}');
                at
            }
            Transport::Sctp(s) => {
                out.push(b'{');
                json_mode(out, r.checksum_mode);
                out.extend_from_slice(b",\"chunks\":[");
                for (i, c) in s.chunks.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_chunk(out, c);
                }
                out.extend_from_slice(b"],\"dst_port\":");
                int(out, s.dst_port);
                self.json_ip(r, out);
                json_payload(out, &r.payload);
                out.extend_from_slice(b",\"proto\":\"sctp\",\"src_port\":");
                let at = port(out, s.src_port);
                out.extend_from_slice(b",\"verification_tag\":");
                int(out, s.verification_tag);
                out.push(b'}');
                at
            }
        }
    }

    /// `,"ip":{...}`.
    fn json_ip(&mut self, r: &ProbeRepr, out: &mut Vec<u8>) {
        let ip = r.ip;
        let (src, dst) = (&mut self.src, &mut self.dst);
        self.ip.put(ip, out, |out| {
            out.extend_from_slice(b",\"ip\":{\"dst\":\"");
            out.extend_from_slice(dst.addr(ip.dst));
            out.extend_from_slice(b"\",\"flow_label\":");
            int(out, ip.flow_label.get());
            out.extend_from_slice(b",\"hop_limit\":");
            int(out, ip.hop_limit);
            if let Some(len) = ip.payload_len {
                out.extend_from_slice(b",\"payload_len\":");
                int(out, len);
            }
            out.extend_from_slice(b",\"src\":\"");
            out.extend_from_slice(src.addr(ip.src));
            out.extend_from_slice(b"\",\"traffic_class\":");
            int(out, ip.traffic_class);
            out.push(b'}');
        });
    }
}

/// Whether `r` can be kept for the next line without allocating per probe: a TCP probe whose
/// options hold no raw bytes, or a UDP one (an SCTP probe's chunks hold bytes). Any payload.
fn keepable(r: &ProbeRepr) -> bool {
    match &r.transport {
        Transport::Tcp(t) => !t.options.iter().any(|o| matches!(o, TcpOption::Raw { .. })),
        Transport::Udp(_) => true,
        Transport::Sctp(_) => false,
    }
}

/// Makes `k` equal to `r`, a [`keepable`] probe, reusing `k`'s buffers (the derived
/// `clone_from` would allocate them anew). Each field is named: a new one is a compile error.
fn keep(k: &mut ProbeRepr, r: &ProbeRepr) {
    let ProbeRepr {
        ip,
        transport,
        payload,
        checksum_mode,
    } = r;
    k.ip = *ip;
    k.checksum_mode = *checksum_mode;
    k.payload.clone_from(payload);
    match (&mut k.transport, transport) {
        (Transport::Tcp(a), Transport::Tcp(b)) => {
            let TcpRepr {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window,
                urgent,
                options,
            } = b;
            (a.src_port, a.dst_port, a.seq, a.ack) = (*src_port, *dst_port, *seq, *ack);
            (a.flags, a.window, a.urgent) = (*flags, *window, *urgent);
            a.options.clone_from(options);
        }
        (Transport::Udp(a), Transport::Udp(b)) => *a = *b,
        (k, r) => *k = r.clone(),
    }
}

/// `a == b`, with the payload compared only when there is one. An empty Vec's pointer is
/// dangling, and glibc's AVX-512 memcmp, which `[u8] == [u8]` calls even for no bytes, reads it
/// through a masked load that faults and is suppressed: on AMD EPYC that took about 100 ns per
/// call, 4 % of a JSON sweep's time on two cores. (Each field is named: a new one is a compile
/// error here.)
fn same_probe(a: &ProbeRepr, b: &ProbeRepr) -> bool {
    let ProbeRepr {
        ip,
        transport,
        payload,
        checksum_mode,
    } = a;
    *ip == b.ip
        && *checksum_mode == b.checksum_mode
        && *transport == b.transport
        && payload.len() == b.payload.len()
        && (payload.is_empty() || *payload == b.payload)
}

/// `"checksum_mode":...` (the caller writes what goes before it: `{` or `,`).
fn json_mode(out: &mut Vec<u8>, mode: ChecksumMode) {
    match mode {
        ChecksumMode::Correct => out.extend_from_slice(b"\"checksum_mode\":\"correct\""),
        ChecksumMode::Bad => out.extend_from_slice(b"\"checksum_mode\":\"bad\""),
        ChecksumMode::Fixed(v) => {
            out.extend_from_slice(b"\"checksum_mode\":{\"fixed\":");
            int(out, v);
            out.push(b'}');
        }
    }
}

fn json_payload(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(b",\"payload\":\"");
    hex_bytes(out, payload);
    out.push(b'"');
}

/// One TCP option as its `Serialize` writes it (tagged by `kind`), keys in byte order.
fn json_option(out: &mut Vec<u8>, o: &TcpOption) {
    match o {
        TcpOption::Eol => out.extend_from_slice(b"{\"kind\":\"eol\"}"),
        TcpOption::Nop => out.extend_from_slice(b"{\"kind\":\"nop\"}"),
        TcpOption::Mss { value } => {
            out.extend_from_slice(b"{\"kind\":\"mss\",\"value\":");
            int(out, *value);
            out.push(b'}');
        }
        TcpOption::WindowScale { shift } => {
            out.extend_from_slice(b"{\"kind\":\"window_scale\",\"shift\":");
            int(out, *shift);
            out.push(b'}');
        }
        TcpOption::SackPermitted => out.extend_from_slice(b"{\"kind\":\"sack_permitted\"}"),
        TcpOption::Timestamps { tsval, tsecr } => {
            out.extend_from_slice(b"{\"kind\":\"timestamps\",\"tsecr\":");
            int(out, *tsecr);
            out.extend_from_slice(b",\"tsval\":");
            int(out, *tsval);
            out.push(b'}');
        }
        TcpOption::Raw { bytes } => {
            out.extend_from_slice(b"{\"bytes\":\"");
            hex_bytes(out, bytes);
            out.extend_from_slice(b"\",\"kind\":\"raw\"}");
        }
    }
}

/// One SCTP chunk as its `Serialize` writes it (tagged by `chunk`), keys in byte order.
fn json_chunk(out: &mut Vec<u8>, c: &SctpChunk) {
    match c {
        SctpChunk::Init(i) => {
            out.extend_from_slice(b"{\"a_rwnd\":");
            int(out, i.a_rwnd);
            out.extend_from_slice(b",\"chunk\":\"init\",\"inbound_streams\":");
            int(out, i.inbound_streams);
            out.extend_from_slice(b",\"initial_tsn\":");
            int(out, i.initial_tsn);
            out.extend_from_slice(b",\"initiate_tag\":");
            int(out, i.initiate_tag);
            out.extend_from_slice(b",\"outbound_streams\":");
            int(out, i.outbound_streams);
            out.extend_from_slice(b",\"params\":[");
            for (k, p) in i.params.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"type\":");
                int(out, p.ptype);
                out.extend_from_slice(b",\"value\":\"");
                hex_bytes(out, &p.value);
                out.extend_from_slice(b"\"}");
            }
            out.extend_from_slice(b"]}");
        }
        SctpChunk::Generic {
            ctype,
            flags,
            value,
        } => {
            out.extend_from_slice(b"{\"chunk\":\"generic\",\"flags\":");
            int(out, *flags);
            out.extend_from_slice(b",\"type\":");
            int(out, *ctype);
            out.extend_from_slice(b",\"value\":\"");
            hex_bytes(out, value);
            out.extend_from_slice(b"\"}");
        }
    }
}

/// One pcap record (libpcap format: seconds, microseconds, captured and original length, in the
/// big-endian, the byte order of the file header [`super::pcap_header`]; then the bytes).
pub fn pcap_record(ts: Duration, bytes: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&ts.subsec_micros().to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A finite float as serde_json writes it (shortest form that reads back the same), else null.
fn float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `v` as exactly `digits` lowercase hex digits (the low ones).
fn hex_digits(out: &mut Vec<u8>, v: u64, digits: u32) {
    for k in (0..digits).rev() {
        out.push(HEX[((v >> (4 * k)) & 0xf) as usize]);
    }
}

/// `0x` and at least `digits` hex digits, as `{:#0Nx}` writes them (N = digits + 2).
fn hex_prefixed(out: &mut Vec<u8>, v: u64, digits: u32) {
    out.extend_from_slice(b"0x");
    let needed = (64 - v.leading_zeros()).div_ceil(4).max(1);
    hex_digits(out, v, needed.max(digits));
}

/// Bytes as lowercase hex, two digits each (as `wire::to_hex`), by faster-hex's SIMD encoder.
fn hex_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let at = out.len();
    out.resize(at + 2 * bytes.len(), 0);
    // Cannot fail: the room is exactly twice the input.
    let encoded = faster_hex::hex_encode(bytes, &mut out[at..]);
    debug_assert!(encoded.is_ok());
}

/// As `WireChecksum`'s Display: `0x2cf7`, or the CRC32c field as on the wire, `0x0123abcd`.
fn checksum(out: &mut Vec<u8>, c: WireChecksum) {
    match c {
        WireChecksum::Internet(v) => hex_prefixed(out, u64::from(v), 4),
        WireChecksum::Crc32c(_) => hex_prefixed(out, u64::from(c.on_the_wire()), 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{ProbeEvent, json_event};
    use crate::wire::sctp::{InitChunk, InitParam, SctpRepr};
    use crate::wire::tcp::TcpRepr;
    use crate::wire::udp::UdpRepr;
    use std::time::SystemTime;

    /// The generic formatters these lines replace, kept here as the reference: the human line
    /// through `format!` and Display, the JSON line as a serde_json tree through `json_event`.
    fn reference_human(ev: &ProbeEvent<'_>) -> String {
        let r = ev.repr;
        let (sp, dp) = r.transport.ports();
        let verb = if ev.sent { "sent" } else { "built" };
        let mut s = format!(
            "{verb} {}/{} {} [{}]:{sp} > [{}]:{dp} {}",
            ev.index,
            ev.count,
            r.transport.name(),
            r.ip.src,
            r.ip.dst,
            r.ip
        );
        match &r.transport {
            Transport::Tcp(t) => {
                s += &format!(
                    " flags {} seq {} ack {} win {}",
                    t.flags, t.seq, t.ack, t.window
                );
                if !t.options.is_empty() {
                    let opts: Vec<String> = t.options.iter().map(ToString::to_string).collect();
                    s += &format!(" opts [{}]", opts.join(","));
                }
            }
            Transport::Udp(_) => {}
            Transport::Sctp(sc) => {
                s += &format!(" vtag {:#010x}", sc.verification_tag);
                for c in &sc.chunks {
                    match c {
                        SctpChunk::Init(i) => {
                            s += &format!(
                                " INIT init_tag {:#010x} tsn {} a_rwnd {} streams {}:{}",
                                i.initiate_tag,
                                i.initial_tsn,
                                i.a_rwnd,
                                i.outbound_streams,
                                i.inbound_streams
                            )
                        }
                        SctpChunk::Generic {
                            ctype,
                            flags,
                            value,
                        } => {
                            let name = match *ctype {
                                chunk_type::ERROR => " ERROR",
                                chunk_type::ABORT => " ABORT",
                                chunk_type::SHUTDOWN => " SHUTDOWN",
                                _ => "",
                            };
                            s += &format!(" chunk {ctype}{name} flags {flags:#04x}");
                            if !value.is_empty() {
                                s += &format!(" value {}", crate::wire::to_hex(value));
                            }
                        }
                    }
                }
            }
        }
        if !r.payload.is_empty() {
            s += &format!(" data {}B", r.payload.len());
        }
        s += &format!(" len {} csum {}", ev.bytes.len(), ev.checksum);
        match r.checksum_mode {
            ChecksumMode::Bad => s += " (bad on purpose)",
            ChecksumMode::Fixed(_) => s += " (fixed by --checksum)",
            ChecksumMode::Correct => {}
        }
        s
    }

    fn reference_json(ev: &ProbeEvent<'_>) -> String {
        let ts = ev.time.duration_since(UNIX_EPOCH).unwrap();
        let (sp, dp) = ev.repr.transport.ports();
        json_event(
            if ev.sent { "probe_sent" } else { "probe_built" },
            serde_json::json!({
                "index": ev.index,
                "count": ev.count,
                "time_unix_ms": ts.as_secs_f64() * 1000.0,
                "src": format!("[{}]:{sp}", ev.repr.ip.src),
                "dst": format!("[{}]:{dp}", ev.repr.ip.dst),
                "len": ev.bytes.len(),
                "checksum": ev.checksum.to_string(),
                "src_from_kernel": ev.src_from_kernel,
                "probe": ev.repr,
                "bytes": crate::wire::to_hex(ev.bytes),
            }),
        )
        .to_string()
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Probes of every transport, option, chunk and checksum mode, with random field values.
    fn probes(rng: &mut Rng) -> Vec<ProbeRepr> {
        let mut out = Vec::new();
        for k in 0..400 {
            let mut x = || rng.next();
            let ip = IpFields {
                src: Ipv6Addr::from(u128::from(x()) << 64 | u128::from(x() % 3)),
                dst: if k % 2 == 0 {
                    "2001:db8::2".parse().unwrap()
                } else {
                    Ipv6Addr::from(u128::from(x()))
                },
                hop_limit: x() as u8,
                traffic_class: x() as u8,
                flow_label: crate::wire::ipv6::FlowLabel::new(x() as u32 & 0xfffff).unwrap(),
                payload_len: (k % 3 == 0).then(|| x() as u16),
            };
            let payload: Vec<u8> = (0..(x() % 4) as usize).map(|_| x() as u8).collect();
            let checksum_mode = match k % 4 {
                0 => ChecksumMode::Bad,
                1 => ChecksumMode::Fixed(x() as u32),
                _ => ChecksumMode::Correct,
            };
            let options = match k % 5 {
                0 => vec![],
                1 => vec![
                    TcpOption::Mss { value: x() as u16 },
                    TcpOption::SackPermitted,
                ],
                2 => vec![
                    TcpOption::Timestamps {
                        tsval: x() as u32,
                        tsecr: x() as u32,
                    },
                    TcpOption::Nop,
                    TcpOption::WindowScale { shift: x() as u8 },
                ],
                3 => vec![TcpOption::Raw {
                    bytes: vec![254, 4, x() as u8, 0],
                }],
                _ => vec![TcpOption::Eol],
            };
            let transport = match k % 3 {
                0 => Transport::Tcp(TcpRepr {
                    src_port: x() as u16,
                    dst_port: x() as u16,
                    seq: x() as u32,
                    ack: x() as u32,
                    flags: TcpFlags(x() as u8),
                    window: x() as u16,
                    urgent: x() as u16,
                    options,
                }),
                1 => Transport::Udp(UdpRepr {
                    src_port: x() as u16,
                    dst_port: x() as u16,
                }),
                _ => Transport::Sctp(SctpRepr {
                    src_port: x() as u16,
                    dst_port: x() as u16,
                    verification_tag: x() as u32,
                    chunks: vec![
                        SctpChunk::Init(InitChunk {
                            initiate_tag: x() as u32,
                            a_rwnd: x() as u32,
                            outbound_streams: x() as u16,
                            inbound_streams: x() as u16,
                            initial_tsn: x() as u32,
                            params: vec![InitParam::supported_address_types(&[6])],
                        }),
                        SctpChunk::Generic {
                            ctype: [6, 7, 9, 200][(x() % 4) as usize],
                            flags: x() as u8,
                            value: (0..(x() % 3) as usize).map(|_| x() as u8).collect(),
                        },
                    ],
                }),
            };
            out.push(ProbeRepr {
                ip,
                transport,
                payload,
                checksum_mode,
            });
        }
        out
    }

    /// Every line equals the generic formatter's, byte for byte: human lines (with hex) and JSON
    /// lines (also read back as JSON), sent and built, whatever the time.
    #[test]
    fn lines_equal_the_generic_formatters() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let reprs = probes(&mut rng);
        let (mut human, mut json) = (
            Formatter::new(false, true, false),
            Formatter::new(true, false, false),
        );
        for (k, repr) in reprs.iter().enumerate() {
            let bytes: Vec<u8> = (0..(rng.next() % 90) as usize).map(|i| i as u8).collect();
            let checksum = if k % 2 == 0 {
                WireChecksum::Internet(rng.next() as u16)
            } else {
                WireChecksum::Crc32c(rng.next() as u32)
            };
            let time = match k % 3 {
                0 => UNIX_EPOCH + Duration::from_micros(rng.next() % (1 << 52)),
                1 => UNIX_EPOCH + Duration::from_nanos(rng.next() % (1 << 62)),
                _ => SystemTime::now(),
            };
            let ev = ProbeEvent {
                index: rng.next() % 1000 + 1,
                count: rng.next(),
                repr,
                bytes: &bytes,
                checksum,
                sent: k % 2 == 1,
                time,
                src_from_kernel: k % 5 == 0,
            };
            // Twice: once with what the formatter kept from the probe before, once with its own.
            for _ in 0..2 {
                let mut out = Record::default();
                human.probe(&ev, true, &mut out);
                let mut want = reference_human(&ev) + "\n";
                for row in bytes.chunks(16) {
                    let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
                    want += &format!("    {}\n", hex.join(" "));
                }
                assert_eq!(String::from_utf8(out.lines).unwrap(), want);

                let mut out = Record::default();
                json.probe(&ev, true, &mut out);
                let line = String::from_utf8(out.lines).unwrap();
                assert_eq!(line, reference_json(&ev) + "\n");
                let _: serde_json::Value = serde_json::from_str(&line).unwrap();
            }
        }
    }

    /// Sweeps as probe runs them: one probe after another, each differing from the one before
    /// in one swept field (the source port most often, as in the usual sweep), in what the
    /// event says around it (the count, sent or built, the packet's length) or in what no sweep
    /// changes but another target or run would (the payload's bytes, the checksum mode, the
    /// source, the destination): every line equals the generic formatter's, whether the
    /// formatter wrote it from the probe before or anew.
    #[test]
    fn sweeps_equal_the_generic_formatter() {
        use crate::wire::patch::{SweepField, Variant};
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let reprs = probes(&mut rng);
        let mut json = Formatter::new(true, false, false);
        let mut bytes = vec![0u8; 60];
        for base in reprs.iter().take(60) {
            let mut repr = base.clone();
            let (mut count, mut sent) = (1000, true);
            for i in 0..200u64 {
                let k = rng.next();
                let field = if k.is_multiple_of(3) {
                    SweepField::ALL[(k / 3) as usize % SweepField::ALL.len()]
                } else {
                    SweepField::Sport
                };
                Variant::default()
                    .with(field, rng.next() % 70_000)
                    .apply_to(&mut repr);
                match k % 17 {
                    0 => count += 1,
                    1 => sent = !sent,
                    2 => bytes.push(0),
                    // The payload's bytes (at the same length when it has some).
                    3 => match repr.payload.first_mut() {
                        Some(b) => *b ^= 0x5a,
                        None => repr.payload.push(7),
                    },
                    4 => {
                        repr.checksum_mode = match repr.checksum_mode {
                            ChecksumMode::Correct => ChecksumMode::Bad,
                            ChecksumMode::Bad => ChecksumMode::Fixed(k as u32),
                            ChecksumMode::Fixed(_) => ChecksumMode::Correct,
                        }
                    }
                    // Another source, or another target (same port, same count).
                    5 => repr.ip.src = Ipv6Addr::from(u128::from(repr.ip.src) ^ 1),
                    6 => repr.ip.dst = Ipv6Addr::from(u128::from(repr.ip.dst) ^ 0x100),
                    _ => {}
                }
                let ev = ProbeEvent {
                    index: i + 1,
                    count,
                    repr: &repr,
                    bytes: &bytes,
                    checksum: WireChecksum::Internet(i as u16),
                    sent,
                    time: UNIX_EPOCH + Duration::from_millis(i / 7),
                    src_from_kernel: false,
                };
                let mut out = Record::default();
                json.probe(&ev, true, &mut out);
                let line = String::from_utf8(out.lines).unwrap();
                assert_eq!(line, reference_json(&ev) + "\n", "{field:?}");
            }
        }
    }

    /// `keep` makes the kept probe equal to the next one, from whatever it held before: every
    /// keepable probe after every other (so each field changes in both directions).
    #[test]
    fn keep_copies_every_field() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let reprs: Vec<ProbeRepr> = probes(&mut rng).into_iter().filter(keepable).collect();
        assert!(reprs.len() > 100);
        let mut k = reprs[0].clone();
        for (i, r) in reprs.iter().enumerate() {
            for next in [r, &reprs[(i * 7 + 3) % reprs.len()]] {
                keep(&mut k, next);
                assert_eq!(&k, next);
            }
        }
    }

    /// The hex of the bytes is `wire::to_hex`'s for every byte value and every length up to
    /// past two SIMD blocks, appended after what the buffer held.
    #[test]
    fn hex_bytes_equal_to_hex() {
        let all: Vec<u8> = (0..=255u8).collect();
        for len in 0..=all.len() {
            for at in [0, 7] {
                let bytes = &all[at.min(len)..len];
                let mut out = b"{".to_vec();
                hex_bytes(&mut out, bytes);
                assert_eq!(
                    out,
                    format!("{{{}", crate::wire::to_hex(bytes)).into_bytes()
                );
            }
        }
    }

    /// Records written here read back through `pcap_file` after its header: the same bytes and
    /// times (to the microsecond); no line when none is asked for.
    #[test]
    fn pcap_records_read_back_with_their_times() {
        use pcap_file::pcap::{PcapReader, PcapWriter};
        let mut file = PcapWriter::with_header(Vec::new(), crate::output::pcap_header())
            .unwrap()
            .into_writer();
        let repr = crate::fixtures::udp_probe(1000, 2);
        let mut f = Formatter::new(false, false, true);
        let times = [
            Duration::new(1_795_722_704, 17_194_999),
            Duration::new(7, 0),
        ];
        let packets = [vec![0x60u8; 60], vec![1, 2, 3]];
        let mut out = Record::default();
        for (t, p) in times.iter().zip(&packets) {
            let ev = ProbeEvent {
                index: 1,
                count: 2,
                repr: &repr,
                bytes: p,
                checksum: WireChecksum::Internet(0),
                sent: true,
                time: UNIX_EPOCH + *t,
                src_from_kernel: false,
            };
            f.probe(&ev, false, &mut out);
        }
        assert!(out.lines.is_empty());
        file.extend_from_slice(&out.pcap);
        let mut r = PcapReader::new(&file[..]).unwrap();
        for (t, p) in times.iter().zip(&packets) {
            let got = r.next_packet().unwrap().unwrap();
            assert_eq!(got.data.as_ref(), &p[..]);
            assert_eq!(got.timestamp, Duration::from_micros(t.as_micros() as u64));
            assert_eq!(got.orig_len as usize, p.len());
        }
        assert!(r.next_packet().is_none());
    }
}
