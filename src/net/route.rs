//! Asks the kernel about the route toward a destination; does I/O, in two ways. `lookup` learns
//! the source address and path MTU by connecting an unprivileged UDP socket (nothing is sent);
//! `route_key` learns which route is used (outgoing interface, next hop or on-link prefix) with
//! RTM_GETROUTE over NETLINK_ROUTE (rtnetlink(7), RFC 3549), its request built and its answer
//! parsed by pure functions below that check the kernel's bytes at every step.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::NetError;

/// What the routing table says about a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub src: Ipv6Addr,
    /// The path MTU the kernel holds for the destination (the link MTU when nothing smaller is known).
    pub mtu: Option<usize>,
}

/// Looks up the route toward `dst` (with interface `scope` for link-local destinations).
pub fn lookup(dst: Ipv6Addr, port: u16, scope: u32) -> Result<RouteInfo, NetError> {
    lookup_on(dst, port, scope, None)
}

/// Looks up the route toward `dst` that leaves through the interface `device` (SO_BINDTODEVICE,
/// as the raw socket of `-e/--interface` is bound), or through any when None.
pub fn lookup_on(
    dst: Ipv6Addr,
    port: u16,
    scope: u32,
    device: Option<&str>,
) -> Result<RouteInfo, NetError> {
    let sock = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
        .map_err(|e| NetError::io("opening a UDP socket for the route lookup", dst, e))?;
    if let Some(name) = device {
        super::if_index(name, "--interface")?;
        socket2::SockRef::from(&sock)
            .bind_device(Some(name.as_bytes()))
            .map_err(|e| NetError::io("binding the route lookup to interface", name, e))?;
    }
    sock.connect(SocketAddrV6::new(dst, port, 0, scope))
        .map_err(|e| match device {
            Some(name) => NetError::io(
                "looking up the route",
                format!("{dst} on interface {name}"),
                e,
            ),
            None => NetError::io("looking up the route", dst, e),
        })?;
    let src = match sock.local_addr() {
        Ok(std::net::SocketAddr::V6(a)) => *a.ip(),
        Ok(other) => {
            return Err(NetError::io(
                "looking up the source address",
                dst,
                std::io::Error::other(format!("kernel chose {other}")),
            ));
        }
        Err(e) => return Err(NetError::io("looking up the source address", dst, e)),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, and `mtu`/`len` point to an int-sized buffer and its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let mtu = (rc == 0 && mtu > 0).then_some(mtu as usize);
    Ok(RouteInfo { src, mtu })
}

/// The route the kernel picks toward a destination: the key under which learnt hop limits are
/// remembered. Written as `ip route` writes routes (`via GATEWAY dev NAME`, `PREFIX/LEN dev NAME`)
/// and read back from exactly that by `FromStr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKey {
    /// A route through a router: the outgoing interface's name and the next hop (RTA_OIF and
    /// RTA_GATEWAY of the kernel's answer; for a multipath route, the one path it picks).
    Via { dev: String, gateway: Ipv6Addr },
    /// A route without a next hop (on-link, or local): the prefix of the routing-table entry that
    /// matched (RTA_DST and rtm_dst_len asked with RTM_F_FIB_MATCH; host bits clear) and the
    /// outgoing interface.
    OnLink {
        dev: String,
        prefix: Ipv6Addr,
        len: u8,
    },
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Via { dev, gateway } => write!(f, "via {gateway} dev {dev}"),
            RouteKey::OnLink { dev, prefix, len } => write!(f, "{prefix}/{len} dev {dev}"),
        }
    }
}

/// Why a text is not a [`RouteKey`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "route {text:?}: {why} (write it as `via 2001:db8::1 dev eth0` or `2001:db8::/64 dev eth0`)"
)]
pub struct RouteKeyError {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for RouteKey {
    type Err = RouteKeyError;

