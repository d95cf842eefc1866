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

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};

use crate::net::{NetError, hung_up, tcp};

/// How long a punched client socket may stay unconnected before the swallowing ends. The hold
/// keeps the socket open (it watches it through a descriptor of its own), so a program that
/// gives up on the socket without connecting it gets the port back after this.
pub const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// The swallowing listener of a hold, shared with whoever may end the hold at once.
pub type Swallower = Arc<Mutex<Option<Socket>>>;

/// A swallowing listener held for one client socket.
pub struct Hold {
    swallower: Swallower,
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
        Ok(Hold {
            swallower: Arc::new(Mutex::new(Some(swallower))),
            watched,
        })
    }

    /// The swallowing listener's SO_COOKIE.
    pub fn cookie(&self) -> Option<u64> {
        let s = self.swallower.lock().unwrap_or_else(|e| e.into_inner());
        s.as_ref()
            .and_then(|s| crate::net::sockfacts::cookie(s.as_fd()).ok())
    }

    /// The swallower, for a process that ends the hold itself the moment it connects (dropping
    /// what the handle holds closes it; the holder then finds nothing left to close).
    pub fn swallower(&self) -> Swallower {
        Arc::clone(&self.swallower)
    }

    /// Whether the hold is over: [`HOLD_LIMIT`] has passed since `since`, the watched socket has
    /// left TCP_CLOSE (connect() was called), or `release` has hung up (the program's connect()
    /// is about to start: a refused connect can come back and leave TCP_CLOSE again before any
    /// poll sees it, and the program's retry must find the port free). The states are read with
    /// poll()s that do not wait: tcp_poll reports POLLHUP for a socket in TCP_CLOSE and takes no
    /// socket lock, which a caller sharing the socket could hold (a getsockopt such as TCP_INFO
    /// could be made to wait on it indefinitely).
    fn over(&self, release: Option<&OwnedFd>, since: Instant) -> bool {
        if since.elapsed() >= HOLD_LIMIT {
            return true;
        }
        !hung_up(self.watched.as_fd()) || release.is_some_and(|r| hung_up(r.as_fd()))
    }

    /// Hands the hold to the process's one holder thread, which keeps the swallower until the
    /// hold is over (`over`) and then drops it with `release` and `token` (whatever accounts for
    /// the hold). The holder waits in poll() on every hold's `release` (a descriptor whose other
    /// end the program's side closes when it connects), so a release ends its hold at once; the
    /// socket's own state, which the kernel announces to nobody, it reads every 5 ms while a hold
    /// is in its first second, else every 50 ms, and not at all when there is none.
    pub fn keep<T: Send + 'static>(
        self,
        release: Option<OwnedFd>,
        token: T,
    ) -> Result<(), NetError> {
        let h = holder()?;
        h.list.lock().unwrap_or_else(|e| e.into_inner()).push((
            self,
            release,
            Instant::now(),
            Box::new(token),
        ));
        h.wake();
        Ok(())
    }
}

impl Drop for Hold {
    /// The swallower closes when the hold ends, whoever else still has its handle.
    fn drop(&mut self) {
        drop(
            self.swallower
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

type Held = (Hold, Option<OwnedFd>, Instant, Box<dyn Send>);

struct Holder {
    list: Mutex<Vec<Held>>,
    /// An eventfd that wakes the holder for a new hold.
    event: OwnedFd,
}

impl Holder {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to a valid eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

fn holder() -> Result<&'static Holder, NetError> {
    static HOLDER: OnceLock<std::io::Result<Holder>> = OnceLock::new();
    let made = HOLDER.get_or_init(|| {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Holder {
            list: Mutex::new(Vec::new()),
            // SAFETY: `fd` was just created and is owned here alone.
            event: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
        })
    });
    let h = made.as_ref().map_err(|e| {
        NetError::io(
            "making the holder's eventfd",
            "holds",
            std::io::Error::new(e.kind(), e.to_string()),
        )
    })?;
    static STARTED: OnceLock<std::io::Result<()>> = OnceLock::new();
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
    // Polling and closing needs no privilege, and capabilities are per thread.
    if let Err(e) = crate::net::privilege::drop_all() {
        log::error!(
            "the port-holding thread could not give up its capabilities, so it stops: {}",
            crate::with_causes(&e)
        );
        return;
    }
    loop {
        // Only this thread drops holds, so the descriptors polled stay open while it polls.
        let (mut fds, timeout) =
            {
                let list = h.list.lock().unwrap_or_else(|e| e.into_inner());
                let mut fds = vec![libc::pollfd {
                    fd: h.event.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                fds.extend(list.iter().filter_map(|(_, r, _, _)| r.as_ref()).map(|r| {
                    libc::pollfd {
                        fd: r.as_raw_fd(),
                        events: 0,
                        revents: 0,
                    }
                }));
                let young = list
                    .iter()
                    .any(|(_, _, since, _)| since.elapsed() < Duration::from_secs(1));
                let timeout = match (list.is_empty(), young) {
                    (true, _) => -1,
                    (false, true) => 5,
                    (false, false) => 50,
                };
                (fds, timeout)
            };
        // SAFETY: `fds` is a valid array of pollfd of the length given.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if fds[0].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes from a valid eventfd into `v`.
            unsafe { libc::read(h.event.as_raw_fd(), (&raw mut v).cast(), 8) };
        }
        let finished: Vec<Held> = {
            let mut list = h.list.lock().unwrap_or_else(|e| e.into_inner());
            let (done, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|(hold, release, since, _)| hold.over(release.as_ref(), *since));
            *list = keep;
            done
        };
        // A finished hold is closed outside the lock, and not here when a closer is set: the
        // watched socket is shared with a caller, whose socket options could make its last
        // close block, and this thread serves every hold.
        for held in finished {
            match CLOSER.get() {
                Some(close) => {
                    // The swallower is ours: closed here at once, so the port is free now.
                    drop(
                        held.0
                            .swallower
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take(),
                    );
                    close(Box::new(held));
                }
                None => drop(held),
            }
        }
    }
}

/// Where the holder hands what a finished hold held, to be closed (set once by a daemon: its
/// closer thread, under its watchdog).
type CloseWith = Box<dyn Fn(Box<dyn Send>) + Send + Sync>;
static CLOSER: OnceLock<CloseWith> = OnceLock::new();

/// Makes the holder hand every finished hold to `close` instead of closing it itself (a daemon
/// passes its closer thread, where a close that blocks is interrupted and costs no one else).
/// Only the first call counts.
pub fn close_holds_with(close: CloseWith) {
    let _ = CLOSER.set(close);
}
