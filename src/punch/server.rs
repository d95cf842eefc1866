//! The server side of a TCP punch (RFC 9293 §3.5 simultaneous open): a listener's punched peers
//! have their SYNs swallowed by a socket filter on the listener (`Swallow`), while a socket bound
//! to the listener's address and port with the probe's initial sequence number waits for the
//! peer's SYN and then connects, so that its SYN crosses the peer's and every segment matches what
//! the firewalls' conntrack recorded from the probe. Used by the library (privileged callers) and
//! the daemon (everyone else) alike. Does I/O.

use std::collections::HashMap;
use std::net::SocketAddrV6;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::Socket;

use super::Puncher;
use super::plan::probe_for;
use crate::net::raw::RawSender;
use crate::net::sockfacts;
use crate::net::synwatch::{SynWatch, Ticket, WatchError};
use crate::net::{NetError, tcp};
use crate::param::HopLimit;

/// How long a punched listener waits for the peer's SYN before the punch is given up.
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);
/// How often the probe is sent again while waiting: inside Linux's 120 s SYN_SENT timeout and the
/// 30 s some CPE use (the default of `--repunch` for TCP, `config::default_repunch`).
pub const REPUNCH: Duration = Duration::from_secs(20);
/// How long the simultaneous open may take once the peer's SYN has been seen.
pub const OPEN_LIMIT: Duration = Duration::from_secs(10);
/// Most peers one listener may wait for at once (each costs 11 filter instructions).
pub const MAX_PEERS: usize = 64;