    /// Reads what `Display` writes: single spaces between the words, no others. The addresses
    /// may be spelt in any form `Ipv6Addr` reads; the length is a plain decimal number; the
    /// interface name follows the kernel's rule (`dev_valid_name`: 1-15 bytes, not `.` or `..`,
    /// no `/`, `:`, NUL or ASCII white space).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| RouteKeyError {
            text: s.to_string(),
            why,
        };
        let words: Vec<&str> = s.split(' ').collect();
        match words.as_slice() {
            ["via", gateway, "dev", dev] => Ok(RouteKey::Via {
                gateway: gateway
                    .parse()
                    .map_err(|_| bad("the gateway is not an IPv6 address"))?,
                dev: dev_name(dev).map_err(bad)?.to_string(),
            }),
            ["via", ..] => Err(bad("expected `via GATEWAY dev NAME`")),
            [prefix, "dev", dev] => {
                let (addr, len) = prefix
                    .split_once('/')
                    .ok_or_else(|| bad("the prefix has no /LEN"))?;
                let addr: Ipv6Addr = addr
                    .parse()
                    .map_err(|_| bad("the prefix is not an IPv6 address"))?;
                let len = len
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= 128 && l.to_string() == len)
                    .ok_or_else(|| bad("the prefix length is not a number from 0 to 128"))?;
                if masked(addr, len) != addr {
                    return Err(bad("the prefix has bits set past its length"));
                }
                Ok(RouteKey::OnLink {
                    dev: dev_name(dev).map_err(bad)?.to_string(),
                    prefix: addr,
                    len,
                })
            }
            _ => Err(bad(
                "expected `via GATEWAY dev NAME` or `PREFIX/LEN dev NAME`",
            )),
        }
    }
}

/// `name` if the kernel would accept it as an interface name (net/core/dev.c, dev_valid_name).
fn dev_name(name: &str) -> Result<&str, &'static str> {
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE {
        return Err("an interface name has 1 to 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("an interface name is not . or ..");
    }
    if name.bytes().any(|c| {
        matches!(
            c,
            b'/' | b':' | 0 | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'
        )
    }) {
        return Err("an interface name has no /, :, NUL or white space");
    }
    Ok(name)
}

/// `addr` with the bits past the first `len` cleared.
fn masked(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(len)))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(addr) & mask)
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
const RTMSG_LEN: usize = 12;
/// rtm_flags: answer with the routing-table entry that matched, not the route made from it for
/// this one destination (Linux 4.13; older kernels ignore it and answer with the /128).
const RTM_F_FIB_MATCH: u32 = 0x2000;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
/// nla_type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// How long the kernel may take to answer one request.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// What is asked of RTM_GETROUTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The route the kernel makes for this one destination (`ip -6 route get DST`): the
    /// destination as a /128, the outgoing interface and next hop actually used (for a multipath
    /// route, the path that the destination hashes to).
    Used,
    /// The routing-table entry that matched (`ip -6 route get DST fibmatch`, RTM_F_FIB_MATCH):
    /// its prefix and length, and its own next hops (an RTA_MULTIPATH, not parsed here, when
    /// there are several).
    FibMatch,
}

/// The RTM_GETROUTE request (rtnetlink(7), RFC 3549 §3.1.1) for one AF_INET6 destination, not a
/// dump: a struct rtmsg with rtm_dst_len 128, then RTA_DST, then RTA_OIF when `scope` (the zone of
/// a link-local destination) is not 0. Integers are in host byte order, as netlink wants.
pub fn request(dst: Ipv6Addr, scope: u32, ask: Ask, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + RTMSG_LEN + 20 + if scope == 0 { 0 } else { 8 };
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    b.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills in ours
    b.extend_from_slice(&[libc::AF_INET6 as u8, 128, 0, 0, 0, 0, 0, 0]);
    let flags = match ask {
        Ask::Used => 0,
        Ask::FibMatch => RTM_F_FIB_MATCH,
    };
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&20u16.to_ne_bytes());
    b.extend_from_slice(&RTA_DST.to_ne_bytes());
    b.extend_from_slice(&dst.octets());
    if scope != 0 {
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&RTA_OIF.to_ne_bytes());
        b.extend_from_slice(&scope.to_ne_bytes());
    }
    b
}

