//! `synergy_keep()` and `synergy_unkeep()`: keeping a UDP flow's hole open until its socket is
//! closed or the program lets go, by the daemon's keeper or, in a privileged program, by a keeper
//! thread of the library's own (started on first use). Does I/O.

use std::net::SocketAddrV6;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::OnceLock;
use std::time::Instant;

use super::{SynergyError, can_punch_itself, resolve_hop};
use crate::daemon::proto::Op;
use crate::keep::{self, Kept, Timeouts};
use crate::net::raw::RawSender;
use crate::net::sockfacts;
use crate::param::{HopChoice, HopLimit};
use crate::punch::check::{Proto, Refusal, SocketInfo};
use crate::punch::{TcpRole, held_flow, tcp_role};

/// The library's own keeper (privileged programs), with its raw socket.
fn own_keeper() -> Result<&'static (keep::Shared, RawSender), SynergyError> {
    static KEEPER: OnceLock<(keep::Shared, RawSender)> = OnceLock::new();
    if let Some(k) = KEEPER.get() {
        return Ok(k);
    }
    let sender = RawSender::open(None)?;
    let first = sender.try_clone()?;
    let shared = crate::punch::keeper::start(sender, Timeouts::from_env(), |_, _| {})?;
    // Two threads starting at once: the loser's keeper thread sleeps for ever with nothing kept.
    Ok(KEEPER.get_or_init(|| (shared, first)))
}

fn kept(
    fd: BorrowedFd<'_>,
    info: &SocketInfo,
    hop: HopLimit,
    uid: u32,
    auto: bool,
) -> Result<Kept, SynergyError> {
    let cookie = sockfacts::cookie(fd).map_err(|source| SynergyError::Io {
        op: "reading the socket's cookie",
        source,
    })?;
    Ok(Kept {
        cookie,
        uid,
        group: None,
        // The keeper is this process's thread: it ends with the process.
        pid: std::process::id() as i32,
        proto: info.kind,
        local: info.local,
        peer: info.peer,
        hop_limit: hop.0,
        auto,
    })
}

/// Punches for `sock`'s UDP flow toward `peer` (None: its connected peer) like [`super::synergy`]
/// and keeps the hole open: the flow is punched again within 1/2 to 3/4 of the firewalls' UDP
/// timeout (Linux's 30 s; the daemon's `--conntrack-timeout`), at a random point so that many
/// kept flows spread out, until the socket is closed (asked of the kernel by its cookie before
/// each punch; the socket is never held open), no longer takes `peer`'s datagrams (connected
/// elsewhere), or [`synergy_unkeep`] lets go. Nothing outlives the program: its sockets close
/// when it exits. A socket may keep many peers. Through the daemon when this process lacks
/// CAP_NET_RAW. A TCP listener's hole toward `peer` is kept by its rendezvous (the server
/// sequence of [`super::synergy`] without its 120-s limit: punched again every half of the
/// firewalls' SYN_SENT timeout until the peer's connection is made, the listener is closed, or
/// the program exits). Other TCP sockets and SCTP are refused (EOPNOTSUPP).
///
/// ```no_run
/// use synergy_craft::api::synergy_keep;
/// use synergy_craft::param::{HopChoice, HopLimit};
///
/// let sock = std::net::UdpSocket::bind("[2001:db8:1::11]:4000")?;
/// synergy_keep(&sock, HopLimit(2), Some("[2001:db8:2::5]:5000".parse()?))?;
/// // or, with the hop limit from the route memory:
/// synergy_keep(&sock, HopChoice::Auto, Some("[2001:db8:2::6]:5000".parse()?))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn synergy_keep(
    sock: &impl AsFd,
    hop_limit: impl Into<HopChoice>,
    peer: Option<SocketAddrV6>,
) -> Result<(), SynergyError> {
    let fd = sock.as_fd();
    let hop_limit = hop_limit.into();
    if !can_punch_itself(fd) {
        return super::through_daemon(fd, hop_limit, peer, Op::Keep);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let info = held_flow(fd, peer, uid)?;
    let hop = resolve_hop(hop_limit, &info)?;
    if info.kind == Proto::Tcp && tcp_role(&info) == TcpRole::Server {
        let sender = RawSender::open(Some((*info.local.ip(), info.local.scope_id())))?;
        return super::listener_itself(fd, &info, hop, sender, true);
    }
    if info.kind != Proto::Udp {
        return Err(Refusal::KeepProto(info.kind).into());
    }
    let (keeper, sender) = own_keeper()?;
    let flow = kept(fd, &info, hop, uid, hop_limit == HopChoice::Auto)?;
    let probe = crate::punch::keeper::probe_of(&flow)?;
    crate::punch::keeper::punch(sender, &flow, &probe)?;
    keeper.add(flow, probe, Instant::now());
    Ok(())
}

/// Stops keeping `sock`'s flow toward `peer` (None: its connected peer). Fails with ENOENT
/// (`Refusal::NotKept`) when it is not kept (for this caller).
///
/// ```
/// // A socket that keeps nothing has nothing to let go (or no daemon to ask).
/// let sock = std::net::UdpSocket::bind("[::1]:0")?;
/// assert!(synergy_craft::api::synergy_unkeep(&sock, Some("[::1]:9".parse().unwrap())).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn synergy_unkeep(sock: &impl AsFd, peer: Option<SocketAddrV6>) -> Result<(), SynergyError> {
    let fd = sock.as_fd();
    if !can_punch_itself(fd) {
        crate::daemon::client::unkeep(fd.as_raw_fd(), peer)?;
        return Ok(());
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let info = held_flow(fd, peer, uid)?;
    let cookie = sockfacts::cookie(fd).map_err(|source| SynergyError::Io {
        op: "reading the socket's cookie",
        source,
    })?;
    let gone = own_keeper()?.0.lock().remove((cookie, info.peer), uid);
    if !gone {
        return Err(not_kept(&info).into());
    }
    Ok(())
}

pub(crate) fn not_kept(info: &SocketInfo) -> Refusal {
    Refusal::NotKept {
        local: *info.local.ip(),
        lport: info.local.port(),
        peer: *info.peer.ip(),
        pport: info.peer.port(),
    }
}
