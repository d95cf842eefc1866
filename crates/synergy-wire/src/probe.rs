//! A whole probe: the IPv6 header, one transport header and payload, and its checksum (RFC 8200
//! §8.1 for TCP and UDP, RFC 9260 §6.8 for SCTP). `ProbeRepr::emit` writes every byte. Pure: no I/O.

use std::net::Ipv6Addr;

use super::ipv6::FlowLabel;
use super::ipv6::{self, Ipv6Repr, proto};
use super::sctp::{self, SctpRepr};
use super::tcp::{self, TcpRepr};
use super::udp::{self, UdpRepr};
use super::{WireError, checksum};

/// The transport part of a probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "proto", rename_all = "lowercase")]
pub enum Transport {
    Tcp(TcpRepr),
    Udp(UdpRepr),
    Sctp(SctpRepr),
}

impl Transport {
    pub fn proto(&self) -> super::Proto {
        match self {
            Transport::Tcp(_) => super::Proto::Tcp,
            Transport::Udp(_) => super::Proto::Udp,
            Transport::Sctp(_) => super::Proto::Sctp,
        }
    }

    pub fn next_header(&self) -> u8 {
        self.proto().next_header()
    }

    pub fn name(&self) -> &'static str {
        self.proto().name()
    }

    pub fn ports(&self) -> (u16, u16) {
        match self {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp(u) => (u.src_port, u.dst_port),
            Transport::Sctp(s) => (s.src_port, s.dst_port),
        }
    }

    /// The source and destination port, to set them.
    pub fn ports_mut(&mut self) -> (&mut u16, &mut u16) {
        match self {
            Transport::Tcp(t) => (&mut t.src_port, &mut t.dst_port),
            Transport::Udp(u) => (&mut u.src_port, &mut u.dst_port),
            Transport::Sctp(s) => (&mut s.src_port, &mut s.dst_port),
        }
    }
}

/// Whether the checksum on the wire is the right one, or deliberately wrong (for conntrack
/// experiments: Linux drops or marks such packets INVALID when `nf_conntrack_checksum=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumMode {
    #[default]
    Correct,
    Bad,
    /// Exactly this value in the checksum field, read big-endian as on the wire (16 bits for
    /// TCP/UDP, 32 for SCTP: the field as Wireshark shows it, not the CRC32c value, whose bytes
    /// stand least significant first), e.g. 0 to reproduce the original SocketSynergy SYN.
    Fixed(u32),
}

impl ChecksumMode {
    /// The 16-bit TCP or UDP checksum field to store, given the one's complement checksum
    /// computed over the segment (RFC 8200 §8.1): for UDP a computed zero is sent as all ones;
    /// a bad one is the correct one made wrong; a fixed one is stored as given (the config
    /// layer has checked that it fits 16 bits). The one policy for building and patching.
    pub fn store16(self, next_header: u8, computed: u16) -> u16 {
        let correct = if next_header == proto::UDP {
            checksum::udp_wire_value(computed)
        } else {
            computed
        };
        match self {
            ChecksumMode::Correct => correct,
            ChecksumMode::Bad => checksum::corrupt16(correct),
            ChecksumMode::Fixed(v) => v as u16,
        }
    }

    /// The SCTP CRC32c value to store, given the one computed (RFC 9260 Appendix A): a fixed one
    /// is the field's bytes read big-endian, so the value they hold is `v` with its bytes swapped
    /// (the value is stored least significant byte first).
    pub fn store_crc32c(self, computed: u32) -> u32 {
        match self {
            ChecksumMode::Correct => computed,
            ChecksumMode::Bad => !computed,
            ChecksumMode::Fixed(v) => v.swap_bytes(),
        }
    }
}

/// The IPv6 header fields a user chooses; the next header follows from the transport, and the
/// payload length from the rest unless an override is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IpFields {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: FlowLabel,
    /// The payload length written in the header instead of the real one (RFC 8200 §3), for
    /// experiments with routers and firewalls that check it. The upper-layer checksum still
    /// covers the real length (RFC 8200 §8.1). Linux's IPv6 output rewrites this field of a
    /// packet sent on a raw IPPROTO_RAW socket (`__ip6_local_out`); a packet socket sends it as
    /// written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<u16>,
}

