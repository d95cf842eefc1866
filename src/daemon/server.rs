//! The daemon's server (feature `cli`: it runs as `synergy-craft daemon`): admission, the
//! per-caller threads, the decisions and the punches. Does I/O.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::proto::{HOP_AUTO, Op, Reply, Request};
use super::{
    HOLDS_PER_UID, KEEPS_PER_GROUP, KEEPS_PER_UID, KEEPS_TOTAL, WAITS_PER_UID, closer, exits,
    learn, ledger, loglimit, proto, sockfile,
};
use crate::keep::{self, Kept};
use crate::net::raw::RawSender;
use crate::net::synwatch::SynWatch;
use crate::net::{fdpass, privilege};
use crate::param::HopLimit;
use crate::punch::check::{Proto, Refusal, SocketInfo, hop_in_range};
use crate::punch::client::Hold;
use crate::punch::server::{Rendezvous, ServerError};
use crate::punch::{TcpRole, held_flow_made, send_probe, tcp_role};

/// How many of the sockets it made for one uid the daemon remembers (to count them as the
/// caller's).
const MADE_PER_UID: usize = 4096;

/// Who may ask for what.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Admitted uids besides root.
    pub allow_uids: Vec<u32>,
    /// Admitted groups (a caller's primary or supplementary group).
    pub allow_gids: Vec<u32>,
    pub min_hop: u8,
    pub max_hop: u8,
    /// Requests per second per uid (token bucket, bursts of the same size).
    pub rate: u32,
    /// Connections one uid may have open at once.
    pub per_uid: usize,
    /// How long a caller has to send its request after connecting.
    pub deadline: Duration,
}

impl Policy {
    /// Deny by default: root, the listed uids and members of the listed groups are admitted, and
    /// charged (see `ledger`) to their uid, and a member admitted through a group to that group too.
    pub fn admits(&self, uid: u32, gids: &[u32]) -> Option<Vec<ledger::Account>> {
        if uid == 0 || self.allow_uids.contains(&uid) {
            return Some(vec![ledger::Account::Uid(uid)]);
        }
        let g = gids.iter().find(|g| self.allow_gids.contains(g))?;
        Some(vec![ledger::Account::Uid(uid), ledger::Account::Group(*g)])
    }

    fn limits(&self) -> ledger::Limits {
        ledger::Limits {
            open: self.per_uid,
            rate: self.rate,
        }
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    pub socket: PathBuf,
    pub policy: Policy,
    /// Group of the socket file.
    pub group: Option<u32>,
    pub mode: u32,
    /// The user to run as after start-up (uid, gid, name).
    pub user: (u32, u32, String),
    /// The firewalls' conntrack timeouts the keeper punches within (`--conntrack-timeout`).
    pub keep: keep::Timeouts,
    /// The operator's hop-limit ranges per destination prefix (`--hop-range`).
    pub hop_ranges: Vec<(crate::param::Prefix, u8, u8)>,
    /// The route memory's state file.
    pub routes: PathBuf,
}

struct Shared {
    policy: Policy,
    sender: RawSender,
    watch: Arc<SynWatch>,
    /// Punches waiting, per kind and account (None: all).
    waits: Mutex<std::collections::HashMap<(Waiting, Option<ledger::Account>), usize>>,
    /// The sockets the daemon made for callers: on their port they are their caller's, not the
    /// daemon's user's.
    made: Mutex<Made>,
    ledger: Mutex<ledger::Ledger>,
    dog: Arc<closer::Watchdog>,
    closer: closer::Closer,
    log: loglimit::RefusalLog,
    keeper: keep::Shared,
    exits: Arc<exits::Exits>,
    learner: Arc<learn::Learner>,
    started: Instant,
    /// Requests served, and probes sent for them (not the keeper's).
    requests: std::sync::atomic::AtomicU64,
    punches: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Counts a punch about to be sent for a request, and remembers an auto one for the answers
    /// to it (before it goes out: an answer may come back before send() returns).
    fn sent(&self, repr: &crate::wire::probe::ProbeRepr, auto: bool) {
        self.punches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if auto {
            self.learner.sent(repr);
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, ledger::Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn made_for(&self, cookie: u64) -> Option<u32> {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.owner.get(&cookie).copied()
    }

    /// Remembers a socket made for `uid`, charged to each of the caller's accounts (its uid,
    /// and an admitting group at `GROUP_FACTOR` times the room): each account's oldest are
    /// forgotten first, so no one outside the account can push a caller's out, and a group
    /// member switching among many uids cannot grow the memory beyond the group's room.
    fn remember_made(&self, cookie: u64, uid: u32, accounts: &[ledger::Account]) {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        for a in accounts {
            let cap = match a {
                ledger::Account::Uid(_) => MADE_PER_UID,
                ledger::Account::Group(_) => MADE_PER_UID * ledger::GROUP_FACTOR,
            };
            let order = made.order.entry(*a).or_default();
            order.push_back(cookie);
            let old = (order.len() > cap).then(|| order.pop_front()).flatten();
            if let Some(old) = old {
                made.owner.remove(&old);
            }
        }
        made.owner.insert(cookie, uid);
    }

    /// Takes a waiting place (a punched listener waiting for its peer, or a client socket held
    /// until it connects) from each account of the caller (its uid, and an admitting group at
    /// `GROUP_FACTOR` times the room) and from the daemon's total.
    fn wait_slot(
        self: &Arc<Self>,
        accounts: &[ledger::Account],
        kind: Waiting,
    ) -> Result<WaitSlot, Refusal> {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<(Waiting, Option<ledger::Account>)> =
            accounts.iter().map(|a| (kind, Some(*a))).collect();
        keys.push((kind, None));
        let per_uid = match kind {
            Waiting::Listener => WAITS_PER_UID,
            Waiting::Hold => HOLDS_PER_UID,
        };
        for k in &keys {
            let (cap, who) = match k.1 {
                Some(ledger::Account::Uid(u)) => (per_uid, format!("uid {u}")),
                Some(ledger::Account::Group(g)) => {
                    (per_uid * ledger::GROUP_FACTOR, format!("group {g}"))
                }
                None => (per_uid * 16, "the daemon".to_string()),
            };
            let n = waits.get(k).copied().unwrap_or(0);
            if n >= cap {
                return Err(Refusal::Busy {
                    who,
                    open: n,
                    what: match kind {
                        Waiting::Listener => "punched listeners waiting for their peers",
                        Waiting::Hold => "punched client sockets not yet connected",
                    },
                    cap,
                });
            }
        }
        for k in &keys {
            *waits.entry(*k).or_default() += 1;
        }
        Ok(WaitSlot {
            shared: Arc::clone(self),
            keys,
        })
    }
}

/// The sockets the daemon made for callers, by SO_COOKIE.
#[derive(Default)]
struct Made {
    owner: std::collections::HashMap<u64, u32>,
    order: std::collections::HashMap<ledger::Account, std::collections::VecDeque<u64>>,
}

/// What a waiting place is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Waiting {
    /// A punched listener waiting for its peer (a thread, a few descriptors, up to 120 s).
    Listener,
    /// A client socket's swallower until the socket connects (two descriptors, up to 30 s).
    Hold,
}

/// A waiting place, given back when dropped.
struct WaitSlot {
    shared: Arc<Shared>,
    keys: Vec<(Waiting, Option<ledger::Account>)>,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut waits = self.shared.waits.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            if let Some(n) = waits.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    waits.remove(k);
                }
            }
        }
    }
}

