//! The client side of a TCP punch (socket, bind, synergy, connect): between the probe and the
//! program's connect() (at once, or after a rendezvous with the peer), a SYN from the peer would
//! meet a bound socket that is not connecting, and the kernel would answer it with a RST that the
//! local firewall counts INVALID (and the peer's attempt would die). So a listener on the caller's
//! address and port whose socket filter drops everything swallows it, until the caller's socket
//! has started connecting (its own SYN then crosses the peer's: RFC 9293 §3.5) or is gone. Does
//! I/O.

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use socket2::{SockFilter, Socket};

use crate::net::sockdiag;
use crate::net::{NetError, tcp};

/// How long a punched client socket may stay unconnected before the swallowing ends (Linux keeps
/// the probe's SYN_SENT entry for 120 s).
pub const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// TCP_CLOSE and TCP_BOUND_INACTIVE (the pseudo-state inet_diag gives a bound, idle socket).
const NOT_CONNECTING: [u8; 2] = [7, 13];

/// A swallowing listener held for one client socket.
pub struct Hold {
    swallower: Socket,
    local: SocketAddrV6,
    caller: u64,
}

impl Hold {
    /// Puts a drop-all listener on `local` beside the caller's socket (SO_COOKIE `caller`). It is
    /// bound and listening in repair mode (CAP_NET_ADMIN), which lets it share the port with the
    /// caller's bound socket whatever that socket's flags; the caller must have checked that the
    /// port is the caller's.
    pub fn begin(local: SocketAddrV6, caller: u64) -> Result<Hold, NetError> {
        let swallower = tcp::repair_listener(local)?;
        let drop_all = [SockFilter::new(
            (libc::BPF_RET | libc::BPF_K) as u16,
            0,
            0,
            0,
        )];
        swallower
            .attach_filter(&drop_all)
            .map_err(|e| NetError::io("attaching the drop-all filter", local, e))?;
        Ok(Hold {
            swallower,
            local,
            caller,
        })
    }

    /// The swallowing listener's SO_COOKIE.
    pub fn cookie(&self) -> Option<u64> {
        crate::net::sockfacts::getsockopt(
            std::os::fd::AsFd::as_fd(&self.swallower),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
        )
        .ok()
    }

    /// Keeps the swallower until the caller's socket has left its unconnected state, is gone, or
    /// [`HOLD_LIMIT`] has passed. The kernel announces none of these, so the socket's state is
    /// read from sock_diag: every 5 ms in the first second (a program usually connects at once),
    /// then every 50 ms.
    pub fn keep(self) {
        let start = Instant::now();
        while start.elapsed() < HOLD_LIMIT {
            match sockdiag::tcp_state_of(self.local.port(), self.caller) {
                Ok(Some(state)) if NOT_CONNECTING.contains(&state) => {}
                Ok(_) => break,
                Err(e) => {
                    log::warn!(
                        "reading the state of the punched socket on {}: {e}",
                        self.local
                    );
                    break;
                }
            }
            std::thread::sleep(if start.elapsed() < Duration::from_secs(1) {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(50)
            });
        }
        drop(self.swallower);
    }
}