impl IpFields {
    /// Source, destination and hop limit; traffic class and flow label 0, the real payload
    /// length.
    ///
    /// ```
    /// use synergy_wire::probe::IpFields;
    /// let ip = IpFields::new("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap(), 2);
    /// assert_eq!((ip.hop_limit, ip.traffic_class, ip.payload_len), (2, 0, None));
    /// ```
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8) -> Self {
        IpFields {
            src,
            dst,
            hop_limit,
            traffic_class: 0,
            flow_label: FlowLabel::default(),
            payload_len: None,
        }
    }
}

/// The fields a probe's summary line shows: `hlim 3 tc 0x00 flow 0x00000`, and `plen N` when the
/// payload length is overridden.
impl std::fmt::Display for IpFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hlim {} tc {:#04x} flow {:#07x}",
            self.hop_limit,
            self.traffic_class,
            self.flow_label.get()
        )?;
        if let Some(len) = self.payload_len {
            write!(f, " plen {len}")?;
        }
        Ok(())
    }
}

/// Everything that makes one probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeRepr {
    pub ip: IpFields,
    #[serde(flatten)]
    pub transport: Transport,
    /// Bytes after the TCP or UDP header. SCTP carries its data in chunks instead.
    #[serde(serialize_with = "ser_hex")]
    pub payload: Vec<u8>,
    pub checksum_mode: ChecksumMode,
}

fn ser_hex<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::to_hex(b))
}

/// The checksum a built probe carries, as it stands on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireChecksum {
    /// TCP or UDP, big-endian 16 bits.
    Internet(u16),
    /// SCTP CRC32c value (stored least significant byte first, RFC 9260 Appendix A).
    Crc32c(u32),
}

impl WireChecksum {
    /// The checksum field as it stands in the packet, read as a big-endian number: what tcpdump
    /// and Wireshark show (for SCTP that is the CRC32c value with its bytes swapped).
    pub fn on_the_wire(&self) -> u32 {
        match self {
            WireChecksum::Internet(c) => u32::from(*c),
            WireChecksum::Crc32c(c) => c.swap_bytes(),
        }
    }

    /// The checksum field of `packet`, an IPv6 packet whose transport header follows the fixed
    /// header (as [`ProbeRepr::emit`] builds them), read without parsing the rest: TCP (RFC 9293
    /// §3.1), UDP (RFC 768) or SCTP (RFC 9260 §3.1). None for another next header or a packet
    /// too short to hold the field.
    ///
    /// ```
    /// use synergy_wire::probe::WireChecksum;
    /// let mut udp = [0u8; 48];
    /// udp[6] = 17; // next header: UDP
    /// udp[46..48].copy_from_slice(&[0x12, 0x34]);
    /// assert_eq!(WireChecksum::read(&udp), Some(WireChecksum::Internet(0x1234)));
    /// assert_eq!(WireChecksum::read(&udp[..47]), None);
    /// ```
    pub fn read(packet: &[u8]) -> Option<Self> {
        let at = |f: std::ops::Range<usize>| {
            packet.get(ipv6::HEADER_LEN + f.start..ipv6::HEADER_LEN + f.end)
        };
        let internet = |f| {
            at(f).and_then(|b: &[u8]| {
                Some(WireChecksum::Internet(u16::from_be_bytes(
                    b.try_into().ok()?,
                )))
            })
        };
        match *packet.get(ipv6::field::NEXT_HEADER)? {
            proto::TCP => internet(tcp::field::CHECKSUM),
            proto::UDP => internet(udp::field::CHECKSUM),
            proto::SCTP => {
                let b: [u8; 4] = at(sctp::field::CHECKSUM)?.try_into().ok()?;
                Some(WireChecksum::Crc32c(u32::from_le_bytes(b)))
            }
            _ => None,
        }
    }
}

/// The checksum field as Wireshark shows it ([`WireChecksum::on_the_wire`]).
impl std::fmt::Display for WireChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireChecksum::Internet(c) => write!(f, "{c:#06x}"),
            WireChecksum::Crc32c(_) => write!(f, "{:#010x}", self.on_the_wire()),
        }
    }
}

