//! Who else has a socket on an address and port: an inet_diag dump over NETLINK_SOCK_DIAG
//! (sock_diag(7)) of one protocol, filtered by the kernel to one local port, with each socket's
//! owner uid and cookie; and whether one socket (by its cookie) still exists, by an exact lookup
//! (the keeper). The requests are built and the answers parsed by pure functions below (the
//! kernel's bytes are still checked at every step); `users_of_port` and `Link` do the I/O.

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::punch::check::PortUser;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes).
const REQ_LEN: usize = 8 + 48;
/// struct inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue,
/// uid, inode.
const MSG_LEN: usize = 4 + 48 + 20;
/// TCP states left out: TIME_WAIT (6) and NEW_SYN_RECV (12) belong to no user (uid 0 in dumps).
const TCP_STATES: u32 = !((1 << 6) | (1 << 12));

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSocket {
    pub port: u16,
    pub addr: Ipv6Addr,
    pub uid: u32,
    pub cookie: u64,
    /// The socket's state (for UDP: 7, TCP_CLOSE, when unconnected; 1, TCP_ESTABLISHED, when
    /// connected).
    pub state: u8,
}

/// INET_DIAG_REQ_BYTECODE: a filter program follows the request as a netlink attribute.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// INET_DIAG_BC_S_EQ: "local port equals", its port in the next op's `no` field.
const INET_DIAG_BC_S_EQ: u8 = 11;
/// The attribute: nlattr header (4 bytes) and two 4-byte ops.
const FILTER_LEN: usize = 4 + 8;
const REQUEST_LEN: usize = NLMSG_HDRLEN + REQ_LEN + FILTER_LEN;

/// The netlink request for a dump of every AF_INET6 socket of `protocol` on local port `port`:
/// the kernel filters by the port with a two-op inet_diag program (S_EQ; yes: jump to the end,
/// accept; no: jump past the end, reject).
pub fn request(protocol: u8, port: u16, seq: u32) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b[16] = libc::AF_INET6 as u8;
    b[17] = protocol;
    let states = if i32::from(protocol) == libc::IPPROTO_TCP {
        TCP_STATES
    } else {
        u32::MAX
    };
    b[20..24].copy_from_slice(&states.to_ne_bytes());
    let f = NLMSG_HDRLEN + REQ_LEN;
    b[f..f + 2].copy_from_slice(&(FILTER_LEN as u16).to_ne_bytes());
    b[f + 2..f + 4].copy_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    b[f + 4] = INET_DIAG_BC_S_EQ;
    b[f + 5] = 8;
    b[f + 6..f + 8].copy_from_slice(&12u16.to_ne_bytes());
    b[f + 10..f + 12].copy_from_slice(&port.to_ne_bytes());
    b
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// What one datagram of the dump held.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Sockets(Vec<DiagSocket>),
    /// NLMSG_DONE: the dump is complete.
    Done(Vec<DiagSocket>),
}

