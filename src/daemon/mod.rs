//! `synergy-craft daemon`: punches for callers without CAP_NET_RAW. A caller passes its socket by
//! SCM_RIGHTS with a hop limit and optional peer (see `proto`); the daemon checks the caller
//! (SO_PEERCRED against the allowed uids and groups), that the descriptor is a socket bound to a
//! local address and port (so nobody can punch for an address or port they do not hold), that the
//! hop limit is within range, and a per-uid rate limit; it then sends the probe and answers every
//! request with success or a reason, and logs it. Does I/O.

pub mod client;
pub mod proto;

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::{SynergyError, flow_for, socket_info};
use crate::net::raw::RawSender;
use crate::net::{fdpass, privilege};
use crate::param::HopLimit;
use crate::punch::plan::probe_for;
use proto::{Reply, Request};

/// Where the daemon listens unless told otherwise, and where clients look.
pub const DEFAULT_SOCKET: &str = "/run/synergy-craft/synergy.sock";

/// Who may ask for what.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Allowed caller uids; with `allow_gids` both empty, every caller is allowed.
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub min_hop: u8,
    pub max_hop: u8,
    /// Requests per second per uid (token bucket, bursts of the same size).
    pub rate: u32,
}

impl Policy {
    fn allows(&self, cred: &fdpass::PeerCred) -> bool {
        (self.allow_uids.is_empty() && self.allow_gids.is_empty())
            || self.allow_uids.contains(&cred.uid)
            || self.allow_gids.contains(&cred.gid)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Serves requests on `path` until killed.
pub fn serve(path: &str, policy: &Policy, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("listening on {path}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {path}"))?;
    // One unbound raw socket for every caller's source address; then no privilege is kept.
    let sender = RawSender::open(None)?;
    privilege::drop_all();
    log::warn!(
        "daemon listening on {path} (mode {mode:o}), hop limits {}-{}, {} requests/s per uid",
        policy.min_hop,
        policy.max_hop,
        policy.rate
    );
    let mut buckets: HashMap<u32, Bucket> = HashMap::new();
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                let reply = handle(&conn, policy, &sender, &mut buckets);
                let _ = (&conn).write_all(reply.line().as_bytes());
            }
            Err(e) => log::warn!("accepting a connection: {e}"),
        }
    }
    Ok(())
}

fn refuse(errno: i32, reason: impl Into<String>) -> Reply {
    Reply::Err {
        errno,
        reason: reason.into(),
    }
}

fn handle(
    conn: &UnixStream,
    policy: &Policy,
    sender: &RawSender,
    buckets: &mut HashMap<u32, Bucket>,
) -> Reply {
    let cred = match fdpass::peer_cred(conn.as_raw_fd()) {
        Ok(c) => c,
        Err(e) => return refuse(libc::EPERM, format!("no peer credentials: {e}")),
    };
    let reply = decide(conn, &cred, policy, sender, buckets);
    match &reply {
        Reply::Ok(what) => log::warn!(
            "pid {} uid {} gid {}: punched {what}",
            cred.pid,
            cred.uid,
            cred.gid
        ),
        Reply::Err { reason, .. } => log::warn!(
            "pid {} uid {} gid {}: refused: {reason}",
            cred.pid,
            cred.uid,
            cred.gid
        ),
    }
    reply
}

fn decide(
    conn: &UnixStream,
    cred: &fdpass::PeerCred,
    policy: &Policy,
    sender: &RawSender,
    buckets: &mut HashMap<u32, Bucket>,
) -> Reply {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 64];
    let got = match fdpass::recv_with_fds(conn.as_raw_fd(), &mut buf) {
        Ok(g) => g,
        Err(e) => return refuse(libc::EIO, format!("reading the request: {e}")),
    };
    // Every descriptor received is owned here and closed when `got` goes out of scope.
    if !policy.allows(cred) {
        return refuse(
            libc::EPERM,
            format!(
                "uid {} gid {} is not allowed by the daemon's policy",
                cred.uid, cred.gid
            ),
        );
    }
    let now = Instant::now();
    let rate = f64::from(policy.rate.max(1));
    let b = buckets.entry(cred.uid).or_insert(Bucket {
        tokens: rate,
        at: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
    b.at = now;
    if b.tokens < 1.0 {
        return refuse(
            libc::EAGAIN,
            format!(
                "rate limit: more than {} requests per second from uid {}",
                policy.rate, cred.uid
            ),
        );
    }
    b.tokens -= 1.0;
    let req = match Request::parse(&buf[..got.len]) {
        Ok(r) => r,
        Err(reason) => return refuse(libc::EINVAL, reason),
    };
    if got.fds.len() != 1 || got.fds_truncated {
        return refuse(
            libc::EINVAL,
            format!(
                "a request carries exactly one socket, this one {}",
                got.fds.len()
            ),
        );
    }
    let fd = got.fds[0].as_fd();
    // SAFETY: fstat on a descriptor we own, into a zeroed stat buffer.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return refuse(libc::ENOTSOCK, "the descriptor passed is not a socket");
    }
    if !(policy.min_hop..=policy.max_hop).contains(&req.hop_limit) {
        return refuse(
            libc::ERANGE,
            format!(
                "hop limit {} is outside {}-{}",
                req.hop_limit, policy.min_hop, policy.max_hop
            ),
        );
    }
    let info = match socket_info(fd, req.peer) {
        Ok(i) => i,
        Err(e) => return refuse(e.errno(), e.to_string()),
    };
    let repr = probe_for(
        flow_for(&info),
        info.local,
        info.peer,
        HopLimit(req.hop_limit),
    );
    let sent = repr
        .to_bytes()
        .map_err(|e| SynergyError::Net(crate::net::NetError::Build(e.to_string())))
        .and_then(|(bytes, _)| Ok(sender.send(&bytes, *info.peer.ip(), info.peer.scope_id())?));
    match sent {
        Ok(_) => Reply::Ok(format!(
            "{} [{}]:{} > [{}]:{} hop limit {}",
            repr.transport.name(),
            info.local.ip(),
            info.local.port(),
            info.peer.ip(),
            info.peer.port(),
            req.hop_limit
        )),
        Err(e) => refuse(e.errno(), e.to_string()),
    }
}