/// What a request came to.
enum Decision {
    /// The probe was sent (or a kept flow let go).
    Sent(String),
    /// The daemon's state, for a status request: the JSON document.
    Status(String),
    /// A listener was punched for; its connection is still to be made.
    /// With the listener's local address and cookie when the hole is kept (`synergy_keep` on a
    /// listener: no time limit, for as long as the listener is there).
    Wait(
        String,
        Box<Rendezvous>,
        WaitSlot,
        std::net::SocketAddrV6,
        Option<(std::net::SocketAddrV6, u64)>,
    ),
    /// A client socket was punched for: the new socket the caller puts in its place, and the
    /// hold on its port (kept until the caller's connect() releases it).
    Replace(String, socket2::Socket, Hold, WaitSlot),
}

/// The connection an admitted caller holds in the ledger, given back when it is dropped.
struct Slot {
    shared: Arc<Shared>,
    accounts: Vec<ledger::Account>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.ledger().close(&self.accounts);
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and the threads it starts) and returns a
/// signalfd that reads them.
fn signal_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: building a signal set and blocking it; signalfd returns a new descriptor.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Serves requests until SIGTERM or SIGINT, then removes the socket file.
pub(crate) fn serve(cfg: &DaemonConfig) -> anyhow::Result<()> {
    // Room for many callers' descriptors: the soft descriptor limit up to the hard one.
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let listening = sockfile::listen(&cfg.socket, cfg.group, cfg.mode)?;
    // One raw socket for every caller's source address and one that sees the SYNs of punched
    // listeners' peers, opened now: CAP_NET_RAW goes with the change of user. CAP_NET_ADMIN stays
    // permitted (not effective): TCP_REPAIR on a caller's socket, or on the socket made for its
    // punched listener, is the one thing that needs it.
    // Signals are blocked (and read from the signalfd) before any thread starts, so that every
    // thread inherits the mask: a SIGTERM must reach the signalfd, not end the process.
    let sigfd = signal_fd().context("setting up signal handling")?;
    let sender = RawSender::open(None)?;
    let watch = SynWatch::open()?;
    let answers = learn::open_watch()?;
    let keep_sender = sender.try_clone()?;
    let (uid, gid, name) = &cfg.user;
    state_dir(&cfg.routes, *uid, *gid)?;
    if name == "nobody" {
        log::warn!(
            "running as nobody: every other process of nobody may signal or limit the daemon; \
             give it a user of its own with --user (contrib/systemd does)"
        );
    }
    privilege::become_user(*uid, *gid, &[privilege::NET_ADMIN.0])
        .with_context(|| format!("giving up privilege (becoming {name}, uid {uid})"))?;
    let watch = watch.start()?;
    listening
        .listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    // Nobody may send descriptors until admitted (SO_PASSRIGHTS, Linux 6.16): a refused or
    // unadmitted caller cannot queue any for the daemon to close.
    if let Err(e) = pass_rights(listening.listener.as_fd(), false) {
        log::warn!(
            "this kernel cannot refuse descriptors before admission (SO_PASSRIGHTS: {e}); \
             descriptors queued by refused callers are closed on the closer thread"
        );
    }
    let dog = closer::Watchdog::start().context("starting the close watchdog")?;
    let mut memory = crate::routes::store::Memory::open(cfg.routes.clone())
        .context("reading the route memory")?;
    memory
        .update(|t| t.set_operator(&cfg.hop_ranges))
        .context("writing the operator's hop ranges to the route memory")?;
    let learner = Arc::new(learn::Learner::new(memory, cfg.policy.min_hop));
    learn::start(answers, Arc::clone(&learner)).context("starting the route learner")?;
    let sent_by_keeper = Arc::clone(&learner);
    let keeper = crate::punch::keeper::start(keep_sender, cfg.keep, move |f, probe| {
        if f.auto {
            sent_by_keeper.sent_key(probe.key, f.hop_limit)
        }
    })?;
    let lowering = keeper.clone();
    learner.on_refused(move |key, max| {
        let proto = match key.proto {
            p if p == crate::wire::ipv6::proto::UDP => Proto::Udp,
            p if p == crate::wire::ipv6::proto::SCTP => Proto::Sctp,
            _ => Proto::Tcp,
        };
        let local = std::net::SocketAddrV6::new(key.src, key.sport, 0, 0);
        let peer = std::net::SocketAddrV6::new(key.dst, key.dport, 0, 0);
        let n = lowering.lock().lower(local, peer, proto, max, |f| {
            crate::punch::keeper::probe_of(f).ok()
        });
        if n > 0 {
            log::info!(
                "kept flow [{}]:{} > [{}]:{} now punched with hop limit {max}",
                key.src,
                key.sport,
                key.dst,
                key.dport
            );
        }
    });

    let shared = Arc::new(Shared {
        policy: cfg.policy.clone(),
        sender,
        watch,
        waits: Mutex::default(),
        made: Mutex::default(),
        ledger: Mutex::new(ledger::Ledger::default()),
        closer: closer::Closer::start(Arc::clone(&dog)).context("starting the closer thread")?,
        dog,
        log: loglimit::RefusalLog::default(),
        exits: exits::Exits::start(keeper.clone()).context("starting the exit watch")?,
        keeper,
        learner,
        started: Instant::now(),
        requests: Default::default(),
        punches: Default::default(),
    });
    let holds_closer = Arc::clone(&shared);
    crate::punch::client::close_holds_with(Box::new(move |held| holds_closer.closer.close(held)));
    let p = &cfg.policy;
    log::info!(
        "daemon listening on {} as {name} (uid {uid}), hop limits {}-{}, {} requests/s and {} open per uid, {} ms to send a request; keeping holes for conntrack timeouts udp {} s, route memory {}",
        listening.how,
        p.min_hop,
        p.max_hop,
        p.rate,
        p.per_uid,
        p.deadline.as_millis(),
        cfg.keep.udp.as_secs_f64(),
        cfg.routes.display()
    );
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listening.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polling two valid descriptors.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for callers");
        }
        if fds[1].revents != 0 {
            log::info!("daemon stopping on a signal");
            break;
        }
        loop {
            match listening.listener.accept() {
                Ok((conn, _)) => admit(&shared, conn),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning on the backlog,
                    // and say so at most once a second.
                    if last_accept_warning
                        .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1))
                    {
                        log::warn!("accepting a connection: {e} (backing off)");
                        last_accept_warning = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
    drop(listening.listener);
    if let Some(j) = listening.janitor {
        j.finish();
    }
    Ok(())
}

