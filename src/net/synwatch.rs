//! Sees the peers' SYNs that a punched listener swallows: one raw IPv6 TCP socket per process
//! (a copy of every arriving segment, taken before TCP handles it), whose kernel filter keeps only
//! SYNs without ACK, read on one thread that hands each to the waiter registered for its
//! (local address and port, peer address and port; the local address from IPV6_PKTINFO). A waiter blocks in poll() on an eventfd. Received bytes
//! are untrusted: anything malformed is skipped. Does I/O.

use std::collections::HashMap;
use std::net::SocketAddrV6;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::{NetError, privilege};
use crate::wire::tcp::{TcpFlags, TcpRepr};

/// (local address, local port, peer address, peer port).
type Key = ([u8; 16], u16, [u8; 16], u16);

struct Waiter {
    event: OwnedFd,
    seq: Mutex<Option<u32>>,
}

#[derive(Default)]
struct Inner {
    waiters: Mutex<HashMap<Key, Arc<Waiter>>>,
}

/// The process's SYN watch.
pub struct SynWatch {
    inner: Arc<Inner>,
}

static SHARED: OnceLock<Mutex<Option<Arc<SynWatch>>>> = OnceLock::new();

/// The watch's socket, open and not yet read.
pub struct OpenWatch {
    sock: Socket,
}

impl OpenWatch {
    /// Starts the reading thread and makes this the process's watch.
    pub fn start(self) -> Result<Arc<SynWatch>, NetError> {
        let cell = SHARED.get_or_init(|| Mutex::new(None));
        let mut g = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = g.as_ref() {
            return Ok(Arc::clone(w));
        }
        let inner = Arc::new(Inner::default());
        let reader = Arc::clone(&inner);
        let sock = self.sock;
        std::thread::Builder::new()
            .name("syn-watch".into())
            .spawn(move || read_loop(sock, &reader))
            .map_err(|e| NetError::io("starting the SYN watch thread", "::", e))?;
        let w = Arc::new(SynWatch { inner });
        *g = Some(Arc::clone(&w));
        Ok(w)
    }
}

/// A registration for one peer's SYN to one local port; dropping it unregisters.
pub struct Ticket {
    key: Key,
    waiter: Arc<Waiter>,
    inner: Arc<Inner>,
}

impl Ticket {
    /// The descriptor that becomes readable when the SYN has been seen (for poll()).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.waiter.event.as_fd()
    }

    /// The sequence number of the peer's SYN, once seen.
    pub fn seen(&self) -> Option<u32> {
        *self.waiter.seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sequence number of the peer's latest SYN, if one came since the last call, and makes
    /// the ticket wait for the next.
    pub fn take_seen(&self) -> Option<u32> {
        let seq = self
            .waiter
            .seq
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes from a valid non-blocking eventfd into `v` (EAGAIN when empty).
        unsafe { libc::read(self.waiter.event.as_raw_fd(), (&raw mut v).cast(), 8) };
        seq
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut w = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.get(&self.key)
            .is_some_and(|x| Arc::ptr_eq(x, &self.waiter))
        {
            w.remove(&self.key);
        }
    }
}

/// Why a wait could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("a punch for {peer} on {local} is already waiting for its peer")]
    AlreadyWaiting {
        local: SocketAddrV6,
        peer: SocketAddrV6,
    },
    #[error("creating an eventfd")]
    Event(#[source] std::io::Error),
}

impl SynWatch {
    /// The process's watch, opened on first use (opening needs CAP_NET_RAW; later uses do not).
    pub fn shared() -> Result<Arc<SynWatch>, NetError> {
        let cell = SHARED.get_or_init(|| Mutex::new(None));
        let g = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = g.as_ref() {
            return Ok(Arc::clone(w));
        }
        drop(g);
        SynWatch::open()?.start()
    }