/// Parses one datagram of the kernel's answer. Malformed input is an error, never a panic.
pub fn parse(b: &[u8]) -> io::Result<Chunk> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let len = u32_ne(b, at).ok_or_else(|| bad("truncated header"))? as usize;
        let ty = u16_ne(b, at + 4).ok_or_else(|| bad("truncated header"))?;
        if len < NLMSG_HDRLEN || at + len > b.len() {
            return Err(bad("message length out of bounds"));
        }
        let body = &b[at + NLMSG_HDRLEN..at + len];
        match ty {
            NLMSG_DONE => return Ok(Chunk::Done(out)),
            NLMSG_ERROR => {
                let code = u32_ne(body, 0).ok_or_else(|| bad("truncated error"))? as i32;
                return Err(io::Error::from_raw_os_error(
                    code.checked_neg().unwrap_or(libc::EIO),
                ));
            }
            SOCK_DIAG_BY_FAMILY => {
                if body.len() < MSG_LEN {
                    return Err(bad("truncated socket message"));
                }
                // inet_diag_sockid starts at 4: sport (be16), dport, src[16], dst[16], if, cookie[2].
                let port = u16::from_be_bytes([body[4], body[5]]);
                let mut src = [0u8; 16];
                src.copy_from_slice(&body[8..24]);
                let c0 = u32_ne(body, 44).ok_or_else(|| bad("cookie"))?;
                let c1 = u32_ne(body, 48).ok_or_else(|| bad("cookie"))?;
                let uid = u32_ne(body, 4 + 48 + 12).ok_or_else(|| bad("uid"))?;
                out.push(DiagSocket {
                    port,
                    addr: Ipv6Addr::from(src),
                    uid,
                    cookie: u64::from(c0) | (u64::from(c1) << 32),
                    state: body[1],
                });
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(Chunk::Sockets(out))
}

/// A NETLINK_SOCK_DIAG socket, kept open by a caller that asks many times (the keeper), and the
/// sequence number of its next request.
pub struct Link(OwnedFd, std::sync::atomic::AtomicU32);

impl Link {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setting SO_RCVTIMEO with a valid timeval.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Link(sock, std::sync::atomic::AtomicU32::new(1)))
    }

    fn send(&self, req: &[u8]) -> io::Result<()> {
        // SAFETY: sending `req` (valid for its length) to the kernel (a zeroed sockaddr_nl).
        let sent = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.0.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
        // SAFETY: receiving into `buf`, valid for its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(&buf[..n as usize])
    }

    /// For each (local, peer, cookie): the state of the UDP socket with that cookie that takes
    /// `peer`'s datagrams to `local`, or None when it is gone (closed, connected elsewhere, or
    /// another socket now). Exact lookups in the kernel's hash table (`udp_dump_one`), not dumps:
    /// up to 64 requests in one send and their answers in one recvmmsg(), matched by sequence
    /// number. Note the kernel's orientation: for UDP it looks the socket up as a datagram's
    /// receiver, so a request's "source" is the peer and its "destination" the local address.
    pub fn udp_sockets(
        &self,
        flows: &[(std::net::SocketAddrV6, std::net::SocketAddrV6, u64)],
    ) -> Vec<io::Result<Option<u8>>> {
        let swapped: Vec<_> = flows.iter().map(|(l, p, c)| (*p, *l, *c)).collect();
        self.lookup(libc::IPPROTO_UDP as u8, &swapped)
    }

    /// The state of the TCP socket with `cookie` that the kernel finds for a segment from `peer`
    /// to `local` (an established socket of that four-tuple first, else the listener on `local`),
    /// or None when that is not the socket with this cookie (gone, or the connection is made).
    /// TCP's exact lookup (`inet_diag_find_one_icsk`) takes the request the natural way round.
    pub fn tcp_socket(
        &self,
        local: std::net::SocketAddrV6,
        peer: std::net::SocketAddrV6,
        cookie: u64,
    ) -> io::Result<Option<u8>> {
        self.lookup(libc::IPPROTO_TCP as u8, &[(local, peer, cookie)])
            .pop()
            .unwrap_or(Err(io::ErrorKind::TimedOut.into()))
    }

    /// Exact lookups of `protocol`, each (the request's source, its destination, cookie).
    fn lookup(
        &self,
        protocol: u8,
        flows: &[(std::net::SocketAddrV6, std::net::SocketAddrV6, u64)],
    ) -> Vec<io::Result<Option<u8>>> {
        const AT_ONCE: usize = 64;
        const ANSWER: usize = 1024;
        let mut out: Vec<io::Result<Option<u8>>> = Vec::with_capacity(flows.len());
        let mut bufs = vec![0u8; AT_ONCE * ANSWER];
        for chunk in flows.chunks(AT_ONCE) {
            let base = self.next_seq(chunk.len());
            let mut req = Vec::with_capacity(chunk.len() * (NLMSG_HDRLEN + REQ_LEN));
            for (i, (src, dst, cookie)) in chunk.iter().enumerate() {
                req.extend_from_slice(&exact_request(
                    protocol,
                    *src,
                    *dst,
                    *cookie,
                    base.wrapping_add(i as u32),
                ));
            }
            let mut got: Vec<Option<io::Result<Option<u8>>>> =
                (0..chunk.len()).map(|_| None).collect();
            if let Err(e) = self.send(&req) {
                out.extend(
                    chunk
                        .iter()
                        .map(|_| Err(io::Error::new(e.kind(), e.to_string()))),
                );
                continue;
            }
            let mut left = chunk.len();
            while left > 0 {
                let lens = match self.recv_many(&mut bufs, ANSWER, left) {
                    Ok(l) => l,
                    Err(e) => {
                        for g in got.iter_mut().filter(|g| g.is_none()) {
                            *g = Some(Err(io::Error::new(e.kind(), e.to_string())));
                        }
                        break;
                    }
                };
                for (k, len) in lens.into_iter().enumerate() {
                    let d = &bufs[k * ANSWER..k * ANSWER + len];
                    let Some(seq) = u32_ne(d, 8) else { continue };
                    let i = seq.wrapping_sub(base) as usize;
                    let Some(slot) = got.get_mut(i).filter(|g| g.is_none()) else {
                        // An answer to an earlier request that timed out: not this batch's.
                        continue;
                    };
                    *slot = Some(match parse(d) {
                        Ok(Chunk::Sockets(s) | Chunk::Done(s)) => Ok(s.first().map(|s| s.state)),
                        // ENOENT: no such socket; ESTALE: a socket, but with another cookie.
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOENT) | Some(libc::ESTALE)
                            ) =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    });
                    left -= 1;
                }
            }
            out.extend(
                got.into_iter()
                    .map(|g| g.unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))),
            );
        }
        out
    }

    fn next_seq(&self, n: usize) -> u32 {
        self.1
            .fetch_add(n as u32, std::sync::atomic::Ordering::Relaxed)
    }

    /// Receives up to `most` datagrams, each into its own `size`-byte slot of `bufs`, waiting
    /// (at most the socket's 1-s receive timeout) for the first; their lengths.
    fn recv_many(&self, bufs: &mut [u8], size: usize, most: usize) -> io::Result<Vec<usize>> {
        let n = most.min(bufs.len() / size);
        let mut iov: Vec<libc::iovec> = bufs
            .chunks_exact_mut(size)
            .take(n)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: size,
            })
            .collect();
        // SAFETY: zeroed mmsghdrs are valid; each then points at its own iovec, which points into
        // `bufs`, both alive across the call.
        let mut hdr: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: `hdr` holds `n` initialised headers; MSG_WAITFORONE returns after the first.
        let rc = unsafe {
            libc::recvmmsg(
                self.0.as_raw_fd(),
                hdr.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(hdr[..rc as usize]
            .iter()
            .map(|h| (h.msg_len as usize).min(size))
            .collect())
    }
}