/// Makes the route memory's directory (mode 755) and gives it to the daemon's user, who writes
/// the state file there after start-up (by rename: the file itself may be another's).
fn state_dir(file: &std::path::Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let Some(dir) = file.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("making the route memory's directory {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to uid {uid}", dir.display()))?;
    // A lock file left by an older version or by root's `hops` becomes the daemon's, mode 600
    // (through the descriptor, never a link): nobody else may hold it.
    use std::os::unix::fs::OpenOptionsExt;
    let lock = file.with_extension("lock");
    if let Ok(f) = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&lock)
        && f.metadata().is_ok_and(|m| m.is_file())
    {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
            .with_context(|| format!("giving {} to uid {uid}", lock.display()))?;
    }
    Ok(())
}

/// SO_PASSRIGHTS (asm-generic/socket.h, Linux 6.16): whether SCM_RIGHTS may be sent to a socket.
const SO_PASSRIGHTS: libc::c_int = 83;

fn pass_rights(sock: std::os::fd::BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    crate::net::sockfacts::setsockopt_int(
        sock,
        libc::SOL_SOCKET,
        SO_PASSRIGHTS,
        libc::c_int::from(on),
    )
}

/// How long a status document may take to reach its caller, in all.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// Sends `bytes` on `conn` without ever blocking past `limit` from now; how many were sent.
fn send_within(conn: &UnixStream, bytes: &[u8], limit: Duration) -> usize {
    let until = Instant::now() + limit;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        // SAFETY: a non-blocking send of `rest` on a valid descriptor.
        let n = unsafe {
            libc::send(
                conn.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n > 0 {
            at += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        let left = until.saturating_duration_since(Instant::now());
        let wait = n < 0
            && matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            );
        if !wait
            || left.is_zero()
            || crate::net::poll_one(conn.as_fd(), libc::POLLOUT, Some(left)).unwrap_or(0) == 0
        {
            break;
        }
    }
    at
}

/// Writes one line without blocking (a caller that does not read loses its answer, nothing more).
fn say(conn: &UnixStream, line: &str) {
    // SAFETY: a non-blocking send of `line` on a valid descriptor.
    unsafe {
        libc::send(
            conn.as_raw_fd(),
            line.as_ptr().cast(),
            line.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Admits or refuses a new connection without reading from it. An admitted caller is let send
/// descriptors, told `ready`, and served on its own thread; a refused one gets its answer and its
/// connection goes to the closer.
fn admit(shared: &Arc<Shared>, conn: UnixStream) {
    let cred = match fdpass::peer_cred(conn.as_fd()) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("a caller without credentials ({e}) was dropped");
            shared.closer.close(Box::new(conn));
            return;
        }
    };
    let mut gids = fdpass::peer_groups(conn.as_raw_fd()).unwrap_or_default();
    gids.push(cred.gid);
    let admitted = shared
        .policy
        .admits(cred.uid, &gids)
        .ok_or(Refusal::Policy { uid: cred.uid })
        .and_then(|accounts| {
            shared
                .ledger()
                .open(&accounts, shared.policy.limits(), Instant::now())
                .map(|()| accounts)
        });
    let accounts = match admitted {
        Ok(a) => a,
        Err(r) => {
            answer(shared, &cred, &conn, &Err(r), false);
            shared.closer.close(Box::new(conn));
            return;
        }
    };
    let slot = Slot {
        shared: Arc::clone(shared),
        accounts,
    };
    let accepted = Instant::now();
    // The connection belongs to the caller's thread alone: only that thread lets it send
    // descriptors and closes it, so whatever it sent is never closed anywhere else. A thread that
    // cannot start drops the connection before any descriptor could be sent on it.
    let spawned = std::thread::Builder::new()
        .name(format!("caller-{}", cred.pid))
        .spawn(move || {
            if let Err(e) = pass_rights(conn.as_fd(), true)
                && e.raw_os_error() != Some(libc::ENOPROTOOPT)
            {
                log::warn!(
                    "pid {}: letting it send its socket: {}",
                    cred.pid,
                    crate::with_causes(&e)
                );
            }
            say(&conn, proto::READY);
            let (fds, result) = handle(&slot.shared, &conn, &cred, &slot.accounts, accepted);
            let shared = Arc::clone(&slot.shared);
            // What the caller sent (and sockets made for it) is closed on this thread, while the
            // caller's slot is held and the watchdog looks on: a close that blocks costs this
            // caller its own room and nobody else anything.
            let close = |what: Box<dyn Send>| {
                let _guard = shared.dog.guard();
                drop(what);
            };
            match result {
                // What the caller sent is closed, and its room given back, before it is answered:
                // a program that asks again as soon as it has its answer (keeping a thousand
                // flows) finds its room free.
                Err(r) => {
                    close(Box::new(fds));
                    drop(slot);
                    answer(&shared, &cred, &conn, &Err(r), false);
                }
                Ok(Decision::Sent(what)) => {
                    close(Box::new(fds));
                    drop(slot);
                    answer(&shared, &cred, &conn, &Ok(what), false);
                }
                Ok(Decision::Status(doc)) => {
                    // On this caller's own thread, within one deadline for the whole document:
                    // a caller that reads slowly or not at all stalls nobody else, and not for
                    // long.
                    let whole = [Reply::Status.line().into_bytes(), doc.into_bytes()].concat();
                    let sent = send_within(&conn, &whole, STATUS_DEADLINE);
                    log::debug!(
                        "pid {} uid {}: status, {sent} of {} bytes",
                        cred.pid,
                        cred.uid,
                        whole.len()
                    );
                }
                Ok(Decision::Wait(what, rv, wslot, peer, kept)) => {
                    answer(&shared, &cred, &conn, &Ok(what), true);
                    close(Box::new(fds));
                    // The wait holds a waiting place of its own, not one of the open requests.
                    drop(slot);
                    let got = match kept {
                        None => rv.complete(Some(conn.as_fd())),
                        Some((local, cookie)) => {
                            let repunch = shared.keeper.lock().timeouts().tcp / 2;
                            keep_listener(*rv, &conn, local, peer, cookie, repunch)
                        }
                    };
                    deliver(&shared, &cred, &conn, got, peer);
                    drop(wslot);
                }
                Ok(Decision::Replace(what, sock, hold, wslot)) => {
                    hand_over(&cred, &conn, &what, &sock);
                    close(Box::new((sock, fds)));
                    // Descriptors the caller queued after its request (before passing was
                    // turned off) are read and closed here, on the caller's own thread, not
                    // when the hold ends and its connection is closed on the shared closer.
                    drain(&conn, &close);
                    // The caller's connection is the hold's release: the library closes it when
                    // the program connects the socket (or exits), which ends the hold at once.
                    if let Err(e) = hold.keep(Some(OwnedFd::from(conn)), wslot) {
                        log::warn!(
                            "pid {}: holding the port: {}",
                            cred.pid,
                            crate::with_causes(&e)
                        );
                    }
                    return;
                }
            }
            close(Box::new(conn));
        });
    if let Err(e) = spawned {
        log::warn!("could not start a thread for pid {}: {e}", cred.pid);
    }
}

/// Reads whatever is queued on a caller's connection (its read side is shut: nothing more comes)
/// and passes the descriptors that came with it to `close`.
fn drain(conn: &UnixStream, close: &dyn Fn(Box<dyn Send>)) {
    let mut buf = [0u8; 512];
    while let Ok(got) = fdpass::recv_with_fds(conn.as_raw_fd(), &mut buf) {
        let done = got.len == 0 && got.fds.is_empty();
        close(Box::new(got.fds));
        if done {
            break;
        }
    }
}

/// Answers a client socket's punch: `sock` with the new socket attached, and logs.
fn hand_over(cred: &fdpass::PeerCred, conn: &UnixStream, what: &str, sock: &socket2::Socket) {
    let line = Reply::Sock(what.to_string()).line();
    match fdpass::send_with_fds(conn.as_raw_fd(), line.as_bytes(), &[sock.as_raw_fd()]) {
        Ok(_) => log::info!(
            "pid {} uid {} gid {}: punched {what}",
            cred.pid,
            cred.uid,
            cred.gid
        ),
        Err(e) => log::info!(
            "pid {} uid {}: punched {what}, but could not pass the socket: {e}",
            cred.pid,
            cred.uid
        ),
    }
}

/// Answers without blocking, and logs.
fn answer(
    shared: &Shared,
    cred: &fdpass::PeerCred,
    conn: &UnixStream,
    result: &Result<String, Refusal>,
    waiting: bool,
) {
    let reply = match result {
        Ok(what) if waiting => Reply::Wait(what.clone()),
        Ok(what) => Reply::Ok(what.clone()),
        Err(r) => Reply::Err {
            errno: r.errno(),
            reason: crate::with_causes(&r),
        },
    };
    say(conn, &reply.line());
    match result {
        // A let-go flow's line says so itself; everything else answered `ok` was punched.
        Ok(what) if what.starts_with("let go") => {
            log::info!("pid {} uid {} gid {}: {what}", cred.pid, cred.uid, cred.gid)
        }
        Ok(what) => log::info!(
            "pid {} uid {} gid {}: punched {what}",
            cred.pid,
            cred.uid,
            cred.gid
        ),
        Err(Refusal::CallerGone) => log::info!(
            "pid {} uid {}: hung up without a request, or before the probe was sent",
            cred.pid,
            cred.uid
        ),
        Err(r) => shared.log.refused(cred, r),
    }
}

/// Reads one request within the deadline and decides it; returns the descriptors received (for
/// the closer) and what was sent or why not.
fn handle(
    shared: &Arc<Shared>,
    conn: &UnixStream,
    cred: &fdpass::PeerCred,
    accounts: &[ledger::Account],
    accepted: Instant,
) -> (Vec<OwnedFd>, Result<Decision, Refusal>) {
    let policy = &shared.policy;
    let left = policy.deadline.saturating_sub(accepted.elapsed());
    let ready = crate::net::poll_one(conn.as_fd(), libc::POLLIN, Some(left)).unwrap_or(0);
    if ready == 0 {
        return (
            Vec::new(),
            Err(Refusal::Late(policy.deadline.as_millis() as u64)),
        );
    }
    let _ = conn.set_nonblocking(true);
    let mut buf = [0u8; 64];
    let received = {
        let _guard = shared.dog.guard();
        fdpass::recv_with_fds(conn.as_raw_fd(), &mut buf)
    };
    // One request per connection: no more descriptors, no more bytes (what may have come after
    // the request is closed with the connection, on this thread).
    let _ = pass_rights(conn.as_fd(), false);
    let _ = conn.shutdown(std::net::Shutdown::Read);
    let got = match received {
        Ok(g) => g,
        Err(e) => {
            // A caller that reset the connection went away; any other read error is reported.
            let r = match e.kind() {
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    Refusal::CallerGone
                }
                kind => Refusal::Unreadable(kind),
            };
            return (Vec::new(), Err(r));
        }
    };
    let fds = got.fds;
    if got.len == 0 && fds.is_empty() {
        return (fds, Err(Refusal::CallerGone));
    }
    // A read that fills the buffer was cut by it: the request is longer than what was read.
    let parsed = match got.len {
        n if n == buf.len() => Err(super::proto::ProtoError::TooLong(n)),
        n => Request::parse(&buf[..n]),
    };
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return (fds, Err(Refusal::Malformed(e))),
    };
    shared
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // A status request carries no socket; every other request exactly one.
    let want = usize::from(req.op != Op::Status);
    if fds.len() != want || got.fds_truncated {
        let n = fds.len();
        return (fds, Err(Refusal::Descriptors(n)));
    }
    if req.op == Op::Status {
        return (fds, Ok(Decision::Status(status(shared, cred.uid))));
    }
    let result = decide(shared, conn, cred, accounts, &req, &fds[0]);
    (fds, result)
}