    /// Opens the watch's raw socket (needs CAP_NET_RAW) without starting its thread: a daemon
    /// opens it while privileged and starts it ([`OpenWatch::start`]) once it has given up its
    /// privilege, so that the thread is made with the daemon's final credentials.
    pub fn open() -> Result<OpenWatch, NetError> {
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::TCP)).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                privilege::missing(
                    "watching for the peer's SYN (raw socket)",
                    privilege::NET_RAW,
                )
            } else {
                NetError::io("opening the SYN watch", "::", e)
            }
        })?;
        // The segment starts at the TCP header: byte 13 holds the flags; keep SYN without ACK.
        let ldb = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
        let and = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
        let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let prog = [
            SockFilter::new(ldb, 0, 0, 13),
            SockFilter::new(and, 0, 0, 0x12),
            SockFilter::new(jeq, 0, 1, 0x02),
            SockFilter::new(ret, 0, 0, 128),
            SockFilter::new(ret, 0, 0, 0),
        ];
        sock.attach_filter(&prog)
            .map_err(|e| NetError::io("filtering the SYN watch", "::", e))?;
        super::sockfacts::setsockopt_int(
            std::os::fd::AsFd::as_fd(&sock),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            1,
        )
        .map_err(|e| NetError::io("asking for the destination of each SYN", "::", e))?;
        Ok(OpenWatch { sock })
    }

    /// Registers for the SYN of `peer` to `local`.
    pub fn expect(&self, local: SocketAddrV6, peer: SocketAddrV6) -> Result<Ticket, WatchError> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(WatchError::Event(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned here alone.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        let key = (
            local.ip().octets(),
            local.port(),
            peer.ip().octets(),
            peer.port(),
        );
        let waiter = Arc::new(Waiter {
            event,
            seq: Mutex::new(None),
        });
        let mut w = self.inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.contains_key(&key) {
            return Err(WatchError::AlreadyWaiting { local, peer });
        }
        w.insert(key, Arc::clone(&waiter));
        Ok(Ticket {
            key,
            waiter,
            inner: Arc::clone(&self.inner),
        })
    }
}

/// A received SYN's length, source address and destination address.
type Datagram = (usize, [u8; 16], [u8; 16]);

/// One datagram from the raw socket: its bytes (up to 128), the sender, and the destination
/// address (IPV6_PKTINFO), or None for one that cannot be read whole.
fn recv_syn(sock: &Socket, buf: &mut [u8; 128]) -> std::io::Result<Option<Datagram>> {
    // SAFETY: zeroed sockaddr_in6, msghdr and control buffer are valid starting values; the
    // kernel writes within the lengths given.
    unsafe {
        let mut from: libc::sockaddr_in6 = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&raw mut from).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut dst = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6
                && (*c).cmsg_type == libc::IPV6_PKTINFO
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize
            {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                dst = Some(info.ipi6_addr.s6_addr);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        // A segment cut at 128 bytes still has its TCP header; a cut control message has no
        // destination, and is skipped.
        Ok(dst
            .filter(|_| i32::from(from.sin6_family) == libc::AF_INET6)
            .map(|d| ((n as usize).min(buf.len()), from.sin6_addr.s6_addr, d)))
    }
}

fn read_loop(sock: Socket, inner: &Inner) {
    // Reading the open socket needs no privilege, and capabilities are per thread: this one gives
    // up what it inherited, or stops watching (fails closed: the punches that wait on it fail).
    if let Err(e) = super::privilege::drop_all() {
        log::error!(
            "the SYN watch could not give up its capabilities, so it stops: {}",
            crate::with_causes(&e)
        );
        return;
    }
    let mut buf = [0u8; 128];
    let mut last_warning = None;
    loop {
        let (n, from, to) = match recv_syn(&sock, &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ENOBUFS or ENOMEM under pressure: the watch goes on (a waiter whose SYN was
                // lost sees the peer's retransmission), said at most once a second.
                if last_warning.is_none_or(|t: std::time::Instant| t.elapsed().as_secs() >= 1) {
                    log::warn!(
                        "the SYN watch could not read a segment: {}",
                        crate::with_causes(&e)
                    );
                    last_warning = Some(std::time::Instant::now());
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        let Some(bytes) = buf.get(..n) else { continue };
        let Ok(crate::wire::tcp::TcpRead { repr: t, .. }) = TcpRepr::parse_quoted(bytes) else {
            continue;
        };
        if !t.flags.has(TcpFlags::SYN) || t.flags.has(TcpFlags::ACK) {
            continue;
        }
        let key = (to, t.dst_port, from, t.src_port);
        let waiter = inner
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(w) = waiter {
            *w.seq.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.seq);
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to a valid eventfd.
            unsafe { libc::write(w.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}
