//! The client side of a TCP punch (socket, bind, synergy, connect): between the probe and the
//! program's connect() (at once, or after a rendezvous with the peer), a SYN from the peer would
//! meet a bound socket that is not connecting, and the kernel would answer it with a RST that the
//! local firewall counts INVALID (and the peer's attempt would die). So a listener on the caller's
//! address and port whose socket filter drops everything swallows it, until the socket has
//! started connecting (its own SYN then crosses the peer's: RFC 9293 §3.5), or [`HOLD_LIMIT`].
//! Does I/O.

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use socket2::{SockFilter, Socket};

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Condvar, Mutex, OnceLock};

use crate::net::{NetError, tcp};

/// How long a punched client socket may stay unconnected before the swallowing ends. The hold
/// keeps the socket open (it watches it through a descriptor of its own), so a program that
/// gives up on the socket without connecting it gets the port back after this.
pub const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// A swallowing listener held for one client socket.
pub struct Hold {
    swallower: Socket,
    watched: OwnedFd,
}

impl Hold {
    /// Puts a drop-all listener on `local` beside the socket `watched` (a descriptor of the
    /// socket that will connect). It is bound and listening in repair mode (CAP_NET_ADMIN), which
    /// lets it share the port with that socket whatever its flags; the caller must have checked
    /// that the port is the caller's.
    pub fn begin(local: SocketAddrV6, watched: OwnedFd) -> Result<Hold, NetError> {
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
        Ok(Hold { swallower, watched })
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

    /// Whether the hold is over: the watched socket has left TCP_CLOSE (connect() was called) or
    /// [`HOLD_LIMIT`] has passed since `since`. The state is read with a poll() that does not
    /// wait: tcp_poll reports POLLHUP for a socket in TCP_CLOSE and takes no socket lock, which a
    /// caller sharing the socket could hold (a getsockopt such as TCP_INFO could be made to wait
    /// on it indefinitely).
    fn over(&self, since: Instant) -> bool {
        if since.elapsed() >= HOLD_LIMIT {
            return true;
        }
        let mut p = libc::pollfd {
            fd: self.watched.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: polling one valid descriptor without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        !(n == 1 && p.revents & libc::POLLHUP != 0)
    }

    /// Hands the hold to the process's one holder thread, which keeps the swallower until the
    /// hold is over and then drops it with `token` (whatever accounts for the hold). The kernel
    /// announces no change of a socket's state, so the holder reads it (`over`: one poll() on our
    /// own descriptor per hold): every 5 ms while a hold is in its first second (a program
    /// usually connects at once), else every 50 ms, and not at all when there is none.
    pub fn keep<T: Send + 'static>(self, token: T) -> Result<(), NetError> {
        let h = holder()?;
        let mut list = h.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push((self, Instant::now(), Box::new(token)));
        h.wake.notify_one();
        Ok(())
    }
}

type Held = (Hold, Instant, Box<dyn Send>);

struct Holder {
    list: Mutex<Vec<Held>>,
    wake: Condvar,
}

fn holder() -> Result<&'static Holder, NetError> {
    static HOLDER: OnceLock<Holder> = OnceLock::new();
    static STARTED: OnceLock<std::io::Result<()>> = OnceLock::new();
    let h = HOLDER.get_or_init(|| Holder {
        list: Mutex::new(Vec::new()),
        wake: Condvar::new(),
    });
    let started = STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("synergy-holds".into())
            .spawn(move || hold_loop(h))
            .map(|_| ())
    });
    match started {
        Ok(()) => Ok(h),
        Err(e) => Err(NetError::io(
            "starting the thread that holds ports",
            "holds",
            std::io::Error::new(e.kind(), e.to_string()),
        )),
    }
}

fn hold_loop(h: &'static Holder) {
    let mut list = h.list.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if list.is_empty() {
            list = h.wake.wait(list).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        // Dropping a finished hold closes its swallower and gives its token back.
        list.retain(|(hold, since, _)| !hold.over(*since));
        let young = list
            .iter()
            .any(|(_, since, _)| since.elapsed() < Duration::from_secs(1));
        let tick = Duration::from_millis(if young { 5 } else { 50 });
        list = h
            .wake
            .wait_timeout(list, tick)
            .map(|(l, _)| l)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}
