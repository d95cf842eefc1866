//! The TCP header with options (RFC 9293 §3.1; window scale and timestamps RFC 7323, SACK-permitted
//! RFC 2018): flags, option encoding and `TcpRepr` to emit and parse. Pure: no I/O. The checksum is
//! filled in by `wire::probe` through `wire::checksum`.

use std::fmt;
use std::str::FromStr;

use super::{Field, WireError, get_u16, get_u32, need};

/// Byte ranges of the fixed header.
pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    /// Data offset in the high nibble; the low nibble is reserved (sent as zero).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: usize = 20;
}

pub const HEADER_LEN: usize = 20;
pub const MAX_OPTIONS_LEN: usize = 40;

/// The eight control bits of RFC 9293 §3.1, CWR down to FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
    const NAMES: [(u8, &'static str, char); 8] = [
        (Self::CWR, "CWR", 'C'),
        (Self::ECE, "ECE", 'E'),
        (Self::URG, "URG", 'U'),
        (Self::ACK, "ACK", 'A'),
        (Self::PSH, "PSH", 'P'),
        (Self::RST, "RST", 'R'),
        (Self::SYN, "SYN", 'S'),
        (Self::FIN, "FIN", 'F'),
    ];

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

impl fmt::Display for TcpFlags {
    /// Letters from FIN up to CWR, e.g. `S` for SYN and `SA` for SYN+ACK; `none` for no flag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        for (bit, _, letter) in Self::NAMES.iter().rev() {
            if self.0 & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for TcpFlags {
    type Err = String;
    /// Accepts nping's forms: names separated by commas (`SYN,ACK`), letters (`SA`), a number
    /// (`0x12`), or `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("none") || t.is_empty() {
            return Ok(TcpFlags(0));
        }
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u8::from_str_radix(hex, 16),
                None => t.parse::<u8>(),
            };
            return n
                .ok()
                .map(TcpFlags)
                .ok_or_else(|| format!("TCP flags {s:?}: a number must be 0-255"));
        }
        let mut bits = 0u8;
        if t.contains(',')
            || t.len() > 2
                && Self::NAMES
                    .iter()
                    .any(|(_, n, _)| t.eq_ignore_ascii_case(n))
        {
            for name in t.split(',') {
                let name = name.trim();
                let (bit, _, _) = Self::NAMES
                    .iter()
                    .find(|(_, n, _)| name.eq_ignore_ascii_case(n))
                    .ok_or_else(|| format!("TCP flags {s:?}: unknown flag {name:?} (use CWR,ECE,URG,ACK,PSH,RST,SYN,FIN)"))?;
                bits |= bit;
            }
        } else {
            for c in t.chars() {
                let (bit, _, _) = Self::NAMES
                    .iter()
                    .find(|(_, _, l)| c.eq_ignore_ascii_case(l))
                    .ok_or_else(|| {
                        format!("TCP flags {s:?}: unknown flag letter {c:?} (use C E U A P R S F)")
                    })?;
                bits |= bit;
            }
        }
        Ok(TcpFlags(bits))
    }
}

impl serde::Serialize for TcpFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// One TCP option (RFC 9293 §3.2 and the RFCs named on each kind).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TcpOption {
    /// Kind 0, end of option list.
    Eol,
    /// Kind 1, no-operation.
    Nop,
    /// Kind 2, maximum segment size (RFC 9293 §3.7.1).
    Mss { value: u16 },
    /// Kind 3, window scale shift (RFC 7323 §2).
    WindowScale { shift: u8 },
    /// Kind 4, SACK permitted (RFC 2018 §2).
    SackPermitted,
    /// Kind 8, timestamps (RFC 7323 §3).
    Timestamps { tsval: u32, tsecr: u32 },
    /// Bytes placed verbatim: kind, length and data as the user gave them.
    Raw {
        #[serde(serialize_with = "ser_hex")]
        bytes: Vec<u8>,
    },
}