/// What an RTM_NEWROUTE answer says (the attributes this module uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteAnswer {
    /// RTA_DST with the bits past `dst_len` cleared (`::` for a default route, which has none).
    pub dst: Ipv6Addr,
    /// rtm_dst_len: 128 for [`Ask::Used`], the entry's length for [`Ask::FibMatch`].
    pub dst_len: u8,
    /// RTA_OIF: the outgoing interface's index (none in a multipath entry).
    pub oif: Option<u32>,
    /// RTA_GATEWAY: the next hop, when the route goes through a router.
    pub gateway: Option<Ipv6Addr>,
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {what}"))
}

/// Parses the kernel's answer to the request numbered `seq`: an RTM_NEWROUTE, or an NLMSG_ERROR
/// whose errno becomes the error (ENETUNREACH when no route matches; EINVAL, EACCES or
/// EHOSTUNREACH for a blackhole, prohibit or unreachable route). Malformed input is an error of
/// kind InvalidData, never a panic.
pub fn parse(b: &[u8], seq: u32) -> io::Result<RouteAnswer> {
    let len = u32_ne(b, 0).ok_or_else(|| bad("truncated header"))? as usize;
    let ty = u16_ne(b, 4).ok_or_else(|| bad("truncated header"))?;
    let got_seq = u32_ne(b, 8).ok_or_else(|| bad("truncated header"))?;
    if len < NLMSG_HDRLEN || len > b.len() {
        return Err(bad("message length out of bounds"));
    }
    if got_seq != seq {
        return Err(bad("an answer to another request"));
    }
    let body = b
        .get(NLMSG_HDRLEN..len)
        .ok_or_else(|| bad("truncated message"))?;
    match ty {
        NLMSG_ERROR => {
            let code = u32_ne(body, 0).ok_or_else(|| bad("truncated error"))? as i32;
            match code.checked_neg() {
                Some(errno) if errno > 0 => Err(io::Error::from_raw_os_error(errno)),
                _ => Err(bad(
                    "an acknowledgement or bad error code instead of a route",
                )),
            }
        }
        RTM_NEWROUTE => parse_route(body),
        _ => Err(bad("an answer that is neither a route nor an error")),
    }
}

