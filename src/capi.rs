//! The C ABI of `libsynergy_craft.so` (include/synergy.h): `synergy()` with the original
//! SocketSynergy semantics, `synergy_keep()`/`synergy_unkeep()`, `synergy_connect()` and
//! `synergy_accept()`, and `accept()`/`accept4()`,
//! which a program linked with the library calls instead of libc's: for a listener with punched
//! peers they return the punched connections (`api::synergy_accept`), for everything else they are
//! libc's own. Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::BorrowedFd;

use crate::param::{HopChoice, HopLimit};

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// The caller's descriptor, EBADF when negative.
///
/// # Safety
/// A non-negative `sockfd` stays open for as long as the result is used.
unsafe fn fd_arg<'a>(sockfd: libc::c_int) -> Result<BorrowedFd<'a>, i32> {
    if sockfd < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: the caller's contract above.
    Ok(unsafe { BorrowedFd::borrow_raw(sockfd) })
}

fn peer_arg(peer: *const libc::sockaddr_in6) -> Result<Option<SocketAddrV6>, i32> {
    // SAFETY: the caller passes NULL or a valid sockaddr_in6.
    let Some(p) = (unsafe { peer.as_ref() }) else {
        return Ok(None);
    };
    if i32::from(p.sin6_family) != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    Ok(Some(SocketAddrV6::new(
        Ipv6Addr::from(p.sin6_addr.s6_addr),
        u16::from_be(p.sin6_port),
        0,
        p.sin6_scope_id,
    )))
}

/// Runs `f` and turns its outcome into a C return value: `Ok(v)` is v, `Err(e)` is -1 with errno
/// e, and a panic is -1 with EIO (nothing unwinds into C).
fn c_call(f: impl FnOnce() -> Result<libc::c_int, i32>) -> libc::c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e);
            -1
        }
        Err(_) => {
            set_errno(libc::EIO);
            -1
        }
    }
}

/// The hop limit argument: `SYNERGY_HOP_AUTO` (0) asks the route memory.
fn hop_arg(hoplimit: u8) -> HopChoice {
    match hoplimit {
        crate::daemon::proto::HOP_AUTO => HopChoice::Auto,
        h => HopChoice::Fixed(HopLimit(h)),
    }
}

/// Runs one call of the API on the caller's socket and peer (`call`, named `name` in the debug
/// log) as a C call: 0, or -1 with the error's errno.
///
/// # Safety
/// As the C functions below: `peer` is NULL or valid, `sockfd` open for the call.
unsafe fn on_socket(
    name: &str,
    sockfd: libc::c_int,
    peer: *const libc::sockaddr_in6,
    call: impl FnOnce(BorrowedFd<'_>, Option<SocketAddrV6>) -> Result<(), crate::api::SynergyError>,
) -> libc::c_int {
    c_call(|| {
        // SAFETY: the caller keeps `sockfd` open for the duration of the call.
        let fd = unsafe { fd_arg(sockfd) }?;
        let peer = peer_arg(peer)?;
        call(fd, peer).map_err(|e| {
            log::debug!("{name}({sockfd}): {}", crate::with_causes(&e));
            e.errno()
        })?;
        Ok(0)
    })
}

/// Punches for `sockfd`'s flow with `hoplimit` (`SYNERGY_HOP_AUTO`: from the route memory).
/// `peer` may be NULL: the peer is then the socket's connected peer. Returns 0, or -1 with errno,
/// one per kind of refusal (include/synergy.h, docs/API.md): `api::SynergyError::errno`.
///
/// # Safety
/// `peer` is NULL or points to a valid `struct sockaddr_in6`; `sockfd` is open for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn synergy(
    sockfd: libc::c_int,
    hoplimit: u8,
    peer: *const libc::sockaddr_in6,
) -> libc::c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        on_socket("synergy", sockfd, peer, |fd, peer| {
            crate::api::synergy(&fd, hop_arg(hoplimit), peer)
        })
    }
}

/// Punches for `sockfd`'s UDP flow like `synergy()` and keeps the hole open until the socket is
/// closed or `synergy_unkeep()` (`api::synergy_keep`). Returns 0, or -1 with errno.
///
/// # Safety
/// `peer` is NULL or points to a valid `struct sockaddr_in6`; `sockfd` is open for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn synergy_keep(
    sockfd: libc::c_int,
    hoplimit: u8,
    peer: *const libc::sockaddr_in6,
) -> libc::c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        on_socket("synergy_keep", sockfd, peer, |fd, peer| {
            crate::api::synergy_keep(&fd, hop_arg(hoplimit), peer)
        })
    }
}

/// Stops keeping `sockfd`'s flow toward `peer` (NULL: its connected peer): 0, or -1 with errno
/// (ENOENT: not kept).
///
/// # Safety
/// `peer` is NULL or points to a valid `struct sockaddr_in6`; `sockfd` is open for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn synergy_unkeep(
    sockfd: libc::c_int,
    peer: *const libc::sockaddr_in6,
) -> libc::c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        on_socket("synergy_unkeep", sockfd, peer, |fd, peer| {
            crate::api::synergy_unkeep(&fd, peer)
        })
    }
}

