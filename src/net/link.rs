//! The link-layer send path: IPv6 packets handed straight to one interface with the next hop's
//! MAC address (AF_PACKET/SOCK_DGRAM, packet(7)), bypassing the kernel's IPv6 output path and the
//! queueing discipline, in sendmmsg() batches. For rates the IP path cannot reach. Does I/O.

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::raw::{Batch, RawSender};
use super::{NetError, privilege};

/// linux/if_packet.h: send without the queueing discipline.
const PACKET_QDISC_BYPASS: libc::c_int = 20;

/// An AF_PACKET socket bound to one interface, sending to one MAC address.
pub struct LinkSender {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
    pub mtu: Option<usize>,
}

impl LinkSender {
    /// Opens the socket on `iface` toward `mac` (needs CAP_NET_RAW).
    pub fn open(iface: &str, mac: [u8; 6]) -> Result<Self, NetError> {
        let ifindex = super::if_index(iface, "--link")?;
        let proto = (libc::ETH_P_IPV6 as u16).to_be();
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                privilege::missing("opening a packet socket (--link)", privilege::NET_RAW)
            } else {
                NetError::io("opening a packet socket on", iface, e)
            });
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: valid fd and an int-sized option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                4,
            );
        }
        // SAFETY: a zeroed sockaddr_ll is valid; the fields are then set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&mac);
        // SAFETY: binding to a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(NetError::io(
                "binding the packet socket to",
                iface,
                std::io::Error::last_os_error(),
            ));
        }
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
            .ok()
            .and_then(|m| m.trim().parse().ok());
        Ok(LinkSender { fd, addr, mtu })
    }

    /// Sends `batch.packet(from..batch.len)` with sendmmsg(); returns how many went.
    pub fn send_batch(&self, batch: &Batch, from: usize) -> std::io::Result<usize> {
        let mut addr = self.addr;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        super::raw::sendmmsg_batch(
            self.fd.as_raw_fd(),
            batch,
            from,
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            len,
        )
    }
}

/// The way probes leave: through the kernel's IPv6 stack (a raw socket connected to the run's
/// destination), or straight onto a link.
pub enum SendPath {
    Ip(RawSender),
    Link(LinkSender),
}

impl SendPath {
    /// Aims the path at `dst`, the destination of the packets sent next: the IP path's socket is
    /// connected to it; the link path sends to the next hop's MAC whatever the destination.
    pub fn aim(&self, dst: Ipv6Addr, scope: u32) -> Result<(), NetError> {
        match self {
            SendPath::Ip(sender) => sender.connect(dst, scope),
            SendPath::Link(_) => Ok(()),
        }
    }

    pub fn send_batch(&self, batch: &Batch, from: usize) -> std::io::Result<usize> {
        match self {
            SendPath::Ip(sender) => sender.send_connected(batch, from),
            SendPath::Link(l) => l.send_batch(batch, from),
        }
    }
}
