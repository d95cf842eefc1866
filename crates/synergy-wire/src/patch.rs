//! Fast probe variants: a probe built once, then copied and patched per probe in the fields a
//! sweep varies (hop limit, ports, TCP sequence number, SCTP initiate tag), with the TCP/UDP
//! checksum updated incrementally (RFC 1624) and SCTP's CRC32c recomputed, because CRC32c cannot
//! be updated that way. The result equals building the probe from scratch. Pure: no I/O.

use super::checksum;
use super::ipv6::{self, field as ip6};
use super::probe::{ChecksumMode, ProbeRepr, Transport};
use super::{sctp, tcp, udp};

/// A field a sweep can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SweepField {
    HopLimit,
    TrafficClass,
    FlowLabel,
    /// The IPv6 payload length override ([`super::probe::IpFields::payload_len`]).
    PayloadLen,
    Sport,
    Dport,
    Seq,
    Ack,
    Window,
    Urgent,
    Mss,
    WindowScale,
    TsVal,
    TsEcr,
    VerificationTag,
    InitTag,
    ARwnd,
    OutStreams,
    InStreams,
    Tsn,
}

/// How many fields a sweep can vary.
pub const FIELDS: usize = 20;

impl SweepField {
    /// Every field, in the order they vary.
    pub const ALL: [SweepField; FIELDS] = [
        SweepField::HopLimit,
        SweepField::TrafficClass,
        SweepField::FlowLabel,
        SweepField::PayloadLen,
        SweepField::Sport,
        SweepField::Dport,
        SweepField::Seq,
        SweepField::Ack,
        SweepField::Window,
        SweepField::Urgent,
        SweepField::Mss,
        SweepField::WindowScale,
        SweepField::TsVal,
        SweepField::TsEcr,
        SweepField::VerificationTag,
        SweepField::InitTag,
        SweepField::ARwnd,
        SweepField::OutStreams,
        SweepField::InStreams,
        SweepField::Tsn,
    ];

    /// The largest value the field holds on the wire.
    pub fn wire_max(self) -> u64 {
        match self {
            SweepField::HopLimit | SweepField::TrafficClass | SweepField::WindowScale => 0xFF,
            SweepField::FlowLabel => 0xF_FFFF,
            SweepField::PayloadLen
            | SweepField::Sport
            | SweepField::Dport
            | SweepField::Window
            | SweepField::Urgent
            | SweepField::Mss
            | SweepField::OutStreams
            | SweepField::InStreams => 0xFFFF,
            _ => 0xFFFF_FFFF,
        }
    }
}

/// The values of one probe of a sweep: a value for each field that varies (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Variant {
    values: [u64; FIELDS],
    set: u32,
}

impl Variant {
    pub fn with(mut self, f: SweepField, v: u64) -> Self {
        self.values[f as usize] = v;
        self.set |= 1 << (f as u32);
        self
    }

    pub fn get(&self, f: SweepField) -> Option<u64> {
        (self.set & (1 << (f as u32)) != 0).then_some(self.values[f as usize])
    }

    /// `repr` with this variant's values (the slow path, for reports). A TCP option field adds
    /// its option where the probe has none ([`tcp::TcpRepr::add_option`]), so that a probe built
    /// without it gains it; every other field is set where the probe has it (an SCTP INIT
    /// field in every INIT, none without one).
    pub fn apply(&self, repr: &ProbeRepr) -> ProbeRepr {
        let mut r = repr.clone();
        self.apply_to(&mut r);
        r
    }