impl ProbeRepr {
    /// Length of the transport header plus payload (the IPv6 payload length).
    pub fn upper_len(&self) -> usize {
        match &self.transport {
            Transport::Tcp(t) => t.header_len() + self.payload.len(),
            Transport::Udp(_) => udp::HEADER_LEN + self.payload.len(),
            Transport::Sctp(s) => s.len(),
        }
    }

    /// Length of the whole packet, IPv6 header included.
    pub fn len(&self) -> usize {
        ipv6::HEADER_LEN + self.upper_len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes every byte of the probe into `buf` and returns its length and the checksum it carries.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(usize, WireChecksum), WireError> {
        let upper_len = self.upper_len();
        let payload_len =
            u16::try_from(upper_len).map_err(|_| WireError::TooLarge { len: self.len() })?;
        let total = ipv6::HEADER_LEN + upper_len;
        super::need("probe buffer", buf, total)?;
        Ipv6Repr {
            traffic_class: self.ip.traffic_class,
            flow_label: self.ip.flow_label,
            payload_len: self.ip.payload_len.unwrap_or(payload_len),
            next_header: self.transport.next_header(),
            hop_limit: self.ip.hop_limit,
            src: self.ip.src,
            dst: self.ip.dst,
        }
        .emit(buf)?;
        let seg = &mut buf[ipv6::HEADER_LEN..total];
        let csum = match &self.transport {
            Transport::Tcp(t) => {
                let h = t.emit(seg)?;
                seg[h..].copy_from_slice(&self.payload);
                let c = checksum::upper_layer(&self.ip.src, &self.ip.dst, proto::TCP, seg);
                let c = self.checksum_mode.store16(proto::TCP, c);
                seg[tcp::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
                WireChecksum::Internet(c)
            }
            Transport::Udp(u) => {
                let h = u.emit(seg, self.payload.len())?;
                seg[h..].copy_from_slice(&self.payload);
                let c = checksum::upper_layer(&self.ip.src, &self.ip.dst, proto::UDP, seg);
                let c = self.checksum_mode.store16(proto::UDP, c);
                seg[udp::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
                WireChecksum::Internet(c)
            }
            Transport::Sctp(s) => {
                s.emit(seg)?;
                let c = self.checksum_mode.store_crc32c(checksum::crc32c(seg));
                seg[sctp::field::CHECKSUM].copy_from_slice(&checksum::sctp_wire_bytes(c));
                WireChecksum::Crc32c(c)
            }
        };
        Ok((total, csum))
    }

    /// The probe as a new vector of bytes.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, WireChecksum), WireError> {
        let mut buf = vec![0u8; self.len()];
        let (n, c) = self.emit(&mut buf)?;
        buf.truncate(n);
        Ok((buf, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpOption;

    use crate::fixtures::{sctp_probe, tcp_probe, udp_probe};

    /// Emits into a buffer pre-filled with a junk byte, so that any byte the builder forgot shows.
    fn emit_junk(p: &ProbeRepr) -> Vec<u8> {
        let mut buf = vec![0xA5u8; p.len() + 16];
        let (n, _) = p.emit(&mut buf).unwrap();
        assert_eq!(n, p.len());
        assert!(buf[n..].iter().all(|b| *b == 0xA5), "wrote past the end");
        buf.truncate(n);
        buf
    }

    /// `WireChecksum::read` gives what `emit` stored, for every transport and checksum mode, and
    /// None for every packet cut short of the field (and for another next header).
    #[test]
    fn read_checksum_is_what_emit_stored() {
        let modes = [
            ChecksumMode::Correct,
            ChecksumMode::Bad,
            ChecksumMode::Fixed(0),
            ChecksumMode::Fixed(0xbeef),
        ];
        for base in [
            tcp_probe(vec![TcpOption::Nop], b"x".to_vec()),
            udp_probe(vec![]),
            sctp_probe(),
        ] {
            for mode in modes {
                let p = ProbeRepr {
                    checksum_mode: mode,
                    ..base.clone()
                };
                let mut b = vec![0u8; p.len()];
                let (_, stored) = p.emit(&mut b).unwrap();
                assert_eq!(WireChecksum::read(&b), Some(stored), "{mode:?}");
                let end = ipv6::HEADER_LEN
                    + match p.transport {
                        Transport::Tcp(_) => tcp::field::CHECKSUM.end,
                        Transport::Udp(_) => udp::field::CHECKSUM.end,
                        Transport::Sctp(_) => sctp::field::CHECKSUM.end,
                    };
                for n in 0..end {
                    assert_eq!(WireChecksum::read(&b[..n]), None, "cut to {n}");
                }
                b[ipv6::field::NEXT_HEADER] = 58;
                assert_eq!(WireChecksum::read(&b), None);
            }
        }
    }

    /// Version 6, traffic class 0x20, flow label 0x12345.
    const IP_PREFIX: [u8; 4] = [0x62, 0x01, 0x23, 0x45];
    const ADDRS: [u8; 32] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, //
        0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
    ];

    /// Golden bytes of a TCP SYN with MSS and window-scale options. The checksum value was computed
    /// independently (a Python RFC 1071 sum over the same pseudo-header and segment).
    #[test]
    fn tcp_golden() {
        let p = tcp_probe(
            vec![
                TcpOption::Mss { value: 1460 },
                TcpOption::Nop,
                TcpOption::WindowScale { shift: 7 },
            ],
            vec![],
        );
        let b = emit_junk(&p);
        let mut want = Vec::new();
        want.extend_from_slice(&IP_PREFIX);
        want.extend_from_slice(&[0, 28, 6, 3]);
        want.extend_from_slice(&ADDRS);
        #[rustfmt::skip]
        want.extend_from_slice(&[
            0x11, 0x5c, 0x15, 0xb3, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
            0x70, 0xc2, 0xfa, 0xf0, 0x00, 0x00, 0x00, 0x07,
            2, 4, 0x05, 0xb4, 1, 3, 3, 7,
        ]);
        let c = checksum::upper_layer(&p.ip.src, &p.ip.dst, 6, &want[40..]);
        want[56..58].copy_from_slice(&c.to_be_bytes());
        assert_eq!(b, want);
        assert_eq!(c, 0xf471, "independently computed checksum");
    }

    #[test]
    fn udp_golden() {
        let p = udp_probe(b"hi".to_vec());
        let b = emit_junk(&p);
        let mut want = Vec::new();
        want.extend_from_slice(&IP_PREFIX);
        want.extend_from_slice(&[0, 10, 17, 3]);
        want.extend_from_slice(&ADDRS);
        want.extend_from_slice(&[0x11, 0x5c, 0x15, 0xb3, 0, 10, 0x14, 0xd7, b'h', b'i']);
        assert_eq!(b, want);
    }

    #[test]
    fn sctp_golden() {
        let p = sctp_probe();
        let b = emit_junk(&p);
        let mut want = Vec::new();
        want.extend_from_slice(&IP_PREFIX);
        want.extend_from_slice(&[0, 40, 132, 3]);
        want.extend_from_slice(&ADDRS);
        #[rustfmt::skip]
        want.extend_from_slice(&[
            0x11, 0x5c, 0x15, 0xb3, 0, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0x1a, 0xca, 0xfe, 0xf0, 0x0d, 0, 0, 0xff, 0xff, 0, 10, 0xff, 0xff, 1, 2, 3, 4,
            0, 12, 0, 6, 0, 6, 0, 0,
        ]);
        // CRC32c over the SCTP packet with the checksum field zero, stored LSB first; the value was
        // computed independently with a bitwise Python CRC32c.
        let crc = 0xf077_84d5;
        want[48..52].copy_from_slice(&[0xd5, 0x84, 0x77, 0xf0]);
        assert_eq!(b, want);
        assert_eq!(p.to_bytes().unwrap().1, WireChecksum::Crc32c(crc));
    }

    /// An independent implementation (etherparse) parses every TCP and UDP packet built and agrees
    /// on every field and on the checksum.
    #[test]
    fn etherparse_agrees_tcp() {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let cases = [
            tcp_probe(vec![], vec![]),
            tcp_probe(vec![TcpOption::Mss { value: 1220 }], b"x".to_vec()),
            tcp_probe(
                vec![
                    TcpOption::Mss { value: 1460 },
                    TcpOption::SackPermitted,
                    TcpOption::Timestamps {
                        tsval: 0xdeadbeef,
                        tsecr: 1,
                    },
                    TcpOption::Nop,
                    TcpOption::WindowScale { shift: 14 },
                ],
                (0u8..=255).collect(),
            ),
        ];
        for p in cases {
            let (bytes, csum) = p.to_bytes().unwrap();
            let sliced = SlicedPacket::from_ip(&bytes).unwrap();
            let Some(NetSlice::Ipv6(ipv6)) = &sliced.net else {
                panic!("not IPv6")
            };
            let h = ipv6.header();
            assert_eq!(h.source_addr(), p.ip.src);
            assert_eq!(h.destination_addr(), p.ip.dst);
            assert_eq!(h.hop_limit(), 3);
            assert_eq!(h.traffic_class(), 0x20);
            assert_eq!(h.flow_label().value(), 0x12345);
            let Some(TransportSlice::Tcp(t)) = &sliced.transport else {
                panic!("not TCP")
            };
            let Transport::Tcp(r) = &p.transport else {
                unreachable!()
            };
            assert_eq!(
                (t.source_port(), t.destination_port()),
                (r.src_port, r.dst_port)
            );
            assert_eq!(
                (t.sequence_number(), t.acknowledgment_number()),
                (r.seq, r.ack)
            );
            assert!(t.syn() && t.ece() && t.cwr() && !t.ack() && !t.fin() && !t.rst());
            assert_eq!((t.window_size(), t.urgent_pointer()), (r.window, r.urgent));
            assert_eq!(t.payload(), &p.payload[..]);
            let hdr = t.to_header();
            assert_eq!(WireChecksum::Internet(t.checksum()), csum);
            assert_eq!(
                hdr.calc_checksum_ipv6(&h.to_header(), t.payload()).unwrap(),
                t.checksum()
            );
            // etherparse reads every option back as the one built, in order (the iterator stops
            // at an end-of-list; padding after the options is end-of-list bytes).
            use etherparse::TcpOptionElement as E;
            let parsed: Vec<TcpOption> = t
                .options_iterator()
                .map(|o| match o.unwrap() {
                    E::Noop => TcpOption::Nop,
                    E::MaximumSegmentSize(value) => TcpOption::Mss { value },
                    E::WindowScale(shift) => TcpOption::WindowScale { shift },
                    E::SelectiveAcknowledgementPermitted => TcpOption::SackPermitted,
                    E::Timestamp(tsval, tsecr) => TcpOption::Timestamps { tsval, tsecr },
                    other => panic!("unexpected option {other:?}"),
                })
                .collect();
            let built: Vec<TcpOption> = r
                .options
                .iter()
                .take_while(|o| !matches!(o, TcpOption::Eol))
                .cloned()
                .collect();
            assert_eq!(parsed, built);
        }
    }

    #[test]
    fn etherparse_agrees_udp() {
        use etherparse::{SlicedPacket, TransportSlice};
        for payload in [vec![], b"punch".to_vec(), vec![0xff; 1001]] {
            let p = udp_probe(payload);
            let (bytes, csum) = p.to_bytes().unwrap();
            let sliced = SlicedPacket::from_ip(&bytes).unwrap();
            let Some(TransportSlice::Udp(u)) = &sliced.transport else {
                panic!("not UDP")
            };
            assert_eq!((u.source_port(), u.destination_port()), (4444, 5555));
            assert_eq!(usize::from(u.length()), 8 + p.payload.len());
            assert_eq!(u.payload(), &p.payload[..]);
            assert_eq!(WireChecksum::Internet(u.checksum()), csum);
            let Some(etherparse::NetSlice::Ipv6(ip)) = &sliced.net else {
                panic!()
            };
            let want = u
                .to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                .unwrap();
            assert_eq!(u.checksum(), want);
        }
    }

    /// pnet_packet's checksum functions, a second independent implementation, agree as well.
    #[test]
    fn pnet_agrees_on_checksums() {
        let t = tcp_probe(vec![TcpOption::SackPermitted], b"abc".to_vec());
        let (bytes, _) = t.to_bytes().unwrap();
        let tp = pnet_packet::tcp::TcpPacket::new(&bytes[40..]).unwrap();
        assert_eq!(
            pnet_packet::tcp::ipv6_checksum(&tp, &t.ip.src, &t.ip.dst),
            tp.get_checksum()
        );
        let u = udp_probe(b"abc".to_vec());
        let (bytes, _) = u.to_bytes().unwrap();
        let up = pnet_packet::udp::UdpPacket::new(&bytes[40..]).unwrap();
        assert_eq!(
            pnet_packet::udp::ipv6_checksum(&up, &u.ip.src, &u.ip.dst),
            up.get_checksum()
        );
    }

    #[test]
    fn bad_checksum_fails_verification() {
        for mut p in [tcp_probe(vec![], vec![1]), udp_probe(vec![2])] {
            p.checksum_mode = ChecksumMode::Bad;
            let (bytes, _) = p.to_bytes().unwrap();
            let nh = p.transport.next_header();
            assert!(!checksum::upper_layer_ok(
                &p.ip.src,
                &p.ip.dst,
                nh,
                &bytes[40..]
            ));
            p.checksum_mode = ChecksumMode::Correct;
            let (bytes, _) = p.to_bytes().unwrap();
            assert!(checksum::upper_layer_ok(
                &p.ip.src,
                &p.ip.dst,
                nh,
                &bytes[40..]
            ));
        }
        let mut s = sctp_probe();
        s.checksum_mode = ChecksumMode::Bad;
        let (bad, _) = s.to_bytes().unwrap();
        let mut zeroed = bad.clone();
        zeroed[48..52].fill(0);
        assert_ne!(&bad[48..52], &crc32c::crc32c(&zeroed[40..]).to_le_bytes());
    }

    #[test]
    fn fixed_checksum_is_written_verbatim() {
        let mut p = tcp_probe(vec![], vec![]);
        p.checksum_mode = ChecksumMode::Fixed(0);
        let (b, c) = p.to_bytes().unwrap();
        assert_eq!((&b[56..58], c), (&[0u8, 0][..], WireChecksum::Internet(0)));
        let mut s = sctp_probe();
        s.checksum_mode = ChecksumMode::Fixed(0x0102_0304);
        let (b, c) = s.to_bytes().unwrap();
        // As on the wire, and shown as given.
        assert_eq!(&b[48..52], &[1, 2, 3, 4]);
        assert_eq!(c.to_string(), "0x01020304");
    }

    #[test]
    fn too_large() {
        let p = udp_probe(vec![0; 65535 - 8 + 1]);
        assert!(matches!(p.to_bytes(), Err(WireError::TooLarge { .. })));
        let p = udp_probe(vec![0; 65535 - 8]);
        assert_eq!(p.to_bytes().unwrap().0.len(), 40 + 65535);
    }

    #[test]
    fn short_buffer_is_an_error() {
        let p = sctp_probe();
        let mut buf = vec![0u8; p.len() - 1];
        assert!(p.emit(&mut buf).is_err());
    }

    /// A payload length override stands in the header as given and changes no other byte: the
    /// checksum covers the real upper-layer length (RFC 8200 §8.1).
    #[test]
    fn payload_length_override_changes_only_its_field() {
        for p in [
            tcp_probe(vec![TcpOption::Mss { value: 1460 }], b"data".to_vec()),
            udp_probe(b"data".to_vec()),
            sctp_probe(),
        ] {
            let real = emit_junk(&p);
            for len in [0u16, 1, 8, 65535] {
                let mut q = p.clone();
                q.ip.payload_len = Some(len);
                let lied = emit_junk(&q);
                assert_eq!(&lied[4..6], &len.to_be_bytes());
                assert_eq!(lied[..4], real[..4]);
                assert_eq!(lied[6..], real[6..], "{}", p.transport.name());
                assert_eq!(q.to_bytes().unwrap().1, p.to_bytes().unwrap().1);
            }
        }
    }

    /// The summary of the IPv6 fields, with the payload length only when it is overridden.
    #[test]
    fn ip_fields_summary() {
        let mut ip = crate::fixtures::ip();
        assert_eq!(ip.to_string(), "hlim 3 tc 0x20 flow 0x12345");
        ip.payload_len = Some(9);
        assert_eq!(ip.to_string(), "hlim 3 tc 0x20 flow 0x12345 plen 9");
    }
}