fn decide(
    shared: &Arc<Shared>,
    conn: &UnixStream,
    cred: &fdpass::PeerCred,
    accounts: &[ledger::Account],
    req: &Request,
    fd: &OwnedFd,
) -> Result<Decision, Refusal> {
    let policy = &shared.policy;
    // The cheap check first: the kernel's socket list is asked only for a request in range.
    if req.hop_limit != HOP_AUTO && req.op != Op::Unkeep {
        hop_in_range(req.hop_limit, policy.min_hop, policy.max_hop)?;
    }
    let info = held_flow_made(fd.as_fd(), req.peer, cred.uid, &|c| shared.made_for(c))?;
    // A caller that has hung up is not punched for: nobody would use the hole. (Our own read
    // side is shut after the request, so only POLLHUP, both directions gone, says the caller
    // closed.)
    if crate::net::hung_up(conn.as_fd()) {
        return Err(Refusal::CallerGone);
    }
    if req.op == Op::Unkeep {
        return unkeep(shared, fd, cred, &info);
    }
    let hop = hop_for(shared, &info, req.hop_limit)?;
    let auto = req.hop_limit == HOP_AUTO;
    let role = tcp_role(&info);
    // A kept TCP listener is the server punch with its rendezvous kept; every other kept flow
    // is the keeper's (UDP; the rest is refused there).
    let kept_listener = req.op == Op::Keep && info.kind == Proto::Tcp && role == TcpRole::Server;
    if req.op == Op::Keep && !kept_listener {
        return keep_flow(shared, conn, fd, cred, accounts, &info, hop, auto);
    }
    let punch = |e: crate::net::NetError| Refusal::Punch {
        errno: e.errno(),
        detail: crate::with_causes(&e),
    };
    let server = |e: ServerError| Refusal::Punch {
        errno: e.errno(),
        detail: crate::with_causes(&e),
    };
    let what = |verb: &str| format!("{verb} {} hop limit {}", flow_line(&info), hop.0);
    match role {
        TcpRole::Client => {
            // The caller's own socket is never put in repair mode: the caller shares it, and
            // the kernel's repair-only options check nothing but the mode. The daemon makes the
            // socket anew (bound in repair mode beside the caller's, the probe's ISN set, repair
            // mode left) and hands it over for the caller to put in place of its own.
            let wslot = shared.wait_slot(accounts, Waiting::Hold)?;
            let isn = crate::net::tcp::isn_for(info.local, info.peer);
            let (fresh, hold) = privilege::with_effective(privilege::NET_ADMIN, || {
                let fresh = crate::net::tcp::isn_socket(info.local, isn)?;
                // The socket is the daemon's user's: locked to the peer, so that the caller
                // cannot connect it anywhere else under that user's name.
                crate::net::tcp::lock_to_peer(&fresh, info.peer)?;
                let watched = fresh
                    .try_clone()
                    .map_err(|e| crate::net::NetError::io("watching the socket", info.local, e))?;
                Ok((fresh, Hold::begin(info.local, watched.into())?))
            })
            .map_err(punch)?;
            for c in [cookie_of(fresh.as_fd()).ok(), hold.cookie()]
                .into_iter()
                .flatten()
            {
                shared.remember_made(c, cred.uid, accounts);
            }
            recheck(shared, fd, req, cred, &info)?;
            // A client's punch teaches the route memory nothing: the socket handed over connects
            // with the probe's very sequence number, so a peer's reset to that connect() could
            // not be told from one to the punch.
            let repr = crate::punch::tcp_probe(isn, &info, hop);
            shared.sent(&repr, false);
            let repr = send_probe(repr, &info, &shared.sender).map_err(punch)?;
            Ok(Decision::Replace(
                what(&format!(
                    "{} (client: a socket with its ISN)",
                    repr.transport.name()
                )),
                fresh,
                hold,
                wslot,
            ))
        }
        TcpRole::Connected => {
            let repr = crate::punch::plain_probe(&info, hop);
            shared.sent(&repr, auto);
            let repr = send_probe(repr, &info, &shared.sender).map_err(punch)?;
            Ok(Decision::Sent(what(repr.transport.name())))
        }
        TcpRole::Server => {
            let wslot = shared.wait_slot(accounts, Waiting::Listener)?;
            let sender = shared.sender.try_clone().map_err(punch)?;
            let rv = privilege::with_effective(privilege::NET_ADMIN, || {
                Rendezvous::begin(
                    fd.as_fd(),
                    info.local,
                    info.peer,
                    hop,
                    sender,
                    &shared.watch,
                    |cookie| {
                        shared.remember_made(cookie, cred.uid, accounts);
                        recheck(shared, fd, req, cred, &info).map_err(ServerError::Changed)
                    },
                    // Remembered before it goes out: its answer may come before send() returns.
                    |repr| shared.sent(repr, auto),
                )
                .and_then(|rv| rv.lock_to_peer().map(|()| rv))
            })
            .map_err(server)?;
            let kept = if kept_listener {
                Some((info.local, cookie_of(fd.as_fd()).map_err(punch)?))
            } else {
                None
            };
            Ok(Decision::Wait(
                what(if kept.is_some() {
                    "tcp (listener, kept: the connection follows)"
                } else {
                    "tcp (listener: the connection follows)"
                }),
                Box::new(rv),
                wslot,
                info.peer,
                kept,
            ))
        }
    }
}

