//! The `synergy()` call of SocketSynergy for Rust programs, and the TCP sequences on top of it:
//! give it a socket (anything with a descriptor), a hop limit and the peer; it checks with the
//! kernel that the socket really holds its address and port (`punch::check`) and punches for its
//! flow, itself when it holds the privilege (CAP_NET_RAW, and CAP_NET_ADMIN for TCP), else through
//! the daemon (`synergy-craft daemon`), which checks the same again. Does I/O.
//!
//! The sequences (docs/API.md):
//! - TCP client (both sides of client/client): socket, bind, [`synergy`], connect — or
//!   [`synergy_connect`]. The socket's own SYN is made the probe's twin (same initial sequence
//!   number, the kernel's options), so strict conntrack takes connect()'s SYN as a retransmission.
//! - TCP server: socket, bind, listen, [`synergy`] (once per peer), accept — [`synergy_accept`]
//!   in Rust, plain `accept()` in C (libsynergy_craft.so provides it). The peer's connection is a
//!   simultaneous open made on another socket with the probe's sequence number while the peer's
//!   SYNs to the listener are swallowed; accepting yields it.
//! - UDP: socket, bind, synergy, connect. SCTP: socket, bind, listen, synergy, accept.

mod accept;
mod keep;

/// The Rust snippet of docs/API.md, compiled as a doc test so that the documented sequences
/// stay true to the API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/API.md")]
struct ApiMd;

use std::net::{SocketAddr, SocketAddrV6, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use thiserror::Error;

use crate::net::raw::RawSender;
use crate::net::sockfacts::{self, getsockopt};
use crate::net::synwatch::SynWatch;
use crate::net::{NetError, privilege};
use crate::param::{HopChoice, HopLimit};
use crate::punch::server::Rendezvous;
use crate::punch::{TcpRole, punch_client, punch_plain, tcp_role};

pub use crate::daemon::client::DaemonError;
pub use crate::punch::check::{Proto, Refusal, SocketInfo};
pub use crate::punch::server::ServerError;
pub use crate::punch::{flow_for, held_flow};
pub(crate) use accept::{accept_swapping, resolve_accept4, write_addr};
pub(crate) use keep::not_kept;
pub use keep::{synergy_keep, synergy_unkeep};

/// How many punched peers' connections `listener` has pending: still waited for, or made and not
/// yet accepted. 0 once each has been accepted or given up (after 120 s without the peer's SYN),
/// when a program that still expects its peer may punch again.
///
/// ```
/// // A listener nobody punched for has nothing pending.
/// let listener = std::net::TcpListener::bind("[::1]:0")?;
/// assert_eq!(synergy_craft::api::pending(&listener), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pending(listener: &impl AsFd) -> usize {
    accept::pending(listener.as_fd().as_raw_fd())
}