/// The client sequence in one call: `synergy()` on the bound, unconnected TCP socket, then
/// `connect()` to `peer` (blocking, or EINPROGRESS on a non-blocking socket, as connect(2)).
/// Returns 0 or -1 with errno (synergy()'s, or connect()'s).
///
/// # Safety
/// `peer` points to a valid `struct sockaddr_in6`; `sockfd` is open for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn synergy_connect(
    sockfd: libc::c_int,
    hoplimit: u8,
    peer: *const libc::sockaddr_in6,
) -> libc::c_int {
    c_call(|| {
        // SAFETY: the caller keeps `sockfd` open for the duration of the call.
        let fd = unsafe { fd_arg(sockfd) }?;
        let peer = peer_arg(peer)?.ok_or(libc::EDESTADDRREQ)?;
        crate::api::synergy_connect(&fd, hop_arg(hoplimit), peer).map_err(|e| e.errno())?;
        Ok(0)
    })
}

/// accept4(2) that yields a punched peer's connection when one is ready on `sockfd` (after
/// `synergy()` on the listener), else libc's accept4 unchanged.
///
/// # Safety
/// As accept4(2): `addr` is NULL or valid for `*addrlen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn synergy_accept(
    sockfd: libc::c_int,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    flags: libc::c_int,
) -> libc::c_int {
    // Always through accept_swapping: a punched listener is recognised after libc's accept
    // returns, so that an accept already blocked when synergy() was called is covered too.
    c_call(|| {
        let (fd, _, ss, n) = crate::api::accept_swapping(sockfd, flags)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        // SAFETY: as accept4(2), the caller's buffer.
        unsafe { crate::api::write_addr(&ss, n, addr, addrlen) };
        Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
    })
}

/// accept4(2) for programs linked with libsynergy_craft.so: `synergy_accept`.
///
/// # Safety
/// As accept4(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    sockfd: libc::c_int,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    flags: libc::c_int,
) -> libc::c_int {
    // SAFETY: the caller's arguments, passed on.
    unsafe { synergy_accept(sockfd, addr, addrlen, flags) }
}

/// accept(2) for programs linked with libsynergy_craft.so: `synergy_accept` without flags.
///
/// # Safety
/// As accept(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(
    sockfd: libc::c_int,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> libc::c_int {
    // SAFETY: the caller's arguments, passed on.
    unsafe { synergy_accept(sockfd, addr, addrlen, 0) }
}

type Connect =
    unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int;

static NEXT_CONNECT: std::sync::OnceLock<Option<Connect>> = std::sync::OnceLock::new();

/// libc's connect (the next definition after this library's own), or None for the system call.
fn next_connect() -> Option<Connect> {
    // SAFETY: dlsym with a NUL-terminated name; the symbol, if found, is libc's connect.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"connect".as_ptr()) };
    let own = connect as *const libc::c_void;
    (!p.is_null() && !std::ptr::eq(p, own))
        // SAFETY: a non-null connect from dlsym has this signature.
        .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Connect>(p) })
}

/// Looks libc's connect and accept4 up when the library is loaded, so that neither interposer
/// calls dlsym (not async-signal-safe) later, in a signal handler or a forked child.
extern "C" fn resolve_at_load() {
    let _ = NEXT_CONNECT.set(next_connect());
    crate::api::resolve_accept4();
}

#[used]
#[unsafe(link_section = ".init_array")]
static RESOLVE_AT_LOAD: extern "C" fn() = resolve_at_load;

/// connect(2) for programs linked with libsynergy_craft.so: for a punched client socket it first
/// ends the hold on its port (`api::release_hold`), then it is libc's connect, unchanged.
///
/// # Safety
/// As connect(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(
    sockfd: libc::c_int,
    addr: *const libc::sockaddr,
    addrlen: libc::socklen_t,
) -> libc::c_int {
    if crate::api::any_hold() {
        let released = std::panic::catch_unwind(|| {
            // SAFETY: the caller keeps `sockfd` open for the call (a bad one only fails lookups).
            let fd = unsafe { BorrowedFd::borrow_raw(sockfd) };
            crate::api::release_hold(&fd)
        });
        if released.is_err() {
            set_errno(libc::EIO);
            return -1;
        }
    }
    match NEXT_CONNECT.get_or_init(next_connect) {
        // SAFETY: forwarding the caller's arguments unchanged.
        Some(f) => unsafe { f(sockfd, addr, addrlen) },
        // SAFETY: the connect system call with the caller's arguments.
        None => unsafe { libc::syscall(libc::SYS_connect, sockfd, addr, addrlen) as libc::c_int },
    }
}