/// A checked flow as the daemon's answers and log lines write it: `[LOCAL]:PORT > [PEER]:PORT`.
fn flow_line(info: &SocketInfo) -> String {
    format!(
        "[{}]:{} > [{}]:{}",
        info.local.ip(),
        info.local.port(),
        info.peer.ip(),
        info.peer.port()
    )
}

/// Waits for a kept listener's peer: the rendezvous without a time limit, punching again every
/// `repunch` while the caller is connected and the kernel still finds the listener (by its
/// cookie: once the connection is made, or the listener closed, it does not).
fn keep_listener(
    rv: Rendezvous,
    conn: &UnixStream,
    local: std::net::SocketAddrV6,
    peer: std::net::SocketAddrV6,
    cookie: u64,
    repunch: Duration,
) -> Result<socket2::Socket, ServerError> {
    let link = crate::net::sockdiag::Link::open()
        .map_err(|e| crate::net::NetError::io("opening sock_diag for a kept listener", local, e))?;
    let listening =
        || matches!(link.tcp_socket(local, peer, cookie), Ok(Some(s)) if s == TCP_LISTEN);
    rv.complete_kept(Some(conn.as_fd()), repunch, &listening)
}

/// A listening TCP socket's state in sock_diag's answers (the kernel's TCP_LISTEN).
const TCP_LISTEN: u8 = 10;

