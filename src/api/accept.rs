//! What makes a punched listener's connection come out of the program's own `accept()`: a
//! registry of listeners with punched peers (by descriptor and SO_COOKIE), and for each completed
//! connection a marker, a loopback connection from this host to the listener, that puts an entry
//! in the listener's accept queue so that `accept()`, `poll()`, `select()` and `epoll` see it as
//! they see any connection; accepting the marker yields the punched connection instead. Everything
//! else the listener accepts is passed on untouched. Does I/O.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::net::sockfacts::cookie;

/// A punched connection ready for `accept()`, and the marker that announces it.
struct Ready {
    conn: OwnedFd,
    peer: SocketAddrV6,
    /// The marker's client end; its local address is what `accept()` reports as the marker's peer.
    marker: Socket,
    marker_addr: SocketAddr,
}

#[derive(Default)]
struct Listener {
    cookie: u64,
    waiting: usize,
    ready: Vec<Ready>,
}

/// How many listeners the registry has: read without a lock on every accept, so that a program
/// without punched listeners never takes the registry's lock in accept() (which may be called in
/// a forked child or a signal handler).
static LISTENERS: AtomicUsize = AtomicUsize::new(0);

/// The registry, locked; its size is published to [`LISTENERS`] when the lock is let go.
struct Registry(MutexGuard<'static, HashMap<RawFd, Listener>>);

impl std::ops::Deref for Registry {
    type Target = HashMap<RawFd, Listener>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Registry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        LISTENERS.store(self.0.len(), Ordering::Release);
    }
}

fn registry() -> Registry {
    static REG: OnceLock<Mutex<HashMap<RawFd, Listener>>> = OnceLock::new();
    Registry(
        REG.get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    )
}

/// Notes that a connection for `listener` is on its way (a punch is waiting for its peer).
pub(crate) fn expect(listener: BorrowedFd<'_>) -> std::io::Result<()> {
    let c = cookie(listener)?;
    let mut reg = registry();
    let l = reg.entry(listener.as_raw_fd()).or_default();
    if l.cookie != c {
        // The descriptor number was reused for another socket: the old entry is stale.
        *l = Listener {
            cookie: c,
            ..Default::default()
        };
    }
    l.waiting += 1;
    Ok(())
}

/// A wait for `listener` ended: with the connection (marked for `accept()`), or without. The
/// marker's address is known (bound) and registered before it connects, and no system call is
/// made under the registry's lock but the listener's cookie.
pub(crate) fn arrived(
    listener: RawFd,
    listener_cookie: u64,
    conn: Option<(OwnedFd, SocketAddrV6)>,
) {
    // SAFETY: borrowed for getsockopt/getsockname; a closed descriptor only makes them fail.
    let lfd = unsafe { BorrowedFd::borrow_raw(listener) };
    let marker = conn.as_ref().map(|_| marker_for(lfd));
    let mut reg = registry();
    let now = cookie(lfd).ok();
    let Some(l) = reg
        .get_mut(&listener)
        .filter(|l| l.cookie == listener_cookie && now == Some(listener_cookie))
    else {
        log::info!("a punched connection came for a listener that is gone; closed");
        return;
    };
    l.waiting = l.waiting.saturating_sub(1);
    let (Some((conn, peer)), Some(marker)) = (conn, marker) else {
        return;
    };
    let (marker, marker_addr, to) = match marker {
        Ok(m) => m,
        Err(e) => {
            log::warn!("announcing the punched connection from {peer} to the listener: {e}");
            return;
        }
    };
    let m = marker.try_clone();
    l.ready.push(Ready {
        conn,
        peer,
        marker,
        marker_addr,
    });
    drop(reg);
    let started = m.and_then(|m| match m.connect(&SockAddr::from(to)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    });
    if let Err(e) = started {
        log::warn!("announcing the punched connection from {peer} to the listener: {e}");
    }
}

/// A socket bound to the listener's address (port chosen by the kernel) that will connect to the
/// listener from this host, so that it has a connection to accept; its address and the
/// listener's.
fn marker_for(listener: BorrowedFd<'_>) -> std::io::Result<(Socket, SocketAddr, SocketAddrV6)> {
    let mut to = socket2::SockRef::from(&listener)
        .local_addr()?
        .as_socket_ipv6()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    if to.ip().is_unspecified() {
        to.set_ip(Ipv6Addr::LOCALHOST);
    }
    let s = Socket::new(Domain::IPV6, Type::STREAM.cloexec(), None)?;
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(SocketAddrV6::new(
        *to.ip(),
        0,
        0,
        to.scope_id(),
    )))?;
    let at = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    Ok((s, at, to))
}

static NEXT_ACCEPT4: OnceLock<Option<Accept4>> = OnceLock::new();

/// Looks libc's accept4 up now (at load time: see `capi`), so the interposer never calls dlsym.
pub(crate) fn resolve_accept4() {
    let _ = real_accept4_lookup();
}

fn real_accept4_lookup() -> Option<Accept4> {
    *NEXT_ACCEPT4.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; the symbol, if found, is libc's accept4.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"accept4".as_ptr()) };
        // Our own accept4 must never be "next": that would recurse.
        let own = crate::capi::accept4 as *const libc::c_void;
        (!p.is_null() && !std::ptr::eq(p, own))
            // SAFETY: a non-null accept4 from dlsym has this signature.
            .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Accept4>(p) })
    })
}