    /// Sets this variant's values in `r` in place, as [`Variant::apply`] does to a copy: applied
    /// to a copy of the template, one probe after another, it gives each probe's repr without
    /// allocating (a TCP option is added once, then found). Tested below against `apply`.
    pub fn apply_to(&self, r: &mut ProbeRepr) {
        use SweepField as F;
        use tcp::TcpOption as O;
        let v = |f| self.get(f);
        // Sets `place` to the field's value, when the variant has one, cut to the place's width
        // as the patcher writes it.
        macro_rules! set {
            ($place:expr, $field:ident, $ty:ty) => {
                if let Some(x) = v(F::$field) {
                    $place = x as $ty;
                }
            };
        }
        set!(r.ip.hop_limit, HopLimit, u8);
        set!(r.ip.traffic_class, TrafficClass, u8);
        if let Some(x) = v(F::FlowLabel) {
            r.ip.flow_label = crate::ipv6::FlowLabel::new(x as u32).unwrap_or_default();
        }
        if let Some(x) = v(F::PayloadLen) {
            r.ip.payload_len = Some(x as u16);
        }
        let (sport, dport) = r.transport.ports_mut();
        set!(*sport, Sport, u16);
        set!(*dport, Dport, u16);
        match &mut r.transport {
            Transport::Tcp(t) => {
                set!(t.seq, Seq, u32);
                set!(t.ack, Ack, u32);
                set!(t.window, Window, u16);
                set!(t.urgent, Urgent, u16);
                if v(F::Mss).is_some() {
                    t.add_option(O::Mss { value: 0 });
                }
                if v(F::TsVal).is_some() || v(F::TsEcr).is_some() {
                    t.add_option(O::Timestamps { tsval: 0, tsecr: 0 });
                }
                if v(F::WindowScale).is_some() {
                    t.add_option(O::WindowScale { shift: 0 });
                }
                for o in t.options.iter_mut() {
                    match o {
                        O::Mss { value } => set!(*value, Mss, u16),
                        O::WindowScale { shift } => set!(*shift, WindowScale, u8),
                        O::Timestamps { tsval, tsecr } => {
                            set!(*tsval, TsVal, u32);
                            set!(*tsecr, TsEcr, u32);
                        }
                        _ => {}
                    }
                }
            }
            Transport::Udp(_) => {}
            Transport::Sctp(s) => {
                set!(s.verification_tag, VerificationTag, u32);
                // Every INIT of the probe, as a single value sets them all and `locate` finds
                // them all.
                for c in s.chunks.iter_mut() {
                    if let sctp::SctpChunk::Init(i) = c {
                        set!(i.initiate_tag, InitTag, u32);
                        set!(i.a_rwnd, ARwnd, u32);
                        set!(i.outbound_streams, OutStreams, u16);
                        set!(i.inbound_streams, InStreams, u16);
                        set!(i.initial_tsn, Tsn, u32);
                    }
                }
            }
        }
    }
}

/// Where a field sits in the packet.
#[derive(Debug, Clone, Copy)]
enum Loc {
    /// Big-endian bytes at an offset; `covered`: inside the TCP/UDP checksum.
    Bytes {
        off: usize,
        width: usize,
        covered: bool,
    },
    /// Traffic class or flow label, inside the first 32-bit word of the IPv6 header.
    Bits { shift: u32, mask: u32 },
}

/// A built probe and what is needed to patch copies of it.
#[derive(Debug, Clone)]
pub struct Patcher {
    template: Vec<u8>,
    fields: Vec<(SweepField, Loc)>,
    proto: u8,
    mode: ChecksumMode,
    /// The template's correct TCP/UDP checksum as it stands on the wire, the base of every
    /// incremental update (a deliberately bad one is made from the updated correct one).
    base_correct: u16,
}

const T: usize = ipv6::HEADER_LEN;

/// The most 16-bit words a sweep can touch under the TCP/UDP checksum: every swept field lies in
/// the transport header, at most 60 bytes (RFC 9293 §3.1).
const MAX_WORDS: usize = 30;