/// The struct rtmsg and attributes of an RTM_NEWROUTE.
fn parse_route(body: &[u8]) -> io::Result<RouteAnswer> {
    let head = body
        .get(..RTMSG_LEN)
        .ok_or_else(|| bad("truncated struct rtmsg"))?;
    let &[family, dst_len, ..] = head else {
        return Err(bad("truncated struct rtmsg"));
    };
    if i32::from(family) != libc::AF_INET6 {
        return Err(bad("a route that is not AF_INET6"));
    }
    if dst_len > 128 {
        return Err(bad("a destination prefix longer than 128 bits"));
    }
    let mut dst = None;
    let mut oif = None;
    let mut gateway = None;
    let mut at = RTMSG_LEN;
    while at < body.len() {
        let len = u16_ne(body, at).ok_or_else(|| bad("truncated attribute"))? as usize;
        let ty = u16_ne(body, at + 2).ok_or_else(|| bad("truncated attribute"))? & NLA_TYPE_MASK;
        // None also when `len` is under the 4 bytes of the header (the range runs backwards).
        let value = body
            .get(at + 4..at + len)
            .ok_or_else(|| bad("attribute length out of bounds"))?;
        let addr = || {
            <[u8; 16]>::try_from(value)
                .map(Ipv6Addr::from)
                .map_err(|_| bad("an address attribute that is not 16 bytes"))
        };
        match ty {
            RTA_DST => dst = Some(addr()?),
            RTA_GATEWAY => gateway = Some(addr()?),
            RTA_OIF => {
                let i = <[u8; 4]>::try_from(value)
                    .map_err(|_| bad("an RTA_OIF that is not 4 bytes"))?;
                oif = Some(u32::from_ne_bytes(i));
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    let dst = match (dst, dst_len) {
        (Some(d), _) => masked(d, dst_len),
        (None, 0) => Ipv6Addr::UNSPECIFIED,
        (None, _) => return Err(bad("a route with a prefix length but no RTA_DST")),
    };
    Ok(RouteAnswer {
        dst,
        dst_len,
        oif,
        gateway,
    })
}

/// The key of the route in `used` (the answer to [`Ask::Used`]): `Via` when it has a next hop;
/// otherwise `OnLink` with the prefix of the entry that matched, asked only then (`fib_match`, the
/// answer to [`Ask::FibMatch`]). `name` turns an interface index into its name.
fn key_of(
    used: RouteAnswer,
    fib_match: impl FnOnce() -> io::Result<RouteAnswer>,
    name: impl FnOnce(u32) -> io::Result<String>,
) -> io::Result<RouteKey> {
    let oif = used
        .oif
        .ok_or_else(|| bad("a route without an outgoing interface"))?;
    Ok(match used.gateway {
        Some(gateway) => RouteKey::Via {
            dev: name(oif)?,
            gateway,
        },
        None => {
            let entry = fib_match()?;
            RouteKey::OnLink {
                dev: name(oif)?,
                prefix: entry.dst,
                len: entry.dst_len,
            }
        }
    })
}

/// The name of interface `index` (if_indextoname(3)).
fn if_name(index: u32) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    name.to_str()
        .map(str::to_string)
        .map_err(|_| bad("an interface name that is not UTF-8"))
}

/// Sends `req` over `sock` and parses the answer numbered `seq`.
fn ask(sock: &socket2::Socket, req: &[u8], seq: u32) -> io::Result<RouteAnswer> {
    use std::io::Read;
    // Unconnected and without an address, a netlink socket sends to the kernel.
    sock.send(req)?;
    // The kernel builds its answer in NLMSG_GOODSIZE (at most 8 KiB) and fails with EMSGSIZE
    // past it; an answer cut short here would fail the length check in `parse`.
    let mut buf = [0u8; 8192];
    loop {
        match (&*sock).read(&mut buf) {
            Ok(n) => return parse(buf.get(..n).unwrap_or_default(), seq),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the kernel did not answer within 1 s",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The route the kernel uses toward `dst` (with interface `scope` for a link-local destination,
/// 0 for none), as `ip -6 route get` finds it: one RTM_GETROUTE over NETLINK_ROUTE (rtnetlink(7),
/// RFC 3549), and a second with RTM_F_FIB_MATCH for the prefix of an on-link route (a kernel
/// older than 4.13 ignores the flag: the prefix is then the destination's /128). Needs no
/// privilege. Errors name the destination; no route is the kernel's ENETUNREACH.
pub fn route_key(dst: Ipv6Addr, scope: u32) -> Result<RouteKey, NetError> {
    let at = if scope == 0 {
        dst.to_string()
    } else {
        format!("{dst}%{scope}")
    };
    let sock = socket2::Socket::new(
        socket2::Domain::from(libc::AF_NETLINK),
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::NETLINK_ROUTE)),
    )
    .and_then(|s| s.set_read_timeout(Some(ANSWER_WITHIN)).map(|()| s))
    .map_err(|e| {
        NetError::io(
            "opening a NETLINK_ROUTE socket for the route lookup",
            &at,
            e,
        )
    })?;
    let used = ask(&sock, &request(dst, scope, Ask::Used, 1), 1)
        .map_err(|e| NetError::io("looking up the route (RTM_GETROUTE)", &at, e))?;
    key_of(
        used,
        || ask(&sock, &request(dst, scope, Ask::FibMatch, 2), 2),
        if_name,
    )
    .map_err(|e| NetError::io("looking up the route's prefix or interface", &at, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Answers of Linux 6.18 captured in an `unshare -rn` namespace: a veth pair v0 (index 3) and
    // v1 (index 2), `ip -6 addr add 2001:db8:1::11/64 dev v0`, `ip -6 route add 2001:db8:2::/48
    // via 2001:db8:1::1 dev v0`, `ip -6 route add 2001:db8:3::/48 nexthop via 2001:db8:1::1 dev
    // v0 nexthop via fe80::2 dev v1`, each the answer to `request(dst, 0, ask, 1)`. Netlink is in
    // host byte order: these are little-endian. One line per part: nlmsghdr, rtmsg, then each
    // attribute (its type in the comment).

    /// 2001:db8:2::5, Ask::Used: via 2001:db8:1::1 dev v0.
    const GW_USED: &str = concat!(
        "b0000000 18000000 01000000 ad230000 ",
        "0a808000 fe030001 00000000 ",
        "08000f00 fe000000 ",                            // RTA_TABLE
        "14000100 20010db8 00020000 00000000 00000005 ", // RTA_DST
        "14000200 00000000 00000000 00000000 00000000 ", // RTA_SRC
        "14000700 20010db8 00010000 00000000 00000011 ", // RTA_PREFSRC
        "08000600 00040000 ",                            // RTA_PRIORITY
        "14000500 20010db8 00010000 00000000 00000001 ", // RTA_GATEWAY
        "08000400 03000000 ",                            // RTA_OIF
        "24000c00 02000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 ",
        "05001400 00000000", // RTA_PREF, padded
    );
    /// 2001:db8:2::5, Ask::FibMatch: the /48 entry.
    const GW_FIB: &str = concat!(
        "88000000 18000000 01000000 ad230000 ",
        "0a300000 fe030001 00000000 ",
        "08000f00 fe000000 ",
        "14000100 20010db8 00020000 00000000 00000000 ",
        "08000600 00040000 ",
        "14000500 20010db8 00010000 00000000 00000001 ",
        "08000400 03000000 ",
        "24000c00 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 ",
        "05001400 00000000",
    );
    /// 2001:db8:1::5, Ask::Used: dev v0, no gateway, the destination as a /128.
    const ONLINK_USED: &str = concat!(
        "9c000000 18000000 01000000 ad230000 ",
        "0a808000 fe020001 00000000 ",
        "08000f00 fe000000 ",
        "14000100 20010db8 00010000 00000000 00000005 ",
        "14000200 00000000 00000000 00000000 00000000 ",
        "14000700 20010db8 00010000 00000000 00000011 ",
        "08000600 00010000 ",
        "08000400 03000000 ",
        "24000c00 02000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 ",
        "05001400 00000000",
    );
    /// 2001:db8:1::5, Ask::FibMatch: the on-link /64.
    const ONLINK_FIB: &str = concat!(
        "74000000 18000000 01000000 ad230000 ",
        "0a400000 fe020001 00000000 ",
        "08000f00 fe000000 ",
        "14000100 20010db8 00010000 00000000 00000000 ",
        "08000600 00010000 ",
        "08000400 03000000 ",
        "24000c00 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 ",
        "05001400 00000000",
    );
    /// 2001:db8:3::1, Ask::FibMatch: the multipath /48, RTA_MULTIPATH (9) and no RTA_OIF.
    const MULTIPATH_FIB: &str = concat!(
        "a8000000 18000000 01000000 ad230000 ",
        "0a300000 fe030001 00000000 ",
        "08000f00 fe000000 ",
        "14000100 20010db8 00030000 00000000 00000000 ",
        "08000600 00040000 ",
        "3c000900 1c000000 03000000 14000500 20010db8 00010000 00000000 00000001 ",
        "1c000000 02000000 14000500 fe800000 00000000 00000000 00000002 ",
        "24000c00 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 ",
        "05001400 00000000",
    );
    /// 2001:db8:9::1 (no route), Ask::Used: NLMSG_ERROR -101 (ENETUNREACH) and the request.
    const UNREACHABLE: &str = concat!(
        "44000000 02000000 01000000 ad230000 ",
        "9bffffff ",
        "30000000 1a000100 01000000 00000000 0a800000 00000000 00000000 ",
        "14000100 20010db8 00090000 00000000 00000001",
    );

    fn bytes(hex: &str) -> Vec<u8> {
        crate::wire::from_hex(hex).unwrap()
    }

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn v0(index: u32) -> io::Result<String> {
        assert_eq!(index, 3);
        Ok("v0".into())
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn request_golden_bytes() {
        assert_eq!(
            request(a("2001:db8:2::5"), 0, Ask::Used, 1),
            bytes(concat!(
                "30000000 1a000100 01000000 00000000 ", // len 48, RTM_GETROUTE, NLM_F_REQUEST, seq 1
                "0a800000 00000000 00000000 ",          // AF_INET6, dst_len 128, rtm_flags 0
                "14000100 20010db8 00020000 00000000 00000005", // RTA_DST
            ))
        );
        assert_eq!(
            request(a("fe80::1"), 3, Ask::FibMatch, 2),
            bytes(concat!(
                "38000000 1a000100 02000000 00000000 ",
                "0a800000 00000000 00200000 ", // rtm_flags RTM_F_FIB_MATCH
                "14000100 fe800000 00000000 00000000 00000001 ",
                "08000400 03000000", // RTA_OIF 3
            ))
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_the_kernels_answers() {
        let gw = a("2001:db8:1::1");
        let used = parse(&bytes(GW_USED), 1).unwrap();
        assert_eq!(
            used,
            RouteAnswer {
                dst: a("2001:db8:2::5"),
                dst_len: 128,
                oif: Some(3),
                gateway: Some(gw),
            }
        );
        let fib = parse(&bytes(GW_FIB), 1).unwrap();
        assert_eq!((fib.dst, fib.dst_len), (a("2001:db8:2::"), 48));
        // A route with a next hop needs no second question.
        let no_fib = || -> io::Result<RouteAnswer> { panic!("asked for the entry") };
        assert_eq!(
            key_of(used, no_fib, v0).unwrap(),
            RouteKey::Via {
                dev: "v0".into(),
                gateway: gw
            }
        );

        let used = parse(&bytes(ONLINK_USED), 1).unwrap();
        assert_eq!((used.dst_len, used.oif, used.gateway), (128, Some(3), None));
        let key = key_of(used, || parse(&bytes(ONLINK_FIB), 1), v0).unwrap();
        assert_eq!(key.to_string(), "2001:db8:1::/64 dev v0");

        let multipath = parse(&bytes(MULTIPATH_FIB), 1).unwrap();
        assert_eq!(
            multipath,
            RouteAnswer {
                dst: a("2001:db8:3::"),
                dst_len: 48,
                oif: None,
                gateway: None,
            }
        );
        let e = parse(&bytes(UNREACHABLE), 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for hex in [
            GW_USED,
            GW_FIB,
            ONLINK_USED,
            ONLINK_FIB,
            MULTIPATH_FIB,
            UNREACHABLE,
        ] {
            let b = bytes(hex);
            for cut in 0..b.len() {
                assert!(parse(&b[..cut], 1).is_err(), "cut at {cut}");
                // Cut short with a header that agrees: an error when the cut splits the rtmsg
                // or an attribute, never a panic.
                let mut short = b[..cut].to_vec();
                if let Some(len) = short.get_mut(0..4) {
                    len.copy_from_slice(&(cut as u32).to_ne_bytes());
                }
                let r = parse(&short, 1);
                if cut < NLMSG_HDRLEN + RTMSG_LEN {
                    assert!(r.is_err(), "cut at {cut}");
                }
            }
            // Any one byte changed: never a panic.
            for at in 0..b.len() {
                for v in [0, 1, 3, 0x7f, 0x80, 0xff] {
                    let mut c = b.clone();
                    c[at] = v;
                    let _ = parse(&c, 1);
                }
            }
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn refuses_what_is_not_this_answer() {
        assert!(parse(&bytes(GW_USED), 2).is_err(), "another request's");
        let mut b = bytes(GW_USED);
        b[16] = libc::AF_INET as u8;
        assert!(parse(&b, 1).is_err());
        let mut b = bytes(GW_USED);
        b[17] = 129;
        assert!(parse(&b, 1).is_err());
        // An attribute running past the message.
        let mut b = bytes(ONLINK_FIB);
        b[28] = 0xff;
        assert!(parse(&b, 1).is_err());
        // An RTA_OIF of 3 bytes, an RTA_DST of 8.
        let mut b = bytes(ONLINK_FIB);
        b[64] = 7;
        assert!(parse(&b, 1).is_err());
        let mut b = bytes(ONLINK_FIB);
        b[36] = 12;
        assert!(parse(&b, 1).is_err());
        // An acknowledgement (error 0) is not a route.
        let mut b = bytes(UNREACHABLE);
        b[16..20].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(parse(&b, 1).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A route without an interface has no key.
        let used = parse(&bytes(MULTIPATH_FIB), 1).unwrap();
        assert!(key_of(used, || parse(&bytes(ONLINK_FIB), 1), v0).is_err());
    }

    #[test]
    fn default_route_has_no_rta_dst() {
        let mut b = vec![0u8; NLMSG_HDRLEN + RTMSG_LEN + 8];
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        b[16] = libc::AF_INET6 as u8;
        b[28..30].copy_from_slice(&8u16.to_ne_bytes());
        b[30..32].copy_from_slice(&RTA_OIF.to_ne_bytes());
        b[32..36].copy_from_slice(&5u32.to_ne_bytes());
        let r = parse(&b, 0).unwrap();
        assert_eq!(
            (r.dst, r.dst_len, r.oif),
            (Ipv6Addr::UNSPECIFIED, 0, Some(5))
        );
        b[17] = 64;
        assert!(parse(&b, 0).is_err(), "a /64 without RTA_DST");
    }

    #[test]
    fn display_and_from_str() {
        let via = RouteKey::Via {
            dev: "eth0".into(),
            gateway: a("fe80::1"),
        };
        assert_eq!(via.to_string(), "via fe80::1 dev eth0");
        let on_link = RouteKey::OnLink {
            dev: "wlan0".into(),
            prefix: a("2001:db8:1::"),
            len: 64,
        };
        assert_eq!(on_link.to_string(), "2001:db8:1::/64 dev wlan0");
        let default = RouteKey::OnLink {
            dev: "ppp0".into(),
            prefix: Ipv6Addr::UNSPECIFIED,
            len: 0,
        };
        for k in [via, on_link, default] {
            assert_eq!(k.to_string().parse::<RouteKey>(), Ok(k));
        }
        for bad in [
            "",
            "via",
            "via fe80::1",
            "via fe80::1 dev",
            "via fe80::1 dev eth0 extra",
            "via  fe80::1 dev eth0",
            " via fe80::1 dev eth0",
            "via fe80::1 dev eth0 ",
            "via fe80::1%eth0 dev eth0",
            "via 192.0.2.1 dev eth0",
            "via fe80::1 on eth0",
            "2001:db8::/64",
            "2001:db8:: dev eth0",
            "2001:db8::/129 dev eth0",
            "2001:db8::/064 dev eth0",
            "2001:db8::/+64 dev eth0",
            "2001:db8::/ dev eth0",
            "2001:db8::1/64 dev eth0",
            "2001:db8::/64 dev ",
            "2001:db8::/64 dev a-name-of-16-byt",
            "2001:db8::/64 dev eth0:1",
            "2001:db8::/64 dev eth/0",
            "2001:db8::/64 dev eth\t0",
            "2001:db8::/64 dev .",
            "2001:db8::/64 dev ..",
            "2001:db8::/64 via eth0",
        ] {
            let e = bad.parse::<RouteKey>().unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains("write it as"), "{e}");
        }
        assert!(
            "2001:db8::/64 dev a-name-of-15-by"
                .parse::<RouteKey>()
                .is_ok()
        );
        assert_eq!(
            "2001:db8::1/64 dev eth0"
                .parse::<RouteKey>()
                .unwrap_err()
                .why,
            "the prefix has bits set past its length"
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(
            via: bool,
            addr: u128,
            len in 0u8..=128,
            dev in "[a-zA-Z0-9_.@-]{1,15}",
        ) {
            prop_assume!(dev != "." && dev != "..");
            let key = if via {
                RouteKey::Via { dev, gateway: Ipv6Addr::from(addr) }
            } else {
                RouteKey::OnLink { dev, prefix: masked(Ipv6Addr::from(addr), len), len }
            };
            prop_assert_eq!(key.to_string().parse::<RouteKey>(), Ok(key));
        }
    }

    #[test]
    fn masks() {
        let x = a("2001:db8:ffff:ffff::1");
        assert_eq!(masked(x, 0), Ipv6Addr::UNSPECIFIED);
        assert_eq!(masked(x, 36), a("2001:db8:f000::"));
        assert_eq!(masked(x, 128), x);
    }

    /// `route_key` against the kernel: this test binary runs this test again inside `unshare -rn`
    /// (a new user and network namespace; no privilege needed) after making two tun devices and
    /// routes with `ip`. A tun device that no program has opened has no carrier, so nothing is
    /// sent, yet its routes are looked up as any others. Skipped, with a note, where unprivileged
    /// user namespaces, /dev/net/tun or `ip` are not available.
    #[test]
    fn route_key_in_a_namespace() {
        const INSIDE: &str = "SYNERGY_CRAFT_ROUTE_TEST_INSIDE";
        if std::env::var_os(INSIDE).is_some() {
            return inside_the_namespace();
        }
        let setup = "ip link set lo up && ip tuntap add t0 mode tun && ip tuntap add t1 mode tun \
            && ip link set t0 up && ip link set t1 up \
            && ip -6 addr add 2001:db8:1::11/64 dev t0 nodad \
            && ip -6 route add 2001:db8:2::/48 via 2001:db8:1::1 dev t0 \
            && ip -6 route add fe80::/64 dev t1 \
            && ip -6 route add 2001:db8:3::/48 nexthop via 2001:db8:1::1 dev t0 \
               nexthop via fe80::2 dev t1 \
            || exit 77; \
            exec \"$0\" --exact net::route::tests::route_key_in_a_namespace --nocapture";
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .args(["-rn", "sh", "-c", setup])
            .arg(exe)
            .env(INSIDE, "1")
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => return eprintln!("route_key_in_a_namespace skipped: unshare: {e}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => assert!(text.contains("1 passed"), "{text}"),
            // 101: the test failed inside (Rust's exit code for a panic in the harness).
            Some(101) | None => panic!("inside the namespace:\n{text}"),
            Some(_) => eprintln!("route_key_in_a_namespace skipped (no namespace set up):\n{text}"),
        }
    }

    fn inside_the_namespace() {
        let t1 = crate::net::if_index("t1", "test").unwrap();
        let key = |d: &str, scope| route_key(a(d), scope).map(|k| k.to_string());
        assert_eq!(key("2001:db8:2::5", 0).unwrap(), "via 2001:db8:1::1 dev t0");
        assert_eq!(key("2001:db8:1::5", 0).unwrap(), "2001:db8:1::/64 dev t0");
        assert_eq!(key("fe80::1", t1).unwrap(), "fe80::/64 dev t1");
        // A local address leaves through lo; its entry is its own /128.
        assert_eq!(
            key("2001:db8:1::11", 0).unwrap(),
            "2001:db8:1::11/128 dev lo"
        );
        // Multipath: the one path the destination hashes to.
        let mp = key("2001:db8:3::1", 0).unwrap();
        assert!(
            ["via 2001:db8:1::1 dev t0", "via fe80::2 dev t1"].contains(&mp.as_str()),
            "{mp}"
        );
        let e = route_key(a("2001:db8:9::1"), 0).unwrap_err();
        assert_eq!(e.errno(), libc::ENETUNREACH);
        assert!(e.to_string().contains("2001:db8:9::1"), "{e}");
        let e = route_key(a("fe80::1"), 999).unwrap_err();
        assert!(e.to_string().contains("fe80::1%999"), "{e}");
    }
}