/// Why a punch for a socket failed.
#[derive(Debug, Error)]
pub enum SynergyError {
    /// The socket, its addresses or the request broke a rule of `punch::check` (checked here, on
    /// the library's own send path).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Net(#[from] NetError),
    /// Asking the daemon did not give a punch: refused, not permitted, unavailable, garbled.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The server side of a TCP punch could not start (the listener's filter, the SYN watch).
    #[error(transparent)]
    Server(#[from] ServerError),
    /// "auto" found no hop limit in the route memory (or could not read it).
    #[error(transparent)]
    Auto(#[from] crate::routes::store::AutoFailure),
    #[error("{op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SynergyError {
    /// The errno the C ABI reports for this error (include/synergy.h lists them).
    ///
    /// ```
    /// use synergy_craft::api::synergy;
    /// use synergy_craft::param::HopLimit;
    ///
    /// // An unconnected UDP socket and no peer: there is no flow to punch for, and nothing is
    /// // sent (refused by the checks, or by the daemon, or the daemon is not there).
    /// let sock = std::net::UdpSocket::bind("[::1]:0")?;
    /// let err = synergy(&sock, HopLimit(2), None).unwrap_err();
    /// assert!(err.errno() > 0);
    /// println!("refused: {} (errno {})", err.reason(), err.errno());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn errno(&self) -> i32 {
        match self {
            SynergyError::Refused(r) => r.errno(),
            SynergyError::Net(e) => e.errno(),
            SynergyError::Daemon(e) => e.errno(),
            SynergyError::Server(e) => e.errno(),
            SynergyError::Auto(e) => e.errno(),
            SynergyError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// The reason in words, every cause included ("what: why: the OS's words"; the daemon's
    /// own words for a refusal by the daemon).
    pub fn reason(&self) -> String {
        match self {
            SynergyError::Daemon(DaemonError::Refused { reason, .. }) => reason.clone(),
            other => crate::with_causes(other),
        }
    }
}

/// Whether this process can punch for `fd` itself: CAP_NET_RAW in the initial user namespace,
/// and for TCP (whose sequence number is fixed with TCP_REPAIR) CAP_NET_ADMIN too.
fn can_punch_itself(fd: BorrowedFd<'_>) -> bool {
    let tcp = socket2::SockRef::from(&fd).protocol().is_ok_and(|p| {
        p.is_some_and(|p| [libc::IPPROTO_TCP, libc::IPPROTO_MPTCP].contains(&libc::c_int::from(p)))
    });
    privilege::can_send_raw() && (!tcp || privilege::has(privilege::NET_ADMIN.0))
}

/// Punches for `sock`'s flow toward `peer` (None: the socket's connected peer) with `hop_limit`.
/// What it does depends on the socket: a bound, unconnected TCP socket gets the probe's initial
/// sequence number (client sequence); a listening TCP socket gets the peer's connection, made in
/// the background and returned by [`synergy_accept`] (server sequence; call once per peer); any
/// other socket gets its probe. Directly with the privilege (after the checks of [`held_flow`],
/// for the process's real uid), else through the daemon (socket path from
/// `$SYNERGY_DAEMON_SOCKET`, ignored in setuid/setgid programs, else
/// [`crate::daemon::DEFAULT_SOCKET`]).
///
/// ```no_run
/// use std::net::{SocketAddrV6, TcpStream};
/// use synergy_craft::api::synergy;
/// use synergy_craft::param::HopLimit;
///
/// let local: SocketAddrV6 = "[2001:db8:1::11]:4000".parse()?;
/// let peer: SocketAddrV6 = "[2001:db8:2::5]:5000".parse()?;
/// let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
/// sock.bind(&local.into())?;
/// synergy(&sock, HopLimit(2), Some(peer))?;
/// sock.connect(&peer.into())?;
/// let stream = TcpStream::from(sock);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn synergy(
    sock: &impl AsFd,
    hop_limit: impl Into<HopChoice>,
    peer: Option<SocketAddrV6>,
) -> Result<(), SynergyError> {
    let fd = sock.as_fd();
    let hop_limit = hop_limit.into();
    if can_punch_itself(fd) {
        itself(fd, hop_limit, peer)
    } else {
        through_daemon(fd, hop_limit, peer, crate::daemon::proto::Op::Punch)
    }
}

/// The hop limit to send with: the one given, or for [`HopChoice::Auto`] the one the route
/// memory chooses for the flow's route (`routes`).
fn resolve_hop(choice: HopChoice, info: &SocketInfo) -> Result<HopLimit, SynergyError> {
    match choice {
        HopChoice::Fixed(h) => Ok(h),
        HopChoice::Auto => Ok(crate::routes::store::auto_for(info.peer)?),
    }
}

/// The hop limit byte of a request to the daemon: the number, or 0 for auto (a fixed 0 would
/// read as auto, and crosses nothing: refused here).
fn wire_hop(choice: HopChoice) -> Result<HopLimit, SynergyError> {
    match choice {
        HopChoice::Fixed(HopLimit(0)) => Err(Refusal::HopRange {
            hop: 0,
            min: 1,
            max: u8::MAX,
        }
        .into()),
        HopChoice::Fixed(h) => Ok(h),
        HopChoice::Auto => Ok(HopLimit(crate::daemon::proto::HOP_AUTO)),
    }
}

fn itself(
    fd: BorrowedFd<'_>,
    hop_limit: HopChoice,
    peer: Option<SocketAddrV6>,
) -> Result<(), SynergyError> {
    // SAFETY: getuid has no preconditions.
    let info = held_flow(fd, peer, unsafe { libc::getuid() })?;
    let hop_limit = resolve_hop(hop_limit, &info)?;
    let sender = RawSender::open(Some((*info.local.ip(), info.local.scope_id())))?;
    match tcp_role(&info) {
        TcpRole::Client => {
            let (_, hold) = punch_client(fd, &info, hop_limit, &sender)?;
            // The holder waits on the pipe's read end; closing the write end releases the hold.
            let (release, ours) = std::io::pipe().map_err(|source| SynergyError::Io {
                op: "making the hold's release",
                source,
            })?;
            let swallower = hold.swallower();
            hold.keep(Some(release.into()), ())?;
            hold_for(fd, ours.into(), Some(swallower));
        }
        TcpRole::Connected => {
            punch_plain(&info, hop_limit, &sender)?;
        }
        TcpRole::Server => listener_itself(fd, &info, hop_limit, sender, false)?,
    }
    Ok(())
}

/// The server side of a punch in this process: the rendezvous for the peer, completed on a thread
/// of its own (at most [`crate::punch::server::WAIT_LIMIT`]; `kept`: for as long as the listener
/// is there, punching again within half Linux's SYN_SENT timeout).
fn listener_itself(
    fd: BorrowedFd<'_>,
    info: &SocketInfo,
    hop_limit: HopLimit,
    sender: RawSender,
    kept: bool,
) -> Result<(), SynergyError> {
    let watch = SynWatch::shared()?;
    // The listener is this process's own: nothing to check again.
    let rv = Rendezvous::begin(
        fd,
        info.local,
        info.peer,
        hop_limit,
        sender,
        &watch,
        |_| Ok(()),
        |_| {},
    )?;
    let (local, peer) = (info.local, info.peer);
    let cookie = sockfacts::cookie(fd).map_err(|source| SynergyError::Io {
        op: "reading the listener's cookie",
        source,
    })?;
    background(fd, move || {
        let got = if kept {
            let link = crate::net::sockdiag::Link::open().map_err(|source| SynergyError::Io {
                op: "opening sock_diag for a kept listener",
                source,
            })?;
            let listening = || matches!(link.tcp_socket(local, peer, cookie), Ok(Some(10)));
            let repunch = crate::keep::Timeouts::from_env().tcp / 2;
            rv.complete_kept(None, repunch, &listening)
        } else {
            rv.complete(None)
        };
        got.map(|s| (OwnedFd::from(s), peer))
            .map_err(SynergyError::from)
    })
}

fn through_daemon(
    fd: BorrowedFd<'_>,
    hop_limit: HopChoice,
    peer: Option<SocketAddrV6>,
    op: crate::daemon::proto::Op,
) -> Result<(), SynergyError> {
    use crate::daemon::client::{Outcome, await_connection, request};
    match request(fd.as_raw_fd(), wire_hop(hop_limit)?, peer, op)? {
        Outcome::Sent => Ok(()),
        Outcome::Replace(new, conn) => {
            take_place(fd, new)?;
            // The daemon holds the port until this connection closes: at connect().
            hold_for(fd, conn.into(), None);
            Ok(())
        }
        Outcome::Waiting(pending) => background(fd, move || {
            await_connection(pending).map_err(SynergyError::from)
        }),
    }
}

/// What ends one hold: the socket's SO_COOKIE, the release whose closing ends the hold, (for a
/// hold of this process) its swallower, closed at once, and when it began.
type Release = (
    u64,
    OwnedFd,
    Option<crate::punch::client::Swallower>,
    std::time::Instant,
);

/// How many holds the registry has: read without a lock by the `connect()` interposer, so that a
/// program without holds never takes the registry's lock in connect() (which may be called in a
/// forked child or a signal handler).
static HOLD_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The punched client sockets whose port is held until they connect, by descriptor.
fn holds() -> std::sync::MutexGuard<'static, std::collections::HashMap<RawFd, Release>> {
    static HOLDS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<RawFd, Release>>> =
        std::sync::OnceLock::new();
    HOLDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn hold_for(
    fd: BorrowedFd<'_>,
    release: OwnedFd,
    swallower: Option<crate::punch::client::Swallower>,
) {
    if let Ok(cookie) = sockfacts::cookie(fd) {
        let mut h = holds();
        // Entries of sockets closed without connecting go once their hold is over anyway.
        h.retain(|_, (_, _, _, since)| since.elapsed() < crate::punch::client::HOLD_LIMIT);
        h.insert(
            fd.as_raw_fd(),
            (cookie, release, swallower, std::time::Instant::now()),
        );
        HOLD_COUNT.store(h.len(), std::sync::atomic::Ordering::Release);
    }
}

/// Ends the hold on a punched client socket's port (the listener that swallows the peer's SYN
/// until the socket connects), as the program is about to connect it: the library's `connect()`
/// and [`synergy_connect`] do this; a program that connects a punched socket some other way
/// calls it first (else the hold ends by itself once the socket is seen connecting, at the
/// latest after 30 s, and a refused attempt's retry may find the port still held). Returns
/// whether there was a hold.
///
/// ```
/// // A socket that was never punched holds nothing.
/// let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
/// assert!(!synergy_craft::api::release_hold(&sock));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn release_hold(sock: &impl AsFd) -> bool {
    let fd = sock.as_fd();
    let removed = {
        let mut h = holds();
        let r = h.remove(&fd.as_raw_fd());
        h.retain(|_, (_, _, _, since)| since.elapsed() < crate::punch::client::HOLD_LIMIT);
        HOLD_COUNT.store(h.len(), std::sync::atomic::Ordering::Release);
        r
    };
    let Some((cookie, release, swallower, _)) = removed else {
        return false;
    };
    // A hold of this process ends here and now, so that a retry's bind finds the port free; the
    // daemon's ends when it sees the release close (at once, in its poll()).
    if let Some(s) = swallower {
        drop(s.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
    drop(release);
    // A stale entry (the descriptor reused for another socket) is dropped all the same.
    sockfacts::cookie(fd).is_ok_and(|c| c == cookie)
}

/// Whether any punched client socket may be held: one atomic load, no lock (the `connect()`
/// interposer's test).
pub(crate) fn any_hold() -> bool {
    HOLD_COUNT.load(std::sync::atomic::Ordering::Acquire) != 0
}

/// Puts the daemon's socket `new` (bound to the same address and port, with the probe's initial
/// sequence number) in the place of the caller's descriptor `fd`: the socket options a program
/// commonly sets before connect() are copied from the old socket, as are its O_NONBLOCK and
/// close-on-exec flags; then dup3() makes `fd` refer to the new socket (the old one is closed
/// unless the program holds it through another descriptor).
fn take_place(fd: BorrowedFd<'_>, new: OwnedFd) -> Result<(), SynergyError> {
    use crate::net::sockfacts::setsockopt_int;
    let io = |op| move |source| SynergyError::Io { op, source };
    let ints: [(libc::c_int, libc::c_int); 16] = [
        (libc::SOL_SOCKET, libc::SO_REUSEADDR),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
        (libc::SOL_SOCKET, libc::SO_OOBINLINE),
        (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
        (libc::SOL_SOCKET, libc::SO_PRIORITY),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG),
        (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
        (libc::IPPROTO_TCP, libc::TCP_SYNCNT),
        (libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP),
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
    ];
    for (level, name) in ints {
        let (Ok(old), Ok(cur)) = (
            getsockopt::<libc::c_int>(fd, level, name),
            getsockopt::<libc::c_int>(new.as_fd(), level, name),
        ) else {
            continue;
        };
        if old != cur && setsockopt_int(new.as_fd(), level, name, old).is_err() {
            log::debug!("could not copy socket option {level}/{name} to the new socket");
        }
    }
    // The kernel doubles what is set for the buffers and reports the doubled value.
    for name in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        if let (Ok(old), Ok(cur)) = (
            getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, name),
            getsockopt::<libc::c_int>(new.as_fd(), libc::SOL_SOCKET, name),
        ) && old != cur
        {
            let _ = setsockopt_int(new.as_fd(), libc::SOL_SOCKET, name, old / 2);
        }
    }
    let (o, n) = (socket2::SockRef::from(&fd), socket2::SockRef::from(&new));
    if let Ok(l) = o.linger() {
        let _ = n.set_linger(l);
    }
    if let Ok(t) = o.read_timeout() {
        let _ = n.set_read_timeout(t);
    }
    if let Ok(t) = o.write_timeout() {
        let _ = n.set_write_timeout(t);
    }
    // SAFETY: fcntl and dup3 on descriptors that are open for the call; `new` is closed after.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        let fd_fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if fl < 0 || fd_fl < 0 {
            return Err(io("reading the socket's flags")(
                std::io::Error::last_os_error(),
            ));
        }
        let nfl = libc::fcntl(new.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(
            new.as_raw_fd(),
            libc::F_SETFL,
            (nfl & !libc::O_NONBLOCK) | (fl & libc::O_NONBLOCK),
        );
        let cloexec = if fd_fl & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        if libc::dup3(new.as_raw_fd(), fd.as_raw_fd(), cloexec) < 0 {
            return Err(io("putting the punched socket in place")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Registers `listener` for a punched connection and waits for it on a thread of its own; the
/// connection, once made, is announced to the listener for [`synergy_accept`] / `accept()`.
fn background(
    listener: BorrowedFd<'_>,
    wait: impl FnOnce() -> Result<(OwnedFd, SocketAddrV6), SynergyError> + Send + 'static,
) -> Result<(), SynergyError> {
    let io = |op| move |source| SynergyError::Io { op, source };
    let cookie = sockfacts::cookie(listener).map_err(io("reading the listener's cookie"))?;
    accept::expect(listener).map_err(io("registering the listener"))?;
    let raw = listener.as_raw_fd();
    std::thread::Builder::new()
        .name("synergy-accept".into())
        .spawn(move || {
            // Waiting, re-punching through the open raw socket and connecting the socket made
            // already need no privilege, and capabilities are per thread: this one gives up
            // what it inherited, or gives the connection up (fails closed).
            if let Err(e) = crate::net::privilege::drop_all() {
                log::error!(
                    "the waiting thread could not give up its capabilities: {}",
                    crate::with_causes(&e)
                );
                accept::arrived(raw, cookie, None);
                return;
            }
            let got = wait();
            if let Err(e) = &got {
                log::warn!(
                    "the punched connection did not come: {}",
                    crate::with_causes(e)
                );
            }
            accept::arrived(raw, cookie, got.ok());
        })
        .map(|_| ())
        .map_err(|e| {
            accept::arrived(raw, cookie, None);
            SynergyError::Io {
                op: "starting the thread that waits for the peer",
                source: e,
            }
        })
}

/// `accept()` for a listener that may have punched peers: the next connection, which is a
/// punched peer's as soon as one is ready (see the module documentation), or any other client's.
/// Blocks unless the listener is non-blocking, like accept(2); the stream is close-on-exec.
pub fn synergy_accept(listener: &impl AsFd) -> std::io::Result<(TcpStream, SocketAddr)> {
    let (fd, from, _, _) = accept_swapping(listener.as_fd().as_raw_fd(), libc::SOCK_CLOEXEC)?;
    let from = from.ok_or_else(|| std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    Ok((TcpStream::from(fd), from))
}

/// The client sequence in one call: [`synergy`] on the bound, unconnected TCP socket `sock`, then
/// a blocking connect() to `peer`. A refused or timed-out connect() is an `Io` error; a program
/// retries it with a fresh socket.
pub fn synergy_connect(
    sock: &impl AsFd,
    hop_limit: impl Into<HopChoice>,
    peer: SocketAddrV6,
) -> Result<(), SynergyError> {
    synergy(sock, hop_limit, Some(peer))?;
    release_hold(sock);
    socket2::SockRef::from(sock)
        .connect(&peer.into())
        .map_err(|source| SynergyError::Io {
            op: "connecting to the peer",
            source,
        })
}

/// The server sequence for one peer in one call: a listener on `local`, [`synergy`] for `peer`,
/// and [`synergy_accept`] until the peer's connection comes (other clients are closed), at most
/// `timeout`. Through strict conntrack the connection is clean (a simultaneous open with the
/// probe's sequence number). Works with or without privilege (the daemon does it otherwise).
pub fn tcp_accept_from(
    local: SocketAddrV6,
    peer: SocketAddrV6,
    hop_limit: impl Into<HopChoice>,
    timeout: Option<std::time::Duration>,
) -> Result<TcpStream, SynergyError> {
    let io = |op| move |source| SynergyError::Io { op, source };
    let listener = crate::net::tcp::plain_listener(local)?;
    synergy(&listener, hop_limit, Some(peer))?;
    let give_up = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let left = give_up.map(|g| g.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(SynergyError::Io {
                op: "waiting for the peer's connection",
                source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            });
        }
        let ready = crate::net::poll_one(listener.as_fd(), libc::POLLIN, left)
            .map_err(io("waiting for the peer's connection"))?;
        if ready == 0 {
            continue;
        }
        let (stream, from) = synergy_accept(&listener).map_err(io("accepting"))?;
        if let SocketAddr::V6(f) = from
            && f.ip() == peer.ip()
            && f.port() == peer.port()
        {
            return Ok(stream);
        }
        log::info!("closed a connection from {from}: not the peer {peer}");
    }
}