/// Every place `f` sits in the probe `repr` builds (a TCP option kind or an SCTP INIT may occur
/// more than once, and `Variant::apply` sets each); empty when the probe has no such field.
fn locate(repr: &ProbeRepr, f: SweepField) -> Vec<Loc> {
    let b = |off: usize, width: usize, covered: bool| {
        vec![Loc::Bytes {
            off,
            width,
            covered,
        }]
    };
    match (f, &repr.transport) {
        (SweepField::HopLimit, _) => b(ip6::HOP_LIMIT, 1, false),
        (SweepField::PayloadLen, _) => b(ip6::PAYLOAD_LEN.start, 2, false),
        (SweepField::TrafficClass, _) => vec![Loc::Bits {
            shift: 20,
            mask: 0xFF,
        }],
        (SweepField::FlowLabel, _) => vec![Loc::Bits {
            shift: 0,
            mask: 0xF_FFFF,
        }],
        (SweepField::Sport, t) => b(T, 2, !matches!(t, Transport::Sctp(_))),
        (SweepField::Dport, t) => b(T + 2, 2, !matches!(t, Transport::Sctp(_))),
        (SweepField::Seq, Transport::Tcp(_)) => b(T + tcp::field::SEQ.start, 4, true),
        (SweepField::Ack, Transport::Tcp(_)) => b(T + tcp::field::ACK.start, 4, true),
        (SweepField::Window, Transport::Tcp(_)) => b(T + tcp::field::WINDOW.start, 2, true),
        (SweepField::Urgent, Transport::Tcp(_)) => b(T + tcp::field::URGENT.start, 2, true),
        (
            SweepField::Mss | SweepField::WindowScale | SweepField::TsVal | SweepField::TsEcr,
            Transport::Tcp(t),
        ) => {
            let mut at = T + tcp::field::OPTIONS;
            let mut found = Vec::new();
            for o in &t.options {
                let hit = match (f, o) {
                    (SweepField::Mss, tcp::TcpOption::Mss { .. }) => Some((2, 2)),
                    (SweepField::WindowScale, tcp::TcpOption::WindowScale { .. }) => Some((2, 1)),
                    (SweepField::TsVal, tcp::TcpOption::Timestamps { .. }) => Some((2, 4)),
                    (SweepField::TsEcr, tcp::TcpOption::Timestamps { .. }) => Some((6, 4)),
                    _ => None,
                };
                if let Some((rel, width)) = hit {
                    found.extend(b(at + rel, width, true));
                }
                at += o.len();
            }
            found
        }
        (SweepField::VerificationTag, Transport::Sctp(_)) => {
            b(T + sctp::field::VERIFICATION_TAG.start, 4, false)
        }
        (
            SweepField::InitTag
            | SweepField::ARwnd
            | SweepField::OutStreams
            | SweepField::InStreams
            | SweepField::Tsn,
            Transport::Sctp(s),
        ) => {
            let r = match f {
                SweepField::InitTag => sctp::init_field::INITIATE_TAG,
                SweepField::ARwnd => sctp::init_field::A_RWND,
                SweepField::OutStreams => sctp::init_field::OUTBOUND_STREAMS,
                SweepField::InStreams => sctp::init_field::INBOUND_STREAMS,
                _ => sctp::init_field::INITIAL_TSN,
            };
            let mut at = T + sctp::field::CHUNKS;
            let mut found = Vec::new();
            for c in &s.chunks {
                if matches!(c, sctp::SctpChunk::Init(_)) {
                    found.extend(b(at + sctp::chunk_field::VALUE + r.start, r.len(), false));
                }
                at += c.wire_len();
            }
            found
        }
        _ => Vec::new(),
    }
}

impl Patcher {
    /// Builds the template from `repr` and locates the `swept` fields; an error names a field
    /// this probe does not have.
    pub fn new(repr: &ProbeRepr, swept: &[SweepField]) -> Result<Self, super::WireError> {
        let (template, _) = repr.to_bytes()?;
        let mut correct = repr.clone();
        correct.checksum_mode = ChecksumMode::Correct;
        let base_correct = match correct.to_bytes()?.1 {
            super::probe::WireChecksum::Internet(c) => c,
            super::probe::WireChecksum::Crc32c(_) => 0,
        };
        let mut fields = Vec::with_capacity(swept.len());
        for f in swept {
            let locs = locate(repr, *f);
            if locs.is_empty() {
                return Err(super::WireError::Malformed {
                    what: "sweep",
                    detail: format!(
                        "a {} probe built this way has no {f:?} field to vary",
                        repr.transport.name()
                    ),
                });
            }
            fields.extend(locs.into_iter().map(|l| (*f, l)));
        }
        Ok(Patcher {
            template,
            fields,
            proto: repr.transport.next_header(),
            mode: repr.checksum_mode,
            base_correct,
        })
    }