/// The hop limit to send with: the one asked for, or for auto the route memory's for the
/// peer's route; within the policy's range either way.
fn hop_for(shared: &Shared, info: &SocketInfo, asked: u8) -> Result<HopLimit, Refusal> {
    let hop = if asked == HOP_AUTO {
        let auto = |e: crate::routes::store::AutoFailure| Refusal::Auto {
            errno: e.errno(),
            why: crate::with_causes(&e),
        };
        let key = crate::net::route::route_key(*info.peer.ip(), info.peer.scope_id())
            .map_err(|e| auto(crate::routes::store::AutoFailure::Route(e)))?;
        let mut memory = shared.learner.memory();
        let table = memory
            .table()
            .map_err(|e| auto(crate::routes::store::AutoFailure::Store(e)))?;
        crate::routes::store::auto_in(table, &key, *info.peer.ip())
            .map_err(auto)?
            .0
    } else {
        asked
    };
    hop_in_range(hop, shared.policy.min_hop, shared.policy.max_hop)?;
    Ok(HopLimit(hop))
}

/// Punches for a caller's UDP flow and keeps it (`synergy_keep`): the keeper holds the socket's
/// cookie, never the socket.
#[allow(clippy::too_many_arguments)]
fn keep_flow(
    shared: &Arc<Shared>,
    conn: &UnixStream,
    fd: &OwnedFd,
    cred: &fdpass::PeerCred,
    accounts: &[ledger::Account],
    info: &SocketInfo,
    hop: HopLimit,
    auto: bool,
) -> Result<Decision, Refusal> {
    if info.kind != Proto::Udp {
        return Err(Refusal::KeepProto(info.kind));
    }
    let failed = |e: crate::net::NetError| Refusal::Punch {
        errno: e.errno(),
        detail: crate::with_causes(&e),
    };
    let cookie = cookie_of(fd.as_fd()).map_err(failed)?;
    let group = accounts.iter().find_map(|a| match a {
        ledger::Account::Group(g) => Some(*g),
        ledger::Account::Uid(_) => None,
    });
    {
        // Room: the uid's, the admitting group's (GROUP_FACTOR times), the daemon's.
        let k = shared.keeper.lock();
        if !k.is_kept((cookie, info.peer)) {
            let rooms = [
                Some((
                    keep::Charge::Uid(cred.uid),
                    KEEPS_PER_UID,
                    format!("uid {}", cred.uid),
                )),
                group.map(|g| {
                    (
                        keep::Charge::Group(g),
                        KEEPS_PER_GROUP,
                        format!("group {g}"),
                    )
                }),
            ];
            for (charge, cap, who) in rooms.into_iter().flatten() {
                let n = k.count_of(charge);
                if n >= cap {
                    return Err(Refusal::Busy {
                        who,
                        what: "kept flows",
                        open: n,
                        cap,
                    });
                }
            }
            if k.len() >= KEEPS_TOTAL {
                return Err(Refusal::Busy {
                    who: "the daemon".into(),
                    what: "kept flows",
                    open: k.len(),
                    cap: KEEPS_TOTAL,
                });
            }
        }
    }
    // The flow is kept while the process that asked lives (and its socket is open): without a
    // way to see it exit (a pid the daemon's namespace cannot see is 0), nothing is kept.
    let pidfd = fdpass::peer_pidfd(conn.as_fd())
        .ok()
        .filter(|_| cred.pid > 0)
        .ok_or_else(|| Refusal::Kernel {
            what: "for the calling process (SO_PEERPIDFD)",
            detail: format!("pid {} cannot be watched", cred.pid),
        })?;
    let flow = Kept {
        cookie,
        uid: cred.uid,
        group,
        pid: cred.pid,
        proto: info.kind,
        local: info.local,
        peer: info.peer,
        hop_limit: hop.0,
        auto,
    };
    let probe = crate::punch::keeper::probe_of(&flow).map_err(failed)?;
    if auto {
        shared.learner.sent_key(probe.key, hop.0);
    }
    crate::punch::keeper::punch(&shared.sender, &flow, &probe).map_err(failed)?;
    shared
        .punches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.keeper.add(flow, probe, Instant::now());
    // Watched only now that the flow is kept: a process that has exited already (its connection
    // passed on) has its flows ended here, not before they were added.
    if let Err(e) = shared.exits.watch(cred.pid, cred.uid, pidfd) {
        shared.keeper.lock().remove_process(cred.pid);
        return Err(match e {
            exits::WatchError::Busy(cap) => Refusal::Busy {
                who: format!("uid {}", cred.uid),
                what: "processes keeping flows",
                open: cap,
                cap,
            },
            exits::WatchError::Io(e) => Refusal::Kernel {
                what: "to watch the calling process (epoll)",
                detail: e.to_string(),
            },
        });
    }
    Ok(Decision::Sent(format!(
        "udp {} hop limit {}, kept",
        flow_line(info),
        hop.0
    )))
}

