//! The daemon's client, used by `synergy()` (Rust and C) when the caller lacks CAP_NET_RAW: it
//! passes the caller's socket to the daemon with the hop limit and peer, and reads the answer. It
//! trusts only a daemon whose listening socket was set up by root (SO_PEERCRED), ignores the
//! environment in setuid/setgid programs (secure_getenv(3)), and never takes a garbled or late
//! answer for a success. Does I/O.

use std::ffi::{CStr, CString};
use std::net::SocketAddrV6;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::proto::{Op, READY, Reply, Request};
use crate::net::fdpass;
use crate::param::HopLimit;

/// How long a client waits for the daemon's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

unsafe extern "C" {
    fn secure_getenv(name: *const libc::c_char) -> *mut libc::c_char;
}

/// An environment variable, or None in a setuid/setgid (or otherwise secure-execution) program.
pub(crate) fn secure_env(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is NUL-terminated; the result is NULL or a NUL-terminated string of the
    // environment, copied at once.
    unsafe {
        let v = secure_getenv(name.as_ptr());
        (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// Where the daemon listens: `$SYNERGY_DAEMON_SOCKET` (not in setuid/setgid programs), else
/// [`super::DEFAULT_SOCKET`].
pub fn socket_path() -> String {
    secure_env("SYNERGY_DAEMON_SOCKET")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| super::DEFAULT_SOCKET.to_string())
}

/// The uid whose listening socket is trusted: 0 (the daemon binds and listens as root, or systemd
/// does for it), or `$SYNERGY_DAEMON_UID` (not in setuid/setgid programs) for a daemon run by
/// another user.
fn trusted_uid() -> u32 {
    secure_env("SYNERGY_DAEMON_UID")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Why asking the daemon did not give a punch.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The daemon refused; `errno` is one of include/synergy.h's, `reason` its words.
    #[error("the synergy-craft daemon at {path} refused: {reason}")]
    Refused {
        path: String,
        errno: i32,
        reason: String,
    },
    /// The socket file exists but this caller may not connect to it (its permissions).
    #[error("this caller may not use the synergy-craft daemon at {path}")]
    NotPermitted {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// No daemon, one that does not take the connection or answer in time, or one whose listener
    /// was not set up by the trusted uid.
    #[error(
        "no privilege to punch in this process (CAP_NET_RAW; for TCP also CAP_NET_ADMIN) and the \
         synergy-craft daemon at {path} is unavailable"
    )]
    Unavailable {
        path: String,
        #[source]
        why: Unavailable,
    },
    #[error("the synergy-craft daemon at {path} answered {line:?}, which is not a valid reply")]
    BadReply { path: String, line: String },
}

/// Why the daemon could not be used (the source of [`DaemonError::Unavailable`]; the OS error
/// under it, if any, is its own source).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("connecting")]
    Connect(#[source] std::io::Error),
    #[error("it did not take the connection within {} s", ANSWER_TIMEOUT.as_secs())]
    NotTaken,
    #[error("reading its credentials")]
    Credentials(#[source] std::io::Error),
    #[error("its socket was set up by uid {uid} (pid {pid}), not uid {want}")]
    Owner { uid: u32, pid: i32, want: u32 },
    #[error("setting the answer timeout")]
    Timeout(#[source] std::io::Error),
    #[error("sending the request")]
    Send(#[source] std::io::Error),
    /// Its answer (the first line, or the reply to the request) could not be read.
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// The punched connection's line could not be read.
    #[error("waiting for the punched connection")]
    Connection(#[source] AnswerError),
}

/// Why a line the daemon sends could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("its answer is longer than a line")]
    TooLong,
    #[error("it closed the connection without answering")]
    Closed,
    #[error("its answer was cut short")]
    CutShort,
    #[error("no answer within {} s", ANSWER_TIMEOUT.as_secs())]
    NoAnswer,
    #[error("reading its answer")]
    Read(#[source] std::io::Error),
}

impl DaemonError {
    /// The errno the C ABI reports (include/synergy.h).
    pub fn errno(&self) -> i32 {
        match self {
            DaemonError::Refused { errno, .. } => *errno,
            DaemonError::NotPermitted { .. } => libc::EACCES,
            DaemonError::Unavailable { .. } => libc::ECONNREFUSED,
            DaemonError::BadReply { .. } => libc::EPROTO,
        }
    }
}

/// Connects to the daemon at `path` within [`ANSWER_TIMEOUT`]: a daemon whose backlog is full
/// makes connect() wait, and SO_SNDTIMEO bounds that wait for Unix stream sockets (unix(7)).
fn connect(path: &str) -> Result<UnixStream, DaemonError> {
    let unavailable = |e: std::io::Error| DaemonError::Unavailable {
        path: path.to_string(),
        why: Unavailable::Connect(e),
    };
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(unavailable)?;
    sock.set_write_timeout(Some(ANSWER_TIMEOUT))
        .map_err(unavailable)?;
    let addr = socket2::SockAddr::unix(path).map_err(unavailable)?;
    match sock.connect(&addr) {
        Ok(()) => Ok(UnixStream::from(std::os::fd::OwnedFd::from(sock))),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            Err(DaemonError::NotPermitted {
                path: path.to_string(),
                source: e,
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(DaemonError::Unavailable {
            path: path.to_string(),
            why: Unavailable::NotTaken,
        }),
        Err(e) => Err(unavailable(e)),
    }
}

/// Sends raw request bytes with descriptors attached (SCM_RIGHTS) on a connection to the daemon:
/// for programs that manage the connection themselves (see [`exchange`] for the whole exchange).
pub use crate::net::fdpass::send_with_fds;

/// Connects to the daemon at `path`, checks who listens there, waits for its `ready` (or takes
/// its refusal), sends raw request bytes with `fds` and returns its reply line. Public for tools
/// and tests that speak the protocol directly.
pub fn exchange(path: &str, fds: &[RawFd], bytes: &[u8]) -> Result<String, DaemonError> {
    exchange_fds(path, fds, bytes).map(|(_, r)| r.line)
}

/// A reply line as received: the line, what came after it, and the descriptors that came with it.
struct Received {
    line: String,
    rest: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Reads one line with recvmsg (up to 1 KiB, within the connection's read timeout), keeping the
/// descriptors that came with it and any bytes after it.
fn read_reply(conn: &UnixStream) -> Result<Received, AnswerError> {
    let mut got = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.contains(&b'\n') {
        if got.len() >= 1024 {
            return Err(AnswerError::TooLong);
        }
        match fdpass::recv_with_fds(conn.as_raw_fd(), &mut buf) {
            Ok(r) if r.len == 0 && got.is_empty() => {
                return Err(AnswerError::Closed);
            }
            Ok(r) if r.len == 0 => return Err(AnswerError::CutShort),
            Ok(r) => {
                got.extend_from_slice(&buf[..r.len]);
                fds.extend(r.fds);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(AnswerError::NoAnswer);
            }
            Err(e) => return Err(AnswerError::Read(e)),
        }
    }
    let end = got
        .iter()
        .position(|b| *b == b'\n')
        .map_or(got.len(), |i| i + 1);
    let rest = got.split_off(end);
    Ok(Received {
        line: String::from_utf8_lossy(&got).into_owned(),
        rest,
        fds,
    })
}

fn exchange_fds(
    path: &str,
    fds: &[RawFd],
    bytes: &[u8],
) -> Result<(UnixStream, Received), DaemonError> {
    let unavailable = |why: Unavailable| DaemonError::Unavailable {
        path: path.to_string(),
        why,
    };
    let conn = connect(path)?;
    let cred =
        fdpass::peer_cred(conn.as_fd()).map_err(|e| unavailable(Unavailable::Credentials(e)))?;
    let want = trusted_uid();
    if cred.uid != want {
        return Err(unavailable(Unavailable::Owner {
            uid: cred.uid,
            pid: cred.pid,
            want,
        }));
    }
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| unavailable(Unavailable::Timeout(e)))?;
    // Nothing follows the daemon's first line until the request is sent.
    let first = read_reply(&conn).map_err(|e| unavailable(Unavailable::Answer(e)))?;
    if first.line != READY || !first.rest.is_empty() || !first.fds.is_empty() {
        // A refusal before anything was sent (or a garbled line, for the caller to judge).
        return Ok((conn, first));
    }
    fdpass::send_with_fds(conn.as_raw_fd(), bytes, fds)
        .map_err(|e| unavailable(Unavailable::Send(e)))?;
    let r = read_reply(&conn).map_err(|e| unavailable(Unavailable::Answer(e)))?;
    Ok((conn, r))
}

/// What a punch through the daemon gave.
pub enum Outcome {
    /// The probe was sent; nothing follows.
    Sent,
    /// A TCP client socket was punched for: this socket (bound to the same address and port,
    /// with the probe's sequence number, checked to be a TCP socket bound there and not
    /// connected) is to take the caller's socket's place. The daemon holds the port until the
    /// connection (the second field) is closed.
    Replace(OwnedFd, UnixStream),
    /// A listener was punched for: the daemon completes the connection and passes it on this
    /// connection ([`await_connection`]).
    Waiting(Pending),
}

/// A punched listener's connection still to come from the daemon.
pub struct Pending {
    conn: UnixStream,
    path: String,
    /// What came after the `wait` line in the same read, with its descriptors.
    early: Option<(Vec<u8>, Vec<OwnedFd>)>,
}

/// Asks the daemon to stop keeping `fd`'s flow toward `peer` (`Op::Unkeep`; the hop limit byte
/// is unused, 0); it answers `ok` or refuses.
pub fn unkeep(fd: RawFd, peer: Option<SocketAddrV6>) -> Result<(), DaemonError> {
    match request(fd, HopLimit(0), peer, Op::Unkeep)? {
        Outcome::Sent => Ok(()),
        // Letting go never replaces the socket nor waits: anything else is not a valid answer.
        Outcome::Replace(..) | Outcome::Waiting(_) => Err(DaemonError::BadReply {
            path: socket_path(),
            line: "a punch's answer to an unkeep request".into(),
        }),
    }
}

/// The most a status document may hold (about 200 bytes per kept flow).
const STATUS_LIMIT: usize = 64 << 20;

/// Asks the daemon for its state (`Op::Status`): the JSON document it sends after its `status`
/// line (docs/JSON.md), read to the end of the connection.
pub fn status() -> Result<String, DaemonError> {
    let path = socket_path();
    let bytes = Request {
        hop_limit: 0,
        peer: None,
        op: Op::Status,
    }
    .emit();
    let (conn, r) = exchange_fds(&path, &[], &bytes)?;
    let bad = |line: String| DaemonError::BadReply {
        path: path.clone(),
        line,
    };
    match Reply::parse(&r.line) {
        Ok(Reply::Status) if r.fds.is_empty() => {
            let mut doc = r.rest;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut &conn, &mut chunk) {
                    Ok(0) => break,
                    Ok(n) if doc.len() + n <= STATUS_LIMIT => doc.extend_from_slice(&chunk[..n]),
                    Ok(_) => return Err(bad(format!("a status longer than {STATUS_LIMIT} bytes"))),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(DaemonError::Unavailable {
                            path: path.clone(),
                            why: Unavailable::Answer(AnswerError::Read(e)),
                        });
                    }
                }
            }
            String::from_utf8(doc).map_err(|_| bad("a status that is not UTF-8".into()))
        }
        Ok(Reply::Err { errno, reason }) => Err(DaemonError::Refused {
            path,
            errno,
            reason,
        }),
        _ => Err(bad(r.line)),
    }
}

/// Asks the daemon to punch for the socket `fd` (`op`: once, or keeping it open).
pub fn request(
    fd: RawFd,
    hop_limit: HopLimit,
    peer: Option<SocketAddrV6>,
    op: Op,
) -> Result<Outcome, DaemonError> {
    let path = socket_path();
    let bytes = Request {
        hop_limit: hop_limit.0,
        peer,
        op,
    }
    .emit();
    let (conn, r) = exchange_fds(&path, &[fd], &bytes)?;
    let Received {
        line,
        rest,
        mut fds,
    } = r;
    let bad = |line: String| DaemonError::BadReply {
        path: path.clone(),
        line,
    };
    match Reply::parse(&line) {
        Ok(Reply::Ok(_)) if fds.is_empty() && rest.is_empty() => Ok(Outcome::Sent),
        Ok(Reply::Wait(_)) => Ok(Outcome::Waiting(Pending {
            conn,
            path: path.clone(),
            early: (!rest.is_empty() || !fds.is_empty()).then_some((rest, fds)),
        })),
        Ok(Reply::Sock(_)) if fds.len() == 1 && rest.is_empty() => {
            let new = fds.remove(0);
            // SAFETY: the caller's descriptor is open for the call.
            let old = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let same_place = |f: std::os::fd::BorrowedFd<'_>| {
                crate::net::sockfacts::socket_facts(f).ok().map(|x| {
                    (
                        x.domain,
                        x.ty,
                        x.protocol,
                        x.local,
                        x.connected_to.is_some(),
                    )
                })
            };
            let (n, o) = (same_place(new.as_fd()), same_place(old));
            if n.is_none() || n != o || n.is_some_and(|x| x.4) {
                return Err(bad(format!(
                    "{line:?} with a socket that is not one like the caller's"
                )));
            }
            Ok(Outcome::Replace(new, conn))
        }
        Ok(Reply::Err { errno, reason }) => Err(DaemonError::Refused {
            path,
            errno,
            reason,
        }),
        _ => Err(bad(line)),
    }
}

/// Blocks until the daemon passes the punched peer's connection (or says why not): exactly one
/// TCP socket with the line `conn [addr]:port`, connected to that peer.
pub fn await_connection(p: Pending) -> Result<(OwnedFd, SocketAddrV6), DaemonError> {
    let Pending { conn, path, early } = p;
    let bad = |line: String| DaemonError::BadReply {
        path: path.clone(),
        line,
    };
    let limit = crate::punch::server::WAIT_LIMIT
        + crate::punch::server::OPEN_LIMIT
        + Duration::from_secs(5);
    conn.set_read_timeout(Some(limit))
        .map_err(|e| bad(e.to_string()))?;
    let r = match early {
        Some((rest, fds)) if rest.contains(&b'\n') => {
            let end = rest.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            Received {
                line: String::from_utf8_lossy(&rest[..end]).into_owned(),
                rest: rest[end..].to_vec(),
                fds,
            }
        }
        Some((rest, _)) => return Err(bad(String::from_utf8_lossy(&rest).into_owned())),
        None => read_reply(&conn).map_err(|e| DaemonError::Unavailable {
            path: path.clone(),
            why: Unavailable::Connection(e),
        })?,
    };
    let Received {
        line,
        rest,
        mut fds,
    } = r;
    match Reply::parse(&line) {
        Ok(Reply::Conn(peer)) if fds.len() == 1 && rest.is_empty() => {
            let fd = fds.remove(0);
            let facts = crate::net::sockfacts::socket_facts(fd.as_fd()).map_err(|e| {
                bad(format!(
                    "{line:?} with a descriptor that is not a socket: {e}"
                ))
            })?;
            let tcp = facts.domain == libc::AF_INET6
                && facts.ty == libc::SOCK_STREAM
                && facts.protocol == libc::IPPROTO_TCP;
            let to = facts.connected_to.map(|a| (*a.ip(), a.port()));
            if !tcp || to != Some((*peer.ip(), peer.port())) {
                return Err(bad(format!(
                    "{line:?} with a socket that is not connected to it"
                )));
            }
            Ok((fd, peer))
        }
        Ok(Reply::Err { errno, reason }) => Err(DaemonError::Refused {
            path,
            errno,
            reason,
        }),
        _ => Err(bad(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason a program reads says every cause once, down to the OS's words.
    #[test]
    fn an_unavailable_daemon_says_why_once() {
        let e = crate::api::SynergyError::from(DaemonError::Unavailable {
            path: "/run/x.sock".into(),
            why: Unavailable::Connect(std::io::Error::from_raw_os_error(libc::ENOENT)),
        });
        let r = e.reason();
        assert!(
            r.ends_with(
                "daemon at /run/x.sock is unavailable: connecting: No such file or directory (os error 2)"
            ),
            "{r}"
        );
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        let e = crate::api::SynergyError::from(DaemonError::Unavailable {
            path: "/run/x.sock".into(),
            why: Unavailable::Answer(AnswerError::NoAnswer),
        });
        assert!(
            e.reason().ends_with("is unavailable: no answer within 5 s"),
            "{}",
            e.reason()
        );
    }
}