    pub fn len(&self) -> usize {
        self.template.len()
    }

    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    /// Writes the probe for `v` into `out` (exactly `len()` bytes).
    pub fn write(&self, v: &Variant, out: &mut [u8]) {
        out.copy_from_slice(&self.template);
        // The 16-bit words (aligned from the transport header) under the checksum that the fields
        // touch, each once: two fields may share one (RFC 1624 updates a word by its old and new
        // value, once).
        let mut words = [0usize; MAX_WORDS];
        let mut n_words = 0;
        for (f, loc) in &self.fields {
            let Some(val) = v.get(*f) else { continue };
            match *loc {
                Loc::Bits { shift, mask } => {
                    let mut w = u32::from_be_bytes([out[0], out[1], out[2], out[3]]);
                    w = (w & !(mask << shift)) | ((val as u32 & mask) << shift);
                    out[0..4].copy_from_slice(&w.to_be_bytes());
                }
                Loc::Bytes {
                    off,
                    width,
                    covered,
                } => {
                    let bytes = val.to_be_bytes();
                    out[off..off + width].copy_from_slice(&bytes[8 - width..]);
                    if covered {
                        let mut w = off - (off - T) % 2;
                        while w < off + width {
                            if !words[..n_words].contains(&w) && n_words < words.len() {
                                words[n_words] = w;
                                n_words += 1;
                            }
                            w += 2;
                        }
                    }
                }
            }
        }
        let mut c = self.base_correct;
        for &w in &words[..n_words] {
            let old = u16::from_be_bytes([self.template[w], self.template[w + 1]]);
            let new = u16::from_be_bytes([out[w], out[w + 1]]);
            c = checksum::update16(c, old, new);
        }
        let covered_changed = n_words > 0;
        // What is stored is decided by the one policy `ProbeRepr::emit` uses too.
        match self.proto {
            ipv6::proto::TCP if covered_changed => {
                let f = T + tcp::field::CHECKSUM.start;
                out[f..f + 2].copy_from_slice(&self.mode.store16(self.proto, c).to_be_bytes());
            }
            ipv6::proto::UDP if covered_changed => {
                let f = T + udp::field::CHECKSUM.start;
                out[f..f + 2].copy_from_slice(&self.mode.store16(self.proto, c).to_be_bytes());
            }
            ipv6::proto::SCTP if !matches!(self.mode, ChecksumMode::Fixed(_)) => {
                let f = T + sctp::field::CHECKSUM.start;
                out[f..f + 4].fill(0);
                let crc = self.mode.store_crc32c(checksum::crc32c(&out[T..]));
                out[f..f + 4].copy_from_slice(&checksum::sctp_wire_bytes(crc));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp::{InitChunk, SctpChunk, SctpRepr};
    use crate::tcp::TcpOption;
    use crate::udp::UdpRepr;

    fn repr(transport: Transport, payload: &[u8], mode: ChecksumMode) -> ProbeRepr {
        ProbeRepr {
            checksum_mode: mode,
            ..crate::fixtures::probe(transport, payload.to_vec())
        }
    }

    fn with(r: &ProbeRepr, v: &Variant) -> ProbeRepr {
        v.apply(r)
    }

    const ALL: [SweepField; FIELDS] = SweepField::ALL;

    /// Patched copies equal probes built from scratch, for every transport and checksum mode.
    #[test]
    fn patched_equals_built() {
        let tcp = Transport::Tcp(crate::fixtures::tcp_header(vec![
            TcpOption::Mss { value: 1440 },
            TcpOption::SackPermitted,
            TcpOption::Timestamps { tsval: 5, tsecr: 6 },
            TcpOption::Nop,
            TcpOption::WindowScale { shift: 7 },
        ]));
        let udp = Transport::Udp(UdpRepr {
            src_port: 1000,
            dst_port: 53,
        });
        let sctp = Transport::Sctp(SctpRepr {
            src_port: 1000,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![SctpChunk::Init(crate::fixtures::init_chunk())],
        });
        // Timestamps at an odd offset, so that TsVal and TsEcr share a checksum word, and two
        // options of one kind (the library can build them), each varied.
        let tcp_odd = Transport::Tcp(crate::fixtures::tcp_header(vec![
            TcpOption::Nop,
            TcpOption::Timestamps { tsval: 5, tsecr: 6 },
            TcpOption::Mss { value: 1440 },
            TcpOption::Nop,
            TcpOption::Mss { value: 1220 },
            TcpOption::WindowScale { shift: 7 },
        ]));
        // Two INITs after another chunk: each INIT's fields are varied.
        let SctpChunk::Init(first) = (match &sctp {
            Transport::Sctp(s) => s.chunks[0].clone(),
            _ => unreachable!(),
        }) else {
            unreachable!()
        };
        let sctp_two = Transport::Sctp(SctpRepr {
            src_port: 1000,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![
                SctpChunk::stale_cookie_error(3),
                SctpChunk::Init(first.clone()),
                SctpChunk::Init(InitChunk {
                    params: vec![crate::sctp::InitParam::supported_address_types(&[6])],
                    ..first
                }),
            ],
        });
        let mut next = crate::fixtures::xorshift(0x2545_F491_4F6C_DD1D);
        for t in [tcp, tcp_odd, udp, sctp, sctp_two] {
            for mode in [
                ChecksumMode::Correct,
                ChecksumMode::Bad,
                ChecksumMode::Fixed(0x1234),
            ] {
                for payload in [&b""[..], b"x", b"synergy"] {
                    if matches!(t, Transport::Sctp(_)) && !payload.is_empty() {
                        continue;
                    }
                    let r = repr(t.clone(), payload, mode);
                    let fields: Vec<SweepField> = ALL
                        .iter()
                        .copied()
                        .filter(|f| !locate(&r, *f).is_empty())
                        .collect();
                    let p = Patcher::new(&r, &fields).unwrap();
                    let mut out = vec![0u8; p.len()];
                    for _ in 0..2000 {
                        let mut v = Variant::default();
                        for f in &fields {
                            let x = next() & f.wire_max();
                            v = v.with(*f, x);
                        }
                        p.write(&v, &mut out);
                        assert_eq!(
                            out,
                            with(&r, &v).to_bytes().unwrap().0,
                            "{:?} {mode:?} {v:?}",
                            r.transport.name()
                        );
                    }
                }
            }
        }
    }

    /// Applied in place one variant after another to one copy, as a sending loop does, each
    /// probe's repr equals the variant applied to the template: for a TCP probe without the
    /// options the sweep adds, one with them, UDP with a payload, and SCTP with two INITs.
    #[test]
    fn applied_in_place_in_sequence_equals_applied_to_the_template() {
        let sctp = Transport::Sctp(SctpRepr {
            src_port: 1000,
            dst_port: 5555,
            verification_tag: 0,
            chunks: vec![
                SctpChunk::stale_cookie_error(3),
                SctpChunk::Init(crate::fixtures::init_chunk()),
                SctpChunk::Init(crate::fixtures::init_chunk()),
            ],
        });
        let bases = [
            repr(
                Transport::Tcp(crate::fixtures::tcp_header(vec![])),
                b"",
                ChecksumMode::Correct,
            ),
            repr(
                Transport::Tcp(crate::fixtures::tcp_header(vec![
                    TcpOption::Timestamps { tsval: 5, tsecr: 6 },
                    TcpOption::Mss { value: 1440 },
                ])),
                b"x",
                ChecksumMode::Bad,
            ),
            repr(
                Transport::Udp(UdpRepr {
                    src_port: 1,
                    dst_port: 2,
                }),
                b"synergy",
                ChecksumMode::Fixed(7),
            ),
            repr(sctp, b"", ChecksumMode::Correct),
        ];
        let mut next = crate::fixtures::xorshift(0x9E37_79B9_7F4A_7C15);
        for base in bases {
            let mut scratch = base.clone();
            for _ in 0..500 {
                let mut v = Variant::default();
                for f in ALL {
                    v = v.with(f, next() & f.wire_max());
                }
                v.apply_to(&mut scratch);
                assert_eq!(scratch, v.apply(&base), "{v:?}");
            }
        }
    }

    /// A TCP option field adds its option to a probe built without it, once, with its value; a
    /// field of another protocol changes nothing.
    #[test]
    fn apply_adds_missing_options_in_their_place() {
        let base = repr(
            Transport::Tcp(crate::fixtures::tcp_header(vec![
                TcpOption::SackPermitted,
                TcpOption::Raw {
                    bytes: vec![0xfe, 2],
                },
            ])),
            b"",
            ChecksumMode::Correct,
        );
        let v = Variant::default()
            .with(SweepField::WindowScale, 7)
            .with(SweepField::TsEcr, 9)
            .with(SweepField::Mss, 1400)
            .with(SweepField::InitTag, 5);
        let got = v.apply(&v.apply(&base));
        let Transport::Tcp(t) = &got.transport else {
            unreachable!()
        };
        // Each once, with its value (their order is `TcpRepr::add_option`'s, tested there).
        let kinds = |o: &&TcpOption| !matches!(o, TcpOption::Nop);
        assert_eq!(t.options.iter().filter(kinds).count(), 5, "{:?}", t.options);
        for o in [
            TcpOption::Mss { value: 1400 },
            TcpOption::Timestamps { tsval: 0, tsecr: 9 },
            TcpOption::WindowScale { shift: 7 },
        ] {
            assert!(t.options.contains(&o), "{o:?} in {:?}", t.options);
        }
        // The patcher of the probe with its options writes what building does.
        let p = Patcher::new(&got, &[SweepField::Mss, SweepField::TsVal]).unwrap();
        let w = Variant::default()
            .with(SweepField::Mss, 536)
            .with(SweepField::TsVal, 3);
        let mut out = vec![0u8; p.len()];
        p.write(&w, &mut out);
        assert_eq!(out, w.apply(&got).to_bytes().unwrap().0);
    }
}