/// Stops keeping a caller's flow (`synergy_unkeep`): only the caller's own.
fn unkeep(
    shared: &Shared,
    fd: &OwnedFd,
    cred: &fdpass::PeerCred,
    info: &SocketInfo,
) -> Result<Decision, Refusal> {
    let cookie = cookie_of(fd.as_fd()).map_err(|e| Refusal::Punch {
        errno: e.errno(),
        detail: crate::with_causes(&e),
    })?;
    if !shared.keeper.lock().remove((cookie, info.peer), cred.uid) {
        return Err(crate::api::not_kept(info));
    }
    Ok(Decision::Sent(format!("let go of {}", flow_line(info))))
}

/// The status document (docs/JSON.md, `status`): the daemon's counters, the keeper's timeouts,
/// the kept flows (root sees every caller's, others their own) and the route memory.
fn status(shared: &Shared, uid: u32) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let now = Instant::now();
    let (flows, counters, timeouts, kept) = {
        let k = shared.keeper.lock();
        let flows = k.flows((uid != 0).then_some(uid));
        (flows, k.counters, k.timeouts(), k.len())
    };
    let endpoint = |a: std::net::SocketAddrV6| format!("[{}]:{}", a.ip(), a.port());
    let flows: Vec<serde_json::Value> = flows
        .iter()
        .map(|f| {
            serde_json::json!({
                "proto": f.flow.proto,
                "local": endpoint(f.flow.local),
                "peer": endpoint(f.flow.peer),
                "hop_limit": f.flow.hop_limit,
                "uid": f.flow.uid,
                "punches": f.punches,
                "last_punch_ago_ms": now.saturating_duration_since(f.last).as_secs_f64() * 1e3,
                "next_punch_in_ms": f.next.saturating_duration_since(now).as_secs_f64() * 1e3,
            })
        })
        .collect();
    let routes = match shared.learner.memory().table() {
        Ok(t) => serde_json::to_value(t.views()).unwrap_or_default(),
        Err(e) => {
            log::warn!("status: {}", crate::with_causes(&e));
            serde_json::Value::Null
        }
    };
    let mut doc = crate::output::json_event(
        "status",
        serde_json::json!({
            "pid": std::process::id(),
            "uptime_ms": shared.started.elapsed().as_secs_f64() * 1e3,
            "conntrack_timeouts_ms": {
                "udp": timeouts.udp.as_secs_f64() * 1e3,
                "tcp": timeouts.tcp.as_secs_f64() * 1e3,
                "sctp": timeouts.sctp.as_secs_f64() * 1e3,
            },
            "counters": {
                "requests": shared.requests.load(Relaxed),
                "punches": shared.punches.load(Relaxed),
                "kept_now": kept,
                "kept": counters.kept,
                "repunches": counters.repunches,
                "repunch_failures": counters.failed,
                "ended_closed": counters.ended_gone,
                "ended_unkept": counters.ended_asked,
                "ended_exited": counters.ended_exited,
                "routes_learnt": shared.learner.learnt.load(Relaxed),
            },
            "flows": flows,
            "routes": routes,
        }),
    )
    .to_string();
    doc.push('\n');
    doc
}

