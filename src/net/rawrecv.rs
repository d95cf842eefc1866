//! Raw IPv6 receive sockets: copies of arriving ICMPv6, TCP, UDP or SCTP packets addressed to one
//! local address (without the IPv6 header, as Linux delivers them on AF_INET6 raw sockets), and a
//! poll over several of them. Buffers are fixed-size; received bytes are handed on untrusted.
//! Does I/O.

use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Instant;

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
        Ok(RawReceiver { sock, proto, local })
    }

    /// One packet if one is waiting: its sender and length in `buf`.
    fn try_recv(
        &self,
        buf: &mut [MaybeUninit<u8>; BUF_LEN],
    ) -> Result<Option<(Ipv6Addr, usize)>, NetError> {
        match self.sock.recv_from(buf) {
            Ok((n, from)) => Ok(from.as_socket_ipv6().map(|a| (*a.ip(), n.min(BUF_LEN)))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(NetError::io("receiving on a raw socket", self.local, e)),
        }
    }
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
                if let Some((from, n)) = self.receivers[i].try_recv(&mut self.buf)? {
                    // SAFETY: recv_from initialised the first n bytes (n <= BUF_LEN).
                    let bytes =
                        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n) };
                    return Ok(Some(Packet {
                        proto: self.receivers[i].proto,
                        from,
                        bytes,
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
