//! Validated newtypes for the numbers and addresses a probe is made of (hop limit, port, flow
//! label, SCTP initiate tag, IPv6 host). Each is checked once, when parsed; pure, no I/O.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU16, NonZeroU32};
use std::str::FromStr;

use thiserror::Error;

/// Why a value given by the user was refused. Each message names the value and the rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("hop limit {0:?}: must be a whole number from 0 to 255")]
    HopLimit(String),
    #[error("port {0:?}: must be a whole number from 1 to 65535")]
    Port(String),
    #[error("initiate tag {0:?}: must be a 32-bit number other than 0 (RFC 9260 §3.3.2)")]
    InitTag(String),
    #[error(
        "{0} is an IPv4 address: synergy-craft needs IPv6, because hole punching by hop limit \
         assumes transparent end-to-end addressing, which NAT in IPv4 breaks"
    )]
    Ipv4(Ipv4Addr),
    #[error("{0:?} is not an IPv6 address (write it as e.g. 2001:db8::1 or fe80::1%eth0)")]
    NotIpv6(String),
    #[error("{0}: a link-local or link-scoped multicast address needs a zone, e.g. {0}%eth0")]
    NoScope(Ipv6Addr),
    #[error("HOP_LIMIT {0:?}: a whole number from 1 to 255, or auto (trace the path first)")]
    HopChoice(String),
    #[error("{what} {text:?}: give a value, a range A-B or a list, each from {min} to {max}")]
    Sweep {
        what: &'static str,
        text: String,
        min: u64,
        max: u64,
    },
    #[error("prefix {0:?}: write an IPv6 prefix such as 2001:db8:1::/48")]
    Prefix(String),
    #[error("{what} {text:?}: not a number")]
    Number { what: &'static str, text: String },
}

/// Parses a decimal or `0x` hexadecimal unsigned number.
pub(crate) fn parse_u64(what: &'static str, text: &str) -> Result<u64, ParamError> {
    let t = text.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| ParamError::Number {
        what,
        text: text.to_string(),
    })
}

/// The IPv6 hop limit (RFC 8200 §3): 0-255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct HopLimit(pub u8);

impl FromStr for HopLimit {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u8>()
            .map(HopLimit)
            .map_err(|_| ParamError::HopLimit(s.to_string()))
    }
}

/// A hop limit given as a number, or `auto`: found by tracing the path first.
///
/// ```
/// use synergy_craft::param::{HopChoice, HopLimit};
/// assert_eq!("3".parse::<HopChoice>().unwrap(), HopChoice::Fixed(HopLimit(3)));
/// assert_eq!("auto".parse::<HopChoice>().unwrap(), HopChoice::Auto);
/// assert!("0".parse::<HopChoice>().is_err()); // a punch that expires at once crosses nothing
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopChoice {
    Fixed(HopLimit),
    Auto,
}

/// A number given is a fixed hop limit (`synergy(&sock, HopLimit(2), peer)`).
impl From<HopLimit> for HopChoice {
    fn from(h: HopLimit) -> Self {
        HopChoice::Fixed(h)
    }
}

impl FromStr for HopChoice {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(HopChoice::Auto);
        }
        match s.parse::<HopLimit>() {
            Ok(h) if h.0 > 0 => Ok(HopChoice::Fixed(h)),
            _ => Err(ParamError::HopChoice(s.to_string())),
        }
    }
}

/// A transport port that a flow can use: 1-65535 (0 is not a port a peer can reach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Port(NonZeroU16);