/// Why the server side of a punch failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(
        "the listener already has a socket filter of its own, or has locked its filter (a punched listener's filter is synergy-craft's)"
    )]
    FilterBusy,
    #[error("the listener already waits for {MAX_PEERS} punched peers")]
    TooManyPeers,
    #[error(
        "the listener is in an SO_REUSEPORT group (its other members would meet the peer's SYN)"
    )]
    ReusePort,
    /// The kernel's second look at the socket refused it (the caller changed it meanwhile).
    #[error("the socket changed while it was punched for")]
    Changed(#[source] crate::punch::check::Refusal),
    #[error("setting the listener's socket filter")]
    Filter(#[source] std::io::Error),
    #[error("no SYN from the peer {peer} within {} s", WAIT_LIMIT.as_secs())]
    NoPeer { peer: SocketAddrV6 },
    #[error("the caller went away")]
    Cancelled,
    #[error("completing the simultaneous open with {peer}")]
    Open {
        peer: SocketAddrV6,
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    /// The errno the C ABI and the daemon report (include/synergy.h).
    pub fn errno(&self) -> i32 {
        match self {
            ServerError::Net(e) => e.errno(),
            ServerError::Watch(WatchError::AlreadyWaiting { .. }) => libc::EALREADY,
            ServerError::Watch(_) => libc::EIO,
            ServerError::FilterBusy => libc::EBUSY,
            ServerError::TooManyPeers => libc::ENOBUFS,
            ServerError::ReusePort => libc::EOPNOTSUPP,
            ServerError::Changed(r) => r.errno(),
            ServerError::Filter(e) => e.raw_os_error().unwrap_or(libc::EIO),
            ServerError::NoPeer { .. } => libc::ETIMEDOUT,
            ServerError::Cancelled => libc::ECANCELED,
            ServerError::Open { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// The punched peers of one listener, whose segments its filter drops.
type Peers = Arc<Mutex<Vec<SocketAddrV6>>>;

/// Each listener's punched peers, by SO_COOKIE. The map's own lock is never held across a system
/// call: a caller can hold its socket's lock in the kernel indefinitely (a setsockopt whose
/// buffer faults on a page it serves), and only that listener's lock may wait on it.
fn listeners() -> std::sync::MutexGuard<'static, HashMap<u64, Peers>> {
    static MAP: OnceLock<Mutex<HashMap<u64, Peers>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn lock(p: &Peers) -> std::sync::MutexGuard<'_, Vec<SocketAddrV6>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// One peer swallowed at one listener; dropping it lets the peer's SYNs reach the listener again
/// (and removes the filter when no punched peer is left).
pub struct Swallow {
    listener: OwnedFd,
    cookie: u64,
    peers: Peers,
    peer: SocketAddrV6,
}

impl Swallow {
    /// Adds `peer` to the listener's filter. A listener with a filter that is not ours, or in an
    /// SO_REUSEPORT group (whose other members the filter would not cover), is refused.
    pub fn new(listener: BorrowedFd<'_>, peer: SocketAddrV6) -> Result<Swallow, ServerError> {
        let cookie = sockfacts::cookie(listener).map_err(ServerError::Filter)?;
        if socket2::SockRef::from(&listener)
            .reuse_port()
            .map_err(ServerError::Filter)?
        {
            return Err(ServerError::ReusePort);
        }
        let listener = listener.try_clone_to_owned().map_err(ServerError::Filter)?;
        // Taken under the map's lock: from now on the entry counts this holder (see Drop).
        let peers = Arc::clone(listeners().entry(cookie).or_default());
        let added = (|| {
            let mut list = lock(&peers);
            if list.is_empty()
                && tcp::filter_len(listener.as_fd()).map_err(ServerError::Filter)? != 0
            {
                return Err(ServerError::FilterBusy);
            }
            if list.len() >= MAX_PEERS {
                return Err(ServerError::TooManyPeers);
            }
            list.push(peer);
            if let Err(e) = tcp::set_filter(listener.as_fd(), Some(&tcp::peer_filter(&list))) {
                list.pop();
                // A listener whose filter is locked (SO_LOCK_FILTER, even with no filter)
                // refuses any change with EPERM (sk_attach_filter): its filter is its own.
                if e.raw_os_error() == Some(libc::EPERM) {
                    return Err(ServerError::FilterBusy);
                }
                return Err(ServerError::Filter(e));
            }
            Ok(())
        })();
        if let Err(e) = added {
            // A refused listener leaves no entry behind.
            forget_if_unused(cookie, &peers);
            return Err(e);
        }
        Ok(Swallow {
            listener,
            cookie,
            peers,
            peer,
        })
    }
}

impl Drop for Swallow {
    fn drop(&mut self) {
        let mut list = lock(&self.peers);
        if let Some(i) = list.iter().position(|p| *p == self.peer) {
            list.remove(i);
        }
        let result = if list.is_empty() {
            tcp::set_filter(self.listener.as_fd(), None)
        } else {
            tcp::set_filter(self.listener.as_fd(), Some(&tcp::peer_filter(&list)))
        };
        let empty = list.is_empty();
        drop(list);
        if let Err(e) = result {
            log::warn!(
                "updating the filter of a punched listener: {}",
                crate::with_causes(&e)
            );
        }
        if empty {
            forget_if_unused(self.cookie, &self.peers);
        }
    }
}

/// Removes a listener's entry when nobody but the map and the caller holds it (a Swallow being
/// made takes its reference under the map's lock) and it has no peer; try_lock: a listener
/// whose lock a stuck thread holds is left in the map rather than waited for under the map's lock.
fn forget_if_unused(cookie: u64, peers: &Peers) {
    let mut map = listeners();
    if map.get(&cookie).is_some_and(|p| {
        Arc::ptr_eq(p, peers)
            && Arc::strong_count(p) == 2
            && p.try_lock().is_ok_and(|l| l.is_empty())
    }) {
        map.remove(&cookie);
    }
}

/// A punched listener waiting for one peer: the swallow, the socket with the probe's ISN, the
/// SYN watch's ticket and the probe for repunching.
pub struct Rendezvous {
    sock: Socket,
    ticket: Ticket,
    puncher: Puncher,
    swallow: Swallow,
    peer: SocketAddrV6,
}

impl Rendezvous {
    /// Starts the server side for `peer` on `listener` (bound to `local`): swallow, register,
    /// make the ISN socket (CAP_NET_ADMIN: the thread must hold it), then `verify` (given the
    /// new socket's SO_COOKIE: the caller re-checks that the port is still the caller's, now that
    /// a socket of ours is bound to it in repair mode), then punch (`punching` is shown the probe
    /// just before it goes out).
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        listener: BorrowedFd<'_>,
        local: SocketAddrV6,
        peer: SocketAddrV6,
        hop_limit: HopLimit,
        sender: RawSender,
        watch: &SynWatch,
        verify: impl FnOnce(u64) -> Result<(), ServerError>,
        punching: impl FnOnce(&crate::wire::probe::ProbeRepr),
    ) -> Result<Rendezvous, ServerError> {
        let swallow = Swallow::new(listener, peer)?;
        let ticket = watch.expect(local, peer)?;
        let isn = tcp::isn_for(local, peer);
        let sock = tcp::isn_socket(local, isn)?;
        let cookie = sockfacts::cookie(sock.as_fd()).map_err(ServerError::Filter)?;
        verify(cookie)?;
        let repr = probe_for(super::kernel_like_tcp(isn, peer), local, peer, hop_limit);
        let puncher = Puncher::with_sender(repr, peer.scope_id(), sender)?;
        punching(puncher.repr());
        puncher.punch()?;
        Ok(Rendezvous {
            sock,
            ticket,
            puncher,
            swallow,
            peer,
        })
    }

    /// Restricts the connection socket to the peer (`net::tcp::lock_to_peer`): for a socket that
    /// will be handed to a caller that did not make it.
    pub fn lock_to_peer(&self) -> Result<(), ServerError> {
        Ok(tcp::lock_to_peer(&self.sock, self.peer)?)
    }

    /// Waits (in poll(), repunching every [`REPUNCH`]) for the peer's SYN, at most
    /// [`WAIT_LIMIT`], and gives up early when `cancel` hangs up; then completes the simultaneous
    /// open and returns the connected socket (blocking mode, close-on-exec).
    pub fn complete(self, cancel: Option<BorrowedFd<'_>>) -> Result<Socket, ServerError> {
        self.wait(cancel, Some(WAIT_LIMIT), REPUNCH, &|| true)
    }

    /// [`Rendezvous::complete`] for a kept hole (`synergy_keep` on a listener): no time limit,
    /// the probe sent again every `repunch` (within the firewalls' SYN_SENT timeout), for as long
    /// as `listening` says the listener is still there (asked before every repunch) and `cancel`
    /// has not hung up.
    pub fn complete_kept(
        self,
        cancel: Option<BorrowedFd<'_>>,
        repunch: Duration,
        listening: &dyn Fn() -> bool,
    ) -> Result<Socket, ServerError> {
        self.wait(cancel, None, repunch, listening)
    }

    fn wait(
        self,
        cancel: Option<BorrowedFd<'_>>,
        limit: Option<Duration>,
        repunch: Duration,
        listening: &dyn Fn() -> bool,
    ) -> Result<Socket, ServerError> {
        let start = Instant::now();
        let give_up = limit.map(|l| start + l);
        let mut next_punch = start + repunch;
        while self.ticket.seen().is_none() {
            let now = Instant::now();
            if give_up.is_some_and(|g| now >= g) {
                return Err(ServerError::NoPeer { peer: self.peer });
            }
            if now >= next_punch {
                if !listening() {
                    return Err(ServerError::Cancelled);
                }
                self.puncher.punch()?;
                next_punch = now + repunch;
            }
            let until = give_up.map_or(next_punch, |g| g.min(next_punch));
            let mut fds = vec![libc::pollfd {
                fd: self.ticket.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(c) = cancel {
                fds.push(libc::pollfd {
                    fd: c.as_raw_fd(),
                    events: 0,
                    revents: 0,
                });
            }
            let ms = until
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, 60_000) as libc::c_int;
            // SAFETY: `fds` is a valid array of pollfd of the length given.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if fds
                .get(1)
                .is_some_and(|f| f.revents & (libc::POLLHUP | libc::POLLERR) != 0)
            {
                return Err(ServerError::Cancelled);
            }
        }
        log::info!(
            "peer {} sent its SYN: connecting (simultaneous open)",
            self.peer
        );
        let open = |e| ServerError::Open {
            peer: self.peer,
            source: e,
        };
        self.sock
            .connect_timeout(&self.peer.into(), OPEN_LIMIT)
            .map_err(open)?;
        // The four-tuple now belongs to the connection: the listener may see the peer again.
        drop(self.swallow);
        Ok(self.sock)
    }
}