type Accept4 = unsafe extern "C" fn(
    libc::c_int,
    *mut libc::sockaddr,
    *mut libc::socklen_t,
    libc::c_int,
) -> libc::c_int;

/// libc's accept4 (the next definition after this library's own), or the system call.
pub(crate) fn real_accept4(
    fd: RawFd,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    flags: libc::c_int,
) -> libc::c_int {
    match real_accept4_lookup() {
        // SAFETY: forwarding the caller's arguments unchanged.
        Some(f) => unsafe { f(fd, addr, len, flags) },
        // SAFETY: the accept4 system call with the caller's arguments.
        None => unsafe { libc::syscall(libc::SYS_accept4, fd, addr, len, flags) as libc::c_int },
    }
}

/// How many punched connections `fd` has pending: waited for (the peer's SYN not yet seen, or the
/// connection not yet made) or ready and not yet accepted.
pub(crate) fn pending(fd: RawFd) -> usize {
    registry().get(&fd).map_or(0, |l| l.waiting + l.ready.len())
}

/// `accept4()` for any descriptor: accepts with libc; when the descriptor is a registered
/// listener (checked after the accept, so that an accept that was already blocked when
/// synergy() was called is covered too) and what was accepted is the marker of a punched
/// connection, closes the marker and returns the punched connection instead (with the flags and
/// the peer's address as accept4 would give them). Anything else is returned as libc gave it,
/// with the kernel's address.
pub(crate) fn accept_swapping(
    fd: RawFd,
    flags: libc::c_int,
) -> std::io::Result<(
    OwnedFd,
    Option<SocketAddr>,
    libc::sockaddr_storage,
    libc::socklen_t,
)> {
    // SAFETY: zeroed storage is a valid out-parameter for accept4.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let got = real_accept4(fd, (&raw mut ss).cast(), &mut len, flags);
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that we now own.
    let got = unsafe { OwnedFd::from_raw_fd(got) };
    let from = ip_of(&ss, len);
    if !(from.is_some() && still_listener(fd)) {
        return Ok((got, from, ss, len));
    }
    let mut reg = registry();
    let swapped = reg.get_mut(&fd).and_then(|l| {
        let i = l.ready.iter().position(|r| Some(r.marker_addr) == from)?;
        Some(l.ready.remove(i))
    });
    if reg
        .get(&fd)
        .is_some_and(|l| l.waiting == 0 && l.ready.is_empty())
    {
        reg.remove(&fd);
    }
    drop(reg);
    let Some(r) = swapped else {
        return Ok((got, from, ss, len));
    };
    drop(got);
    drop(r.marker);
    let conn = r.conn;
    let raw = conn.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(raw, libc::F_GETFL);
        let fl = if flags & libc::SOCK_NONBLOCK != 0 {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        libc::fcntl(raw, libc::F_SETFL, fl);
        let fd_fl = if flags & libc::SOCK_CLOEXEC != 0 {
            libc::FD_CLOEXEC
        } else {
            0
        };
        libc::fcntl(raw, libc::F_SETFD, fd_fl);
    }
    let peer = SockAddr::from(r.peer);
    // SAFETY: a sockaddr_in6 fits in sockaddr_storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            peer.as_ptr().cast::<u8>(),
            (&raw mut ss).cast::<u8>(),
            peer.len() as usize,
        );
    }
    Ok((conn, Some(SocketAddr::V6(r.peer)), ss, peer.len()))
}

/// The IP address in an accepted connection's sockaddr, if it is one.
fn ip_of(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family and length checked).
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family and length checked).
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        _ => None,
    }
}

/// Writes an address into a caller's sockaddr buffer as accept(2) does (truncated to its
/// length, the full length reported).
///
/// # Safety
/// `out` is NULL or valid for `*len` bytes; `len` is NULL or valid.
pub(crate) unsafe fn write_addr(
    ss: &libc::sockaddr_storage,
    n: libc::socklen_t,
    out: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) {
    if out.is_null() || len.is_null() {
        return;
    }
    // SAFETY: the caller's buffer holds *len bytes; we copy at most that many from `ss`.
    unsafe {
        let k = (*len as usize).min(n as usize);
        std::ptr::copy_nonoverlapping(
            (ss as *const libc::sockaddr_storage).cast::<u8>(),
            out.cast::<u8>(),
            k,
        );
        *len = n;
    }
}

/// Whether `fd` is a registered listener and still the one that was registered (its
/// SO_COOKIE, read only for a registered descriptor: every accept of the program comes here); a
/// stale entry (the number reused for another socket) is removed.
pub(crate) fn still_listener(fd: RawFd) -> bool {
    if LISTENERS.load(Ordering::Acquire) == 0 || !registry().contains_key(&fd) {
        return false;
    }
    // SAFETY: borrowed for one getsockopt call.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let Ok(c) = cookie(b) else { return false };
    let mut reg = registry();
    match reg.get(&fd) {
        Some(l) if l.cookie == c => true,
        Some(_) => {
            reg.remove(&fd);
            false
        }
        None => false,
    }
}