/// As tcpdump writes options: `mss 1460`, `wscale 7`, `sackOK`, `TS val 5 ecr 6`, `nop`, `eol`,
/// and a raw option as `raw` and its bytes in hex.
impl fmt::Display for TcpOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpOption::Eol => f.write_str("eol"),
            TcpOption::Nop => f.write_str("nop"),
            TcpOption::Mss { value } => write!(f, "mss {value}"),
            TcpOption::WindowScale { shift } => write!(f, "wscale {shift}"),
            TcpOption::SackPermitted => f.write_str("sackOK"),
            TcpOption::Timestamps { tsval, tsecr } => write!(f, "TS val {tsval} ecr {tsecr}"),
            TcpOption::Raw { bytes } => write!(f, "raw {}", super::to_hex(bytes)),
        }
    }
}

fn ser_hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::to_hex(b))
}

impl TcpOption {
    pub fn len(&self) -> usize {
        match self {
            TcpOption::Eol | TcpOption::Nop => 1,
            TcpOption::Mss { .. } => 4,
            TcpOption::WindowScale { .. } => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Raw { bytes } => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn emit(&self, out: &mut [u8]) {
        match self {
            TcpOption::Eol => out[0] = 0,
            TcpOption::Nop => out[0] = 1,
            TcpOption::Mss { value } => {
                out[..2].copy_from_slice(&[2, 4]);
                out[2..4].copy_from_slice(&value.to_be_bytes());
            }
            TcpOption::WindowScale { shift } => out[..3].copy_from_slice(&[3, 3, *shift]),
            TcpOption::SackPermitted => out[..2].copy_from_slice(&[4, 2]),
            TcpOption::Timestamps { tsval, tsecr } => {
                out[..2].copy_from_slice(&[8, 10]);
                out[2..6].copy_from_slice(&tsval.to_be_bytes());
                out[6..10].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Raw { bytes } => out[..bytes.len()].copy_from_slice(bytes),
        }
    }

    /// Reads the options area leniently: known kinds become variants, anything else (or a
    /// malformed length) is kept as raw bytes to the end.
    pub fn parse_all(mut opts: &[u8]) -> Vec<TcpOption> {
        let mut out = Vec::new();
        while let Some(&kind) = opts.first() {
            let (opt, used) = match kind {
                0 => (TcpOption::Eol, 1),
                1 => (TcpOption::Nop, 1),
                _ => {
                    let len = opts.get(1).copied().map(usize::from).unwrap_or(0);
                    if len < 2 || len > opts.len() {
                        out.push(TcpOption::Raw {
                            bytes: opts.to_vec(),
                        });
                        break;
                    }
                    let body = &opts[2..len];
                    let opt = match (kind, body.len()) {
                        (2, 2) => TcpOption::Mss {
                            value: u16::from_be_bytes([body[0], body[1]]),
                        },
                        (3, 1) => TcpOption::WindowScale { shift: body[0] },
                        (4, 0) => TcpOption::SackPermitted,
                        (8, 8) => TcpOption::Timestamps {
                            tsval: get_u32(body, 0..4),
                            tsecr: get_u32(body, 4..8),
                        },
                        _ => TcpOption::Raw {
                            bytes: opts[..len].to_vec(),
                        },
                    };
                    (opt, len)
                }
            };
            out.push(opt);
            opts = &opts[used..];
        }
        out
    }
}

/// Every field of a TCP header except the checksum, which depends on the IPv6 pseudo-header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub urgent: u16,
    pub options: Vec<TcpOption>,
}

impl TcpRepr {
    /// Adds `option` unless one of its kind is there, in the place a sweep's options take:
    /// MSS, SACK permitted, timestamps, then NOP and window scale (the NOP aligns the shift
    /// count, as Linux sends it), before any option given as raw bytes. A sweepable option
    /// ([`crate::patch::SweepField`]) is added this way when the sweep names it.
    pub fn add_option(&mut self, option: TcpOption) {
        // The rank of each kind in that order; raw, NOP and the rest come after, as given.
        fn rank(o: &TcpOption) -> u8 {
            match o {
                TcpOption::Mss { .. } => 0,
                TcpOption::SackPermitted => 1,
                TcpOption::Timestamps { .. } => 2,
                TcpOption::WindowScale { .. } => 3,
                _ => 4,
            }
        }
        let kind = std::mem::discriminant(&option);
        if self
            .options
            .iter()
            .any(|o| std::mem::discriminant(o) == kind)
        {
            return;
        }
        let r = rank(&option);
        let at = self
            .options
            .iter()
            .position(|o| rank(o) > r)
            .unwrap_or(self.options.len());
        if matches!(option, TcpOption::WindowScale { .. }) {
            self.options.splice(at..at, [TcpOption::Nop, option]);
        } else {
            self.options.insert(at, option);
        }
    }

    /// Option bytes rounded up to a 32-bit boundary.
    pub fn options_len(&self) -> usize {
        super::pad4(self.options.iter().map(TcpOption::len).sum())
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// Writes the header and options at the start of `buf` with a zero checksum; options are
    /// padded with end-of-list bytes (zeros) to the data offset.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let opt_len = self.options_len();
        if opt_len > MAX_OPTIONS_LEN {
            return Err(WireError::TcpOptionsTooLong { len: opt_len });
        }
        let hlen = HEADER_LEN + opt_len;
        need("TCP header", buf, hlen)?;
        buf[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        buf[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        buf[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        buf[field::ACK].copy_from_slice(&self.ack.to_be_bytes());
        buf[field::DATA_OFFSET] = ((hlen / 4) as u8) << 4;
        buf[field::FLAGS] = self.flags.0;
        buf[field::WINDOW].copy_from_slice(&self.window.to_be_bytes());
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        buf[field::URGENT].copy_from_slice(&self.urgent.to_be_bytes());
        let opts = &mut buf[field::OPTIONS..hlen];
        opts.fill(0);
        let mut at = 0;
        for o in &self.options {
            o.emit(&mut opts[at..]);
            at += o.len();
        }
        Ok(hlen)
    }

    /// Reads a whole header, options included.
    pub fn parse(buf: &[u8]) -> Result<TcpRead, WireError> {
        Self::read(buf, false)
    }

    /// Reads a header that may be cut short inside its options, as in an ICMPv6 quote (RFC 4443
    /// §2.4 (c)): the options present are read, the fixed 20 bytes are still required.
    pub fn parse_quoted(buf: &[u8]) -> Result<TcpRead, WireError> {
        Self::read(buf, true)
    }

    fn read(buf: &[u8], cut_options: bool) -> Result<TcpRead, WireError> {
        need("TCP header", buf, HEADER_LEN)?;
        let hlen = usize::from(buf[field::DATA_OFFSET] >> 4) * 4;
        if hlen < HEADER_LEN {
            return Err(WireError::Malformed {
                what: "TCP header",
                detail: format!("data offset {hlen} is below 20"),
            });
        }
        if !cut_options {
            need("TCP options", buf, hlen)?;
        }
        let end = hlen.min(buf.len());
        Ok(TcpRead {
            repr: TcpRepr {
                src_port: get_u16(buf, field::SRC_PORT),
                dst_port: get_u16(buf, field::DST_PORT),
                seq: get_u32(buf, field::SEQ),
                ack: get_u32(buf, field::ACK),
                flags: TcpFlags(buf[field::FLAGS]),
                window: get_u16(buf, field::WINDOW),
                urgent: get_u16(buf, field::URGENT),
                options: TcpOption::parse_all(&buf[field::OPTIONS..end]),
            },
            checksum: get_u16(buf, field::CHECKSUM),
        })
    }
}

/// A TCP header as read: its fields, and the checksum field as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRead {
    pub repr: TcpRepr,
    pub checksum: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_every_form() {
        assert_eq!("SA".parse::<TcpFlags>().unwrap().0, 0x12);
        assert_eq!("syn,ack".parse::<TcpFlags>().unwrap().0, 0x12);
        assert_eq!("SYN".parse::<TcpFlags>().unwrap().0, 0x02);
        assert_eq!("0x12".parse::<TcpFlags>().unwrap().0, 0x12);
        assert_eq!("CEUAPRSF".parse::<TcpFlags>().unwrap().0, 0xFF);
        assert_eq!("none".parse::<TcpFlags>().unwrap().0, 0);
        assert!("SX".parse::<TcpFlags>().is_err());
        assert!("SYN,BOGUS".parse::<TcpFlags>().is_err());
        assert!("300".parse::<TcpFlags>().is_err());
        assert_eq!(TcpFlags(0x12).to_string(), "SA");
    }

    #[test]
    fn options_round_trip() {
        let opts = vec![
            TcpOption::Mss { value: 1440 },
            TcpOption::SackPermitted,
            TcpOption::Timestamps { tsval: 7, tsecr: 0 },
            TcpOption::Nop,
            TcpOption::WindowScale { shift: 7 },
            TcpOption::Raw {
                bytes: vec![0xfe, 4, 0xab, 0xcd],
            },
        ];
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: TcpFlags(TcpFlags::SYN),
            window: 5,
            urgent: 6,
            options: opts.clone(),
        };
        let mut buf = [0xEEu8; 60];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, 20 + 24);
        let TcpRead {
            repr: back,
            checksum: csum,
        } = TcpRepr::parse(&buf[..n]).unwrap();
        assert_eq!(csum, 0);
        assert_eq!(&back.options[..6], &opts[..]);
        assert!(back.options[6..].iter().all(|o| *o == TcpOption::Eol));
    }

    #[test]
    fn too_many_options() {
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: TcpFlags(0),
            window: 0,
            urgent: 0,
            options: vec![TcpOption::Timestamps { tsval: 0, tsecr: 0 }; 5],
        };
        assert_eq!(
            r.emit(&mut [0u8; 80]),
            Err(WireError::TcpOptionsTooLong { len: 52 })
        );
    }

    #[test]
    fn lenient_parse_of_every_truncation() {
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: TcpFlags(2),
            window: 5,
            urgent: 0,
            options: vec![
                TcpOption::Mss { value: 1460 },
                TcpOption::Timestamps { tsval: 1, tsecr: 2 },
            ],
        };
        let mut buf = [0u8; 40];
        let n = r.emit(&mut buf).unwrap();
        for cut in 0..=n {
            let got = TcpRepr::parse_quoted(&buf[..cut]);
            assert_eq!(got.is_ok(), cut >= 20, "cut {cut}");
            if let Ok(TcpRead { repr: g, .. }) = got {
                assert_eq!(g.seq, 3);
            }
            assert_eq!(
                TcpRepr::parse(&buf[..cut]).is_ok(),
                cut >= n,
                "strict cut {cut}"
            );
        }
    }