impl Port {
    pub fn new(p: u16) -> Option<Self> {
        NonZeroU16::new(p).map(Port)
    }
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl FromStr for Port {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u16>()
            .ok()
            .and_then(Port::new)
            .ok_or_else(|| ParamError::Port(s.to_string()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

pub use crate::wire::ipv6::FlowLabel;

/// A duration as people write it (`1m 30s`, `500ms`), for messages.
pub(crate) fn show_duration(d: std::time::Duration) -> String {
    // Whole microseconds: nanosecond noise from float seconds would only clutter the message.
    humantime::format_duration(std::time::Duration::from_micros(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
    ))
    .to_string()
}

/// A MAC address written as six hex pairs separated by colons (aa:bb:cc:dd:ee:ff).
pub(crate) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    <[u8; 6]>::try_from(parts).ok()
}

/// An SCTP INIT initiate tag: any 32-bit value but zero (RFC 9260 §3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct InitTag(NonZeroU32);

impl InitTag {
    pub fn new(v: u32) -> Option<Self> {
        NonZeroU32::new(v).map(InitTag)
    }
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl FromStr for InitTag {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_u64("initiate tag", s)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .and_then(InitTag::new)
            .ok_or_else(|| ParamError::InitTag(s.to_string()))
    }
}

/// An IPv6 host as the user wrote it: the address and, for link-local addresses, the zone
/// (`fe80::1%eth0` or `fe80::1%3`). The zone name is resolved to an index where it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub addr: Ipv6Addr,
    pub zone: Option<String>,
}

impl Host {
    /// Whether the address is only meaningful together with a zone (fe80::/10, RFC 4291 §2.5.6).
    /// Link-local unicast (fe80::/10) and interface- or link-local multicast (ff01::/16,
    /// ff02::/16, RFC 4291 §2.7) mean nothing without the interface.
    pub fn needs_zone(&self) -> bool {
        self.addr.is_unicast_link_local()
            || (self.addr.is_multicast() && matches!(self.addr.segments()[0] & 0x000f, 1 | 2))
    }
}

impl FromStr for Host {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        let (addr_text, zone) = match bare.split_once('%') {
            Some((a, z)) if !z.is_empty() => (a, Some(z.to_string())),
            Some((a, _)) => (a, None),
            None => (bare, None),
        };
        if let Ok(v4) = addr_text.parse::<Ipv4Addr>() {
            return Err(ParamError::Ipv4(v4));
        }
        let addr: Ipv6Addr = addr_text
            .parse()
            .map_err(|_| ParamError::NotIpv6(s.to_string()))?;
        if let Some(v4) = addr.to_ipv4_mapped() {
            return Err(ParamError::Ipv4(v4));
        }
        let host = Host { addr, zone };
        if host.needs_zone() && host.zone.is_none() {
            return Err(ParamError::NoScope(addr));
        }
        Ok(host)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.zone {
            Some(z) => write!(f, "{}%{}", self.addr, z),
            None => write!(f, "{}", self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_its_values_in_the_order_written() {
        let s = Sweep::parse("--dport", "1-3,7", 1, 65535).unwrap();
        assert_eq!(
            (0..s.len()).map(|i| s.get(i)).collect::<Vec<_>>(),
            [1, 2, 3, 7]
        );
        assert!(Sweep::parse("--dport", "0-3", 1, 65535).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:ff"),
            Some([2, 0, 0x5e, 0x10, 0, 0xff])
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("zz:00:5e:10:00:ff"), None);
    }

    #[test]
    fn hop_limit_bounds() {
        assert_eq!("0".parse::<HopLimit>(), Ok(HopLimit(0)));
        assert_eq!("255".parse::<HopLimit>(), Ok(HopLimit(255)));
        assert!("256".parse::<HopLimit>().is_err());
        assert!("-1".parse::<HopLimit>().is_err());
    }

    #[test]
    fn port_bounds() {
        assert!("0".parse::<Port>().is_err());
        assert!("65536".parse::<Port>().is_err());
        assert_eq!("65535".parse::<Port>().map(Port::get), Ok(65535));
    }

    #[test]
    fn init_tag_nonzero() {
        assert!("0".parse::<InitTag>().is_err());
        assert_eq!(
            "0xdeadbeef".parse::<InitTag>().map(InitTag::get),
            Ok(0xDEADBEEF)
        );
    }

    #[test]
    fn hosts() {
        assert!(matches!(
            "192.0.2.1".parse::<Host>(),
            Err(ParamError::Ipv4(_))
        ));
        assert!(matches!(
            "::ffff:192.0.2.1".parse::<Host>(),
            Err(ParamError::Ipv4(_))
        ));
        assert!(matches!(
            "fe80::1".parse::<Host>(),
            Err(ParamError::NoScope(_))
        ));
        let h: Host = "fe80::1%eth0".parse().unwrap();
        assert_eq!(h.zone.as_deref(), Some("eth0"));
        let h: Host = "[2001:db8::1]".parse().unwrap();
        assert_eq!(h.to_string(), "2001:db8::1");
        assert!(matches!(
            "nonsense".parse::<Host>(),
            Err(ParamError::NotIpv6(_))
        ));
    }
}

/// An IPv6 prefix such as 2001:db8:1::/48 (the local site, for `hops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl Prefix {
    /// The prefix of `len` bits that contains `addr`.
    pub fn of(addr: Ipv6Addr, len: u8) -> Self {
        let len = len.min(128);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        Prefix {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            len,
        }
    }

    pub fn contains(&self, a: Ipv6Addr) -> bool {
        Prefix::of(a, self.len).addr == self.addr
    }

    /// The local site to assume for a flow from `src` to `peer` when none is given: the /56 of
    /// `src` (what RFC 6177 §3 and most ISPs give a residential site; a /60 or /64 site sits
    /// inside it), made longer until it leaves `peer` out, because two customers of one ISP often
    /// share a /48 or less and the peer's firewall must never count as local.
    ///
    /// ```
    /// use synergy_craft::param::Prefix;
    /// let a = "2001:db8:1:100::11".parse().unwrap();
    /// let b = "2001:db8:1:180::5".parse().unwrap();
    /// assert_eq!(Prefix::default_site(a, b).to_string(), "2001:db8:1:100::/57");
    /// ```
    pub fn default_site(src: Ipv6Addr, peer: Ipv6Addr) -> Self {
        let common = (u128::from(src) ^ u128::from(peer)).leading_zeros();
        let len = u8::try_from(common.saturating_add(1).clamp(56, 128)).unwrap_or(128);
        Prefix::of(src, len)
    }
}

impl FromStr for Prefix {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParamError::Prefix(s.to_string());
        let (a, l) = s.trim().split_once('/').ok_or_else(bad)?;
        let len: u8 = l.parse().ok().filter(|l| *l <= 128).ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        Ok(Prefix::of(addr, len))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn the_default_site_never_holds_the_peer() {
        let a: Ipv6Addr = "2001:db8:1::11".parse().unwrap();
        let site = |p: &str| Prefix::default_site(a, p.parse().unwrap()).to_string();
        assert_eq!(site("2001:db8:2::5"), "2001:db8:1::/56");
        // Both sites /56s of one /48: the peer's /56 is outside.
        assert_eq!(site("2001:db8:1:200::5"), "2001:db8:1::/56");
        // A /60 neighbour in the same /56: the site shrinks to leave it out.
        assert_eq!(site("2001:db8:1:10::5"), "2001:db8:1::/60");
        assert_eq!(site("2001:db8:1::12"), "2001:db8:1::10/127");
        assert_eq!(site("2001:db8:1::11"), "2001:db8:1::11/128");
        for peer in [
            "2001:db8:2::5",
            "2001:db8:1:200::5",
            "2001:db8:1:10::5",
            "2001:db8:1::12",
        ] {
            let p: Ipv6Addr = peer.parse().unwrap();
            let s = Prefix::default_site(a, p);
            assert!(s.contains(a) && !s.contains(p), "{peer}: {s}");
        }
    }

    #[test]
    fn prefixes() {
        let p: Prefix = "2001:db8:1::11/48".parse().unwrap();
        assert_eq!(p.to_string(), "2001:db8:1::/48");
        assert!(p.contains("2001:db8:1:ff::1".parse().unwrap()));
        assert!(!p.contains("2001:db8:100::2".parse().unwrap()));
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        assert!("2001:db8::".parse::<Prefix>().is_err());
        assert!(Prefix::of(Ipv6Addr::LOCALHOST, 0).contains("2001:db8::1".parse().unwrap()));
    }
}

/// A numeric field given as one value, a range or a list (`40000-40999`, `80,443,5555`, `1-3,7`):
/// the values in the order written, not materialised. Checked against the field's bounds once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sweep {
    segments: Vec<(u64, u64)>,
    len: u64,
}

impl Sweep {
    /// Parses `text` for a field whose values lie in `min..=max`.
    pub fn parse(what: &'static str, text: &str, min: u64, max: u64) -> Result<Self, ParamError> {
        let bad = || ParamError::Sweep {
            what,
            text: text.to_string(),
            min,
            max,
        };
        let mut segments = Vec::new();
        let mut len = 0u64;
        for part in text.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (
                    parse_u64(what, a).map_err(|_| bad())?,
                    parse_u64(what, b).map_err(|_| bad())?,
                ),
                None => {
                    let v = parse_u64(what, part).map_err(|_| bad())?;
                    (v, v)
                }
            };
            if a > b || a < min || b > max {
                return Err(bad());
            }
            len = len.checked_add(b - a + 1).ok_or_else(bad)?;
            segments.push((a, b));
        }
        Ok(Sweep { segments, len })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn first(&self) -> u64 {
        self.segments[0].0
    }

    /// The `i`-th value (`i < len`).
    pub fn get(&self, mut i: u64) -> u64 {
        for (a, b) in &self.segments {
            let n = b - a + 1;
            if i < n {
                return a + i;
            }
            i -= n;
        }
        self.segments.last().map_or(0, |s| s.1)
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn sweeps() {
        let s = Sweep::parse("port", "80,443,40000-40002", 1, 65535).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            (0..5).map(|i| s.get(i)).collect::<Vec<_>>(),
            vec![80, 443, 40000, 40001, 40002]
        );
        assert!(Sweep::parse("port", "0-3", 1, 65535).is_err());
        assert!(Sweep::parse("port", "9-3", 1, 65535).is_err());
        assert!(Sweep::parse("hop limit", "1-256", 0, 255).is_err());
        assert!(Sweep::parse("port", "x", 1, 65535).is_err());
        assert_eq!(
            Sweep::parse("seq", "0-4294967295", 0, u64::from(u32::MAX))
                .unwrap()
                .len(),
            1 << 32
        );
    }
}