fn cookie_of(fd: std::os::fd::BorrowedFd<'_>) -> Result<u64, crate::net::NetError> {
    crate::net::sockfacts::cookie(fd)
        .map_err(|e| crate::net::NetError::io("reading a socket's cookie", "SO_COOKIE", e))
}

/// After a socket of the daemon's was bound in repair mode beside the caller's (which the kernel
/// allows whatever else is on the port), asks the kernel again: the caller's socket must still
/// hold the same address and port in the same role, and no other user's socket may have come
/// onto the port meanwhile (the daemon's own sockets for this caller count as the caller's).
fn recheck(
    shared: &Arc<Shared>,
    fd: &OwnedFd,
    req: &Request,
    cred: &fdpass::PeerCred,
    info: &crate::punch::check::SocketInfo,
) -> Result<(), Refusal> {
    let again = held_flow_made(fd.as_fd(), req.peer, cred.uid, &|c| shared.made_for(c))?;
    if again.local != info.local || again.role != info.role {
        return Err(Refusal::Punch {
            errno: libc::EINVAL,
            detail: "its local address or role is no longer the one checked".into(),
        });
    }
    Ok(())
}

/// Passes a punched listener's connection to its caller (`conn` with the socket), or says why
/// there is none.
fn deliver(
    shared: &Shared,
    cred: &fdpass::PeerCred,
    conn: &UnixStream,
    got: Result<socket2::Socket, ServerError>,
    peer: std::net::SocketAddrV6,
) {
    match got {
        Ok(sock) => {
            let line = Reply::Conn(peer).line();
            match fdpass::send_with_fds(conn.as_raw_fd(), line.as_bytes(), &[sock.as_raw_fd()]) {
                Ok(_) => log::info!(
                    "pid {} uid {}: passed the connection from [{}]:{}",
                    cred.pid,
                    cred.uid,
                    peer.ip(),
                    peer.port()
                ),
                Err(e) => log::info!(
                    "pid {} uid {}: could not pass the connection from {peer}: {e}",
                    cred.pid,
                    cred.uid
                ),
            }
            let _guard = shared.dog.guard();
            drop(sock);
        }
        Err(ServerError::Cancelled) => log::info!(
            "pid {} uid {}: hung up while its listener waited for {peer}",
            cred.pid,
            cred.uid
        ),
        Err(e) => {
            log::info!(
                "pid {} uid {}: no connection from {peer}: {}",
                cred.pid,
                cred.uid,
                crate::with_causes(&e)
            );
            say(
                conn,
                &Reply::Err {
                    errno: e.errno(),
                    reason: crate::with_causes(&e),
                }
                .line(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_say_every_cause() {
        let e = crate::net::NetError::io(
            "sending a probe",
            "2001:db8::1",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        let r = ServerError::Net(e);
        assert_eq!(
            crate::with_causes(&r),
            "sending a probe for 2001:db8::1: Operation not permitted (os error 1)"
        );
    }

    /// Every error that carries an OS error says it once in the whole line (a message that
    /// also shows its source would say it twice).
    #[test]
    fn each_cause_is_said_once() {
        let os = || std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let peer: std::net::SocketAddrV6 = "[2001:db8::2]:5".parse().unwrap();
        let lines = [
            crate::with_causes(&ServerError::Filter(os())),
            crate::with_causes(&ServerError::Open { peer, source: os() }),
            crate::with_causes(&crate::api::SynergyError::Io {
                op: "connecting to the peer",
                source: os(),
            }),
            crate::with_causes(&crate::net::synwatch::WatchError::Event(os())),
            crate::with_causes(&super::sockfile::SocketFileError::Io {
                op: "binding",
                path: "/run/x.sock".into(),
                source: os(),
            }),
            crate::with_causes(&crate::daemon::client::DaemonError::NotPermitted {
                path: "/run/x.sock".into(),
                source: os(),
            }),
        ];
        for l in lines {
            assert_eq!(l.matches("(os error 111)").count(), 1, "{l}");
        }
    }
}