/// The netlink request for one socket of `protocol` (not a dump): inet_diag_req_v2 with the
/// whole socket id (`src`, `dst` as the kernel's lookup wants them, and the cookie, which the
/// kernel checks: ESTALE when it differs).
pub fn exact_request(
    protocol: u8,
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    cookie: u64,
    seq: u32,
) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut b = [0u8; NLMSG_HDRLEN + REQ_LEN];
    b[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b[16] = libc::AF_INET6 as u8;
    b[17] = protocol;
    b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid at 24: sport, dport (big-endian), src[16], dst[16], if, cookie[2].
    b[24..26].copy_from_slice(&src.port().to_be_bytes());
    b[26..28].copy_from_slice(&dst.port().to_be_bytes());
    b[28..44].copy_from_slice(&src.ip().octets());
    b[44..60].copy_from_slice(&dst.ip().octets());
    b[64..68].copy_from_slice(&(cookie as u32).to_ne_bytes());
    b[68..72].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    b
}

/// Every AF_INET6 socket of `protocol` bound to local port `port`, with its address and owner.
pub fn users_of_port(protocol: u8, port: u16) -> io::Result<Vec<DiagSocket>> {
    let link = Link::open()?;
    link.send(&request(protocol, port, 1))?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut found = Vec::new();
    loop {
        let got = link.recv(&mut buf)?;
        let n = got.len();
        let (socks, done) = match parse(got)? {
            Chunk::Sockets(s) => (s, false),
            Chunk::Done(s) => (s, true),
        };
        found.extend(socks.into_iter().filter(|s| s.port == port));
        if done || n == 0 {
            return Ok(found);
        }
    }
}