    #[test]
    fn options_read_as_tcpdump_writes_them() {
        let opts = [
            TcpOption::Mss { value: 1460 },
            TcpOption::SackPermitted,
            TcpOption::Timestamps { tsval: 5, tsecr: 6 },
            TcpOption::Nop,
            TcpOption::WindowScale { shift: 7 },
            TcpOption::Raw {
                bytes: vec![0x1e, 0x02],
            },
            TcpOption::Eol,
        ];
        let shown: Vec<String> = opts.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown.join(","),
            "mss 1460,sackOK,TS val 5 ecr 6,nop,wscale 7,raw 1e02,eol"
        );
    }

    /// Options are added in their place, whatever the order they are asked for, and each kind once.
    #[test]
    fn add_option_keeps_the_order() {
        let raw = TcpOption::Raw {
            bytes: vec![0xfd, 2],
        };
        let mut t = crate::fixtures::tcp_header(vec![TcpOption::SackPermitted, raw.clone()]);
        t.add_option(TcpOption::WindowScale { shift: 1 });
        t.add_option(TcpOption::Timestamps { tsval: 1, tsecr: 2 });
        t.add_option(TcpOption::Mss { value: 9 });
        t.add_option(TcpOption::Mss { value: 10 });
        t.add_option(TcpOption::WindowScale { shift: 2 });
        assert_eq!(
            t.options,
            vec![
                TcpOption::Mss { value: 9 },
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 2 },
                TcpOption::Nop,
                TcpOption::WindowScale { shift: 1 },
                raw,
            ]
        );
    }
}
