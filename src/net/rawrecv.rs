//! Raw IPv6 receive sockets: copies of arriving ICMPv6, TCP, UDP or SCTP packets addressed to one
//! local address (without the IPv6 header, as Linux delivers them on AF_INET6 raw sockets), and a
//! poll over several of them. Buffers are fixed-size; received bytes are handed on untrusted.
//! Does I/O.

use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{NetError, privilege};

/// Largest packet kept; longer ones are cut (an ICMPv6 error is at most 1280 bytes).
pub const BUF_LEN: usize = 2048;

/// One raw socket for one protocol.
pub struct RawReceiver {
    sock: Socket,
    pub proto: u8,
    local: Ipv6Addr,
}

impl RawReceiver {
    /// Opens a raw socket for `proto` bound to `local` (needs CAP_NET_RAW).
    pub fn open(proto: u8, local: Ipv6Addr, scope: u32) -> Result<Self, NetError> {
        let sock = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(proto))),
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                privilege::missing("receiving replies on a raw IPv6 socket", privilege::NET_RAW)
            } else {
                NetError::io("opening a raw receive socket", local, e)
            }
        })?;
        sock.bind(&SockAddr::from(SocketAddrV6::new(local, 0, 0, scope)))
            .map_err(|e| NetError::io("binding the raw receive socket", local, e))?;
        sock.set_nonblocking(true)
            .map_err(|e| NetError::io("setting non-blocking", local, e))?;
        // The kernel's time of arrival with each packet (socket(7), SO_TIMESTAMPNS), so that a
        // reply read late still has its own time.
        super::sockfacts::setsockopt_int(
            std::os::fd::AsFd::as_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            1,
        )
        .map_err(|e| NetError::io("asking for arrival times on", local, e))?;
        Ok(RawReceiver { sock, proto, local })
    }

    /// Lets only these ICMPv6 types through (ICMP6_FILTER, RFC 3542 §3.2).
    pub fn pass_only_icmp(&self, types: &[u8]) -> Result<(), NetError> {
        let mut filter = [u32::MAX; 8];
        for t in types {
            filter[usize::from(t >> 5)] &= !(1u32 << (t & 31));
        }
        // SAFETY: setsockopt with a valid 32-byte struct icmp6_filter.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                1, // ICMP6_FILTER
                filter.as_ptr().cast(),
                std::mem::size_of_val(&filter) as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(NetError::io(
                "filtering ICMPv6 types on",
                self.local,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Lets only TCP segments with RST set through: a socket filter on the TCP header (an IPv6
    /// raw socket's packet starts at it), byte 13 (RFC 9293 §3.1).
    pub fn pass_only_tcp_resets(&self) -> Result<(), NetError> {
        use socket2::SockFilter;
        let prog = [
            SockFilter::new(
                (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16,
                0,
                0,
                13,
            ),
            SockFilter::new(
                (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
                0,
                1,
                0x04,
            ),
            SockFilter::new((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, u32::MAX),
            SockFilter::new((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, 0),
        ];
        self.sock
            .attach_filter(&prog)
            .map_err(|e| NetError::io("filtering TCP resets on", self.local, e))
    }

    /// Lets only SCTP packets whose first chunk is an ABORT (type 6) through: a socket filter on
    /// the common header (12 bytes) and the first chunk's type (RFC 9260 §3).
    pub fn pass_only_sctp_aborts(&self) -> Result<(), NetError> {
        use socket2::SockFilter;
        let prog = [
            SockFilter::new(
                (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16,
                0,
                0,
                12,
            ),
            SockFilter::new(
                (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                0,
                1,
                6,
            ),
            SockFilter::new((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, u32::MAX),
            SockFilter::new((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, 0),
        ];
        self.sock
            .attach_filter(&prog)
            .map_err(|e| NetError::io("filtering SCTP ABORTs on", self.local, e))
    }

    /// One packet if one is waiting: its sender, length in `buf`, and when it arrived.
    fn try_recv(
        &self,
        buf: &mut [MaybeUninit<u8>; BUF_LEN],
    ) -> Result<Option<(Ipv6Addr, usize, Instant)>, NetError> {
        // SAFETY: zeroed sockaddr_in6, msghdr and control buffer are valid; the msghdr points at
        // them and at `buf` for the call, and the kernel writes at most the lengths given.
        let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: BUF_LEN,
        };
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        match usize::try_from(n) {
            Ok(n) if i32::from(from.sin6_family) == libc::AF_INET6 => {
                let at = arrival(&msg).unwrap_or_else(Instant::now);
                Ok(Some((
                    Ipv6Addr::from(from.sin6_addr.s6_addr),
                    n.min(BUF_LEN),
                    at,
                )))
            }
            Ok(_) => Ok(None),
            Err(_) => self.recv_error(std::io::Error::last_os_error()),
        }
    }

    fn recv_error(
        &self,
        e: std::io::Error,
    ) -> Result<Option<(Ipv6Addr, usize, Instant)>, NetError> {
        match e {
            e if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
            {
                Ok(None)
            }
            e => Err(NetError::io("receiving on a raw socket", self.local, e)),
        }
    }
}

/// The arrival time in a received message's SCM_TIMESTAMPNS (wall clock), as an `Instant`: now,
/// less how long ago the wall clock says it arrived.
fn arrival(msg: &libc::msghdr) -> Option<Instant> {
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled for `msg`, within
    // msg_controllen; a timestamp's data is one timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let wall = SystemTime::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(ts.tv_sec).ok()?,
                        u32::try_from(ts.tv_nsec).ok()?,
                    );
                let ago = SystemTime::now().duration_since(wall).unwrap_or_default();
                return Instant::now().checked_sub(ago);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// Several raw receivers polled together.
pub struct RawPoll {
    receivers: Vec<RawReceiver>,
    buf: Box<[MaybeUninit<u8>; BUF_LEN]>,
}

/// A packet received: which protocol's socket, from whom, and its bytes.
pub struct Packet<'a> {
    pub proto: u8,
    pub from: Ipv6Addr,
    pub bytes: &'a [u8],
    /// When the kernel received it.
    pub at: Instant,
}

impl Packet<'_> {
    /// The packet as the reply matcher reads it: an ICMPv6 message, or a transport packet to
    /// `to` (the local address it answers: a raw socket bound to :: does not say which).
    pub fn arrived(&self, to: Ipv6Addr) -> crate::reply::Arrived<'_> {
        if self.proto == crate::wire::ipv6::proto::ICMPV6 {
            crate::reply::Arrived::Icmp {
                from: self.from,
                msg: self.bytes,
            }
        } else {
            crate::reply::Arrived::Transport {
                proto: self.proto,
                from: self.from,
                to,
                bytes: self.bytes,
            }
        }
    }
}

impl RawPoll {
    pub fn new(receivers: Vec<RawReceiver>) -> Self {
        RawPoll {
            receivers,
            buf: Box::new([MaybeUninit::uninit(); BUF_LEN]),
        }
    }

    /// The next packet on any of the sockets, waiting at most until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Option<Packet<'_>>, NetError> {
        loop {
            for i in 0..self.receivers.len() {
                if let Some((from, n, at)) = self.receivers[i].try_recv(&mut self.buf)? {
                    // SAFETY: recv_from initialised the first n bytes (n <= BUF_LEN).
                    let bytes =
                        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n) };
                    return Ok(Some(Packet {
                        proto: self.receivers[i].proto,
                        from,
                        bytes,
                        at,
                    }));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut fds: Vec<libc::pollfd> = self
                .receivers
                .iter()
                .map(|r| libc::pollfd {
                    fd: r.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `fds` is a valid array of pollfd of the length given.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(NetError::io("waiting on raw sockets", "poll", e));
                }
            }
        }
    }
}