/// The sockets on `port` as the check wants them.
pub fn port_users(protocol: u8, port: u16) -> io::Result<Vec<PortUser>> {
    Ok(users_of_port(protocol, port)?
        .into_iter()
        .map(|s| PortUser {
            addr: s.addr,
            uid: s.uid,
            cookie: s.cookie,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(port: u16, addr: Ipv6Addr, uid: u32, cookie: u64) -> Vec<u8> {
        let len = NLMSG_HDRLEN + MSG_LEN;
        let mut b = vec![0u8; len];
        b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let m = &mut b[NLMSG_HDRLEN..];
        m[0] = libc::AF_INET6 as u8;
        m[4..6].copy_from_slice(&port.to_be_bytes());
        m[8..24].copy_from_slice(&addr.octets());
        m[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
        m[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        m[64..68].copy_from_slice(&uid.to_ne_bytes());
        b
    }

    fn done() -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[0..4].copy_from_slice(&20u32.to_ne_bytes());
        b[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        b
    }

    #[test]
    fn request_is_a_dump_of_ipv6_sockets() {
        let r = request(libc::IPPROTO_UDP as u8, 5353, 7);
        assert_eq!(u32_ne(&r, 0), Some(84));
        assert_eq!(u16_ne(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_ne(&r, 6), Some(0x301));
        assert_eq!((r[16], r[17]), (libc::AF_INET6 as u8, 17));
        assert_eq!(u32_ne(&r, 20), Some(u32::MAX));
        let t = request(libc::IPPROTO_TCP as u8, 5353, 7);
        assert_eq!(u32_ne(&t, 20), Some(TCP_STATES));
        // The port filter: attribute header, S_EQ yes 8 no 12, then the port in host order.
        assert_eq!(u16_ne(&r, 72), Some(12));
        assert_eq!(u16_ne(&r, 74), Some(INET_DIAG_REQ_BYTECODE));
        assert_eq!(
            (r[76], r[77], u16_ne(&r, 78)),
            (INET_DIAG_BC_S_EQ, 8, Some(12))
        );
        assert_eq!(u16_ne(&r, 82), Some(5353));
    }

    #[test]
    fn exact_request_names_one_socket_and_its_cookie() {
        let src: std::net::SocketAddrV6 = "[2001:db8:2::5]:5000".parse().unwrap();
        let dst: std::net::SocketAddrV6 = "[2001:db8:1::11]:4000".parse().unwrap();
        let r = exact_request(17, src, dst, 0x0102_0304_0506_0708, 9);
        assert_eq!(u32_ne(&r, 0), Some(72));
        // A request, not a dump.
        assert_eq!(u16_ne(&r, 6), Some(NLM_F_REQUEST));
        assert_eq!((r[16], r[17]), (libc::AF_INET6 as u8, 17));
        assert_eq!(&r[24..28], &[0x13, 0x88, 0x0f, 0xa0]);
        assert_eq!(&r[28..44], &src.ip().octets());
        assert_eq!(&r[44..60], &dst.ip().octets());
        assert_eq!(u32_ne(&r, 64), Some(0x0506_0708));
        assert_eq!(u32_ne(&r, 68), Some(0x0102_0304));
    }

    /// The kernel's own answers, in this process's namespace (no privilege needed): live sockets
    /// are found by their cookie in one batch, a closed one and a wrong cookie are not, and the
    /// answers come back in the order asked (70 flows: more than one batch of 64).
    #[test]
    fn exact_lookups_find_live_sockets_by_cookie() {
        let Ok(first) = std::net::UdpSocket::bind("[::1]:0") else {
            eprintln!("no ::1 here: skipped");
            return;
        };
        let mut socks = vec![first];
        for _ in 0..69 {
            socks.push(std::net::UdpSocket::bind("[::1]:0").unwrap());
        }
        let peer: std::net::SocketAddrV6 = "[::1]:9".parse().unwrap();
        let mut asked: Vec<_> = socks
            .iter()
            .map(|s| {
                let std::net::SocketAddr::V6(local) = s.local_addr().unwrap() else {
                    unreachable!()
                };
                let cookie = socket2::SockRef::from(s).cookie().unwrap();
                (local, peer, cookie)
            })
            .collect();
        asked[3].2 ^= 1;
        drop(socks.remove(5));
        let link = Link::open().unwrap();
        let lookup = || -> Vec<_> {
            link.udp_sockets(&asked)
                .into_iter()
                .map(|r| r.unwrap())
                .collect()
        };
        // The closed socket lives on while a child that another test thread is forking holds
        // a copy of its descriptor (until its exec closes it): asked again until it is gone,
        // for at most 2 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut got = lookup();
        while got[5].is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            got = lookup();
        }
        for (i, g) in got.iter().enumerate() {
            // 7: TCP_CLOSE, an unconnected UDP socket.
            let want = if i == 3 || i == 5 { None } else { Some(7) };
            assert_eq!(*g, want, "flow {i}");
        }
    }

    #[test]
    fn parses_sockets_and_done() {
        let a: Ipv6Addr = "2001:db8:1::11".parse().unwrap();
        let mut b = message(5353, a, 0, 0x1_0000_0002);
        b.extend(message(4444, Ipv6Addr::UNSPECIFIED, 65534, 3));
        match parse(&b).unwrap() {
            Chunk::Sockets(s) => {
                assert_eq!(
                    s,
                    vec![
                        DiagSocket {
                            port: 5353,
                            addr: a,
                            uid: 0,
                            cookie: 0x1_0000_0002,
                            state: 0
                        },
                        DiagSocket {
                            port: 4444,
                            addr: Ipv6Addr::UNSPECIFIED,
                            uid: 65534,
                            cookie: 3,
                            state: 0
                        },
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        b.extend(done());
        assert!(matches!(parse(&b).unwrap(), Chunk::Done(s) if s.len() == 2));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = message(1, Ipv6Addr::LOCALHOST, 1, 1);
        for cut in 1..b.len() {
            assert!(parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut err = vec![0u8; 20];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse(&err).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
