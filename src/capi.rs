//! The C ABI of `libsynergy_craft.so`: `int synergy(int sockfd, uint8_t hoplimit,
//! struct sockaddr_in6 *peer)` with the original SocketSynergy semantics (include/synergy.h).
//! Does I/O.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::BorrowedFd;

use crate::param::HopLimit;

fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// Punches for `sockfd`'s flow with `hoplimit`. `peer` may be NULL: the peer is then the socket's
/// connected peer. Returns 0, or -1 with errno, one per kind of refusal (include/synergy.h,
/// docs/API.md): `api::SynergyError::errno`.
///
/// # Safety
/// `peer` is NULL or points to a valid `struct sockaddr_in6`; `sockfd` is open for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn synergy(
    sockfd: libc::c_int,
    hoplimit: u8,
    peer: *const libc::sockaddr_in6,
) -> libc::c_int {
    let result = std::panic::catch_unwind(|| {
        if sockfd < 0 {
            return Err(libc::EBADF);
        }
        // SAFETY: the caller keeps `sockfd` open for the duration of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(sockfd) };
        // SAFETY: the caller passes NULL or a valid sockaddr_in6.
        let peer = unsafe { peer.as_ref() }.map(|p| {
            if i32::from(p.sin6_family) != libc::AF_INET6 {
                return Err(libc::EAFNOSUPPORT);
            }
            Ok(SocketAddrV6::new(
                Ipv6Addr::from(p.sin6_addr.s6_addr),
                u16::from_be(p.sin6_port),
                0,
                p.sin6_scope_id,
            ))
        });
        let peer = peer.transpose()?;
        crate::api::synergy(&fd, HopLimit(hoplimit), peer).map_err(|e| {
            log::debug!("synergy({sockfd}): {e}");
            e.errno()
        })
    });
    match result {
        Ok(Ok(())) => 0,
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
