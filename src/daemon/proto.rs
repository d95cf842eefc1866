//! The daemon's wire format. On the daemon's Unix stream socket the daemon speaks first: `ready`
//! to a caller it admits, else its refusal. The caller then sends one 32-byte request with exactly
//! one file descriptor (SCM_RIGHTS); the reply is one line of text: `ok <what was sent>` or
//! `err <errno> <reason>`. For a listening TCP socket the reply is `wait <what was sent>`: the
//! daemon keeps the connection and later sends `conn [addr]:port` with the connected socket
//! (SCM_RIGHTS, one descriptor) or `err <errno> <reason>`. For an unconnected TCP socket the
//! reply is `sock <what was sent>` with a socket attached: the caller's socket made anew by the
//! daemon with the probe's sequence number, for the caller to put in its place. Pure: no I/O.

use std::net::{Ipv6Addr, SocketAddrV6};

use thiserror::Error;

use crate::wire::Field;

/// What is wrong with a request or a reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("{0} bytes, expected {REQUEST_LEN}")]
    Length(usize),
    /// More bytes came than the reader takes at once (it reads a request in one go).
    #[error("{0} bytes or more, expected {REQUEST_LEN}")]
    TooLong(usize),
    #[error("bad magic")]
    Magic,
    #[error("unsupported request version {0}")]
    Version(u8),
    #[error("not a reply line")]
    Reply,
    /// A bit or byte the protocol reserves (0) is set, so that a later version can give it a
    /// meaning safely.
    #[error("reserved field at byte {0} is not 0")]
    Reserved(usize),
}

/// Byte ranges of a request.
pub mod field {
    use super::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: usize = 4;
    pub const HOP_LIMIT: usize = 5;
    /// Bit 0: a peer address follows (else the daemon uses getpeername on the socket).
    pub const FLAGS: usize = 6;
    pub const PEER_ADDR: Field = 8..24;
    pub const PEER_PORT: Field = 24..26;
}

pub const REQUEST_LEN: usize = 32;
pub const MAGIC: &[u8; 4] = b"SYNC";
/// Version 2: the client waits for [`READY`] before it sends its request. Version 3: the `wait`
/// and `conn` replies of a punched listener.
pub const VERSION: u8 = 3;
/// The daemon's first line to a caller it has admitted: only now may descriptors be sent
/// (SO_PASSRIGHTS is on for this connection alone). A refused caller gets its `err` line instead.
pub const READY: &str = "ready\n";
const FLAG_PEER: u8 = 1;

/// A punch request: 32 bytes, sent with the caller's socket attached after the daemon's
/// [`READY`].
///
/// ```
/// use synergy_craft::daemon::proto::Request;
/// let req = Request { hop_limit: 2, peer: Some("[2001:db8:2::5]:5000".parse().unwrap()) };
/// assert_eq!(Request::parse(&req.emit()).unwrap(), req);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub hop_limit: u8,
    pub peer: Option<SocketAddrV6>,
}

impl Request {
    pub fn emit(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[field::MAGIC].copy_from_slice(MAGIC);
        b[field::VERSION] = VERSION;
        b[field::HOP_LIMIT] = self.hop_limit;
        if let Some(p) = self.peer {
            b[field::FLAGS] = FLAG_PEER;
            b[field::PEER_ADDR].copy_from_slice(&p.ip().octets());
            b[field::PEER_PORT].copy_from_slice(&p.port().to_be_bytes());
        }
        b
    }

    /// Reads a request; the error says what is wrong, for the reply.
    pub fn parse(b: &[u8]) -> Result<Self, ProtoError> {
        if b.len() != REQUEST_LEN {
            return Err(ProtoError::Length(b.len()));
        }
        if &b[field::MAGIC] != MAGIC {
            return Err(ProtoError::Magic);
        }
        if b[field::VERSION] != VERSION {
            return Err(ProtoError::Version(b[field::VERSION]));
        }
        // Every byte no field of this version uses, the flags but FLAG_PEER, and without it the
        // peer's bytes, are 0.
        let has_peer = b[field::FLAGS] & FLAG_PEER != 0;
        let used = |i: usize| {
            field::MAGIC.contains(&i)
                || [field::VERSION, field::HOP_LIMIT, field::FLAGS].contains(&i)
                || (has_peer && (field::PEER_ADDR.contains(&i) || field::PEER_PORT.contains(&i)))
        };
        if b[field::FLAGS] & !FLAG_PEER != 0 {
            return Err(ProtoError::Reserved(field::FLAGS));
        }
        if let Some(i) = (0..REQUEST_LEN).find(|&i| !used(i) && b[i] != 0) {
            return Err(ProtoError::Reserved(i));
        }
        let peer = if has_peer {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[field::PEER_ADDR]);
            let port =
                u16::from_be_bytes([b[field::PEER_PORT.start], b[field::PEER_PORT.start + 1]]);
            Some(SocketAddrV6::new(Ipv6Addr::from(o), port, 0, 0))
        } else {
            None
        };
        Ok(Request {
            hop_limit: b[field::HOP_LIMIT],
            peer,
        })
    }
}

/// The daemon's answer: `ok WHAT` or `err ERRNO REASON`, one line (reasons hold no newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    /// Punched for a listener; the connection follows as [`Reply::Conn`] (or an `Err`).
    Wait(String),
    /// The punched peer's connection, passed with this line.
    Conn(SocketAddrV6),
    /// A TCP client socket punched for: the socket to connect, passed with this line, bound to
    /// the caller's address and port with the probe's initial sequence number (the caller puts
    /// it in place of its own).
    Sock(String),
    /// `errno` is positive (include/synergy.h).
    Err {
        errno: i32,
        reason: String,
    },
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl Reply {
    pub fn line(&self) -> String {
        match self {
            Reply::Ok(what) => format!("ok {}\n", one_line(what)),
            Reply::Wait(what) => format!("wait {}\n", one_line(what)),
            Reply::Conn(peer) => format!("conn [{}]:{}\n", peer.ip(), peer.port()),
            Reply::Sock(what) => format!("sock {}\n", one_line(what)),
            Reply::Err { errno, reason } => format!("err {errno} {}\n", one_line(reason)),
        }
    }

    /// Reads a reply line; anything else (an errno that is not positive, no verb) is an error, so
    /// that a garbled or forged answer is never taken for success or for a refusal.
    pub fn parse(line: &str) -> Result<Reply, ProtoError> {
        let line = line.strip_suffix('\n').ok_or(ProtoError::Reply)?;
        // `line()` never writes a line break inside a reply.
        if line.contains(['\n', '\r']) {
            return Err(ProtoError::Reply);
        }
        if let Some(what) = line.strip_prefix("ok ") {
            return Ok(Reply::Ok(what.to_string()));
        }
        if let Some(what) = line.strip_prefix("wait ") {
            return Ok(Reply::Wait(what.to_string()));
        }
        if let Some(what) = line.strip_prefix("sock ") {
            return Ok(Reply::Sock(what.to_string()));
        }
        if let Some(peer) = line.strip_prefix("conn ") {
            return peer
                .parse::<SocketAddrV6>()
                .ok()
                .filter(|p| {
                    // One spelling: the one `line()` writes.
                    p.scope_id() == 0
                        && p.flowinfo() == 0
                        && format!("[{}]:{}", p.ip(), p.port()) == peer
                })
                .map(Reply::Conn)
                .ok_or(ProtoError::Reply);
        }
        let rest = line.strip_prefix("err ").ok_or(ProtoError::Reply)?;
        let (n, reason) = rest.split_once(' ').ok_or(ProtoError::Reply)?;
        match n.parse::<i32>() {
            Ok(errno) if (1..4096).contains(&errno) && !n.starts_with(['+', '0']) => {
                Ok(Reply::Err {
                    errno,
                    reason: reason.to_string(),
                })
            }
            _ => Err(ProtoError::Reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Request {
            hop_limit: 3,
            peer: Some("[2001:db8:2::5]:5555".parse().unwrap()),
        };
        assert_eq!(Request::parse(&r.emit()), Ok(r));
        let r = Request {
            hop_limit: 2,
            peer: None,
        };
        assert_eq!(Request::parse(&r.emit()), Ok(r));
        assert!(Request::parse(b"short").is_err());
        let mut bad = r.emit();
        bad[0] = b'X';
        assert_eq!(Request::parse(&bad), Err(ProtoError::Magic));
        // Reserved bits and bytes must be 0: the flags' other bits, byte 7, the padding after
        // the port, and the peer's bytes when no peer is flagged.
        for (at, value) in [
            (field::FLAGS, 0x80),
            (7, 1),
            (REQUEST_LEN - 1, 1),
            (field::PEER_ADDR.start, 1),
        ] {
            let mut bad = r.emit();
            bad[at] |= value;
            assert_eq!(
                Request::parse(&bad),
                Err(ProtoError::Reserved(at)),
                "byte {at}"
            );
        }
        for reply in [
            Reply::Ok("sent".into()),
            Reply::Ok(String::new()),
            Reply::Wait("tcp [2001:db8:1::11]:4000 > [2001:db8:2::5]:5000".into()),
            Reply::Conn("[2001:db8:2::5]:5555".parse().unwrap()),
            Reply::Sock("tcp [2001:db8:1::11]:4000 > [2001:db8:2::5]:5000".into()),
            Reply::Err {
                errno: 13,
                reason: "uid 0 not allowed".into(),
            },
            Reply::Err {
                errno: 22,
                reason: String::new(),
            },
        ] {
            assert_eq!(Reply::parse(&reply.line()), Ok(reply));
        }
    }

    proptest::proptest! {
        /// Every reply the daemon can write reads back as itself, and every line that reads as
        /// a reply is the line that reply writes (no second spelling of one answer).
        #[test]
        fn replies_round_trip(
            verb in 0u8..5,
            text in "[^\n\r]{0,40}",
            errno in 1i32..4096,
            addr: [u8; 16],
            port: u16,
        ) {
            let r = match verb {
                0 => Reply::Ok(text.clone()),
                1 => Reply::Wait(text.clone()),
                2 => Reply::Sock(text.clone()),
                3 => Reply::Conn(SocketAddrV6::new(addr.into(), port, 0, 0)),
                _ => Reply::Err { errno, reason: text.clone() },
            };
            proptest::prop_assert_eq!(Reply::parse(&r.line()), Ok(r.clone()));
        }

        #[test]
        fn a_line_read_as_a_reply_is_that_reply_s_line(line in "(ok|wait|sock|conn|err)[ -~\r]{0,40}\n") {
            if let Ok(r) = Reply::parse(&line) {
                proptest::prop_assert_eq!(r.line(), line);
            }
        }
    }

    #[test]
    fn forged_or_garbled_replies_are_errors() {
        for line in [
            "err 0 fake\n",
            "err -1 x\n",
            "err +13 x\n",
            "err 013 x\n",
            "err 13\n",
            "err x y\n",
            "ok\n",
            "ok sent",
            "",
            "hello\n",
            "ok a\nok b\n",
            "conn\n",
            "conn 2001:db8::1\n",
            "conn [2001:db8:0::1]:5\n",
            "conn [2001:db8::1]:05\n",
            "ok sent\r\n",
            "conn [2001:db8::1%2]:5\n",
            "wait\n",
        ] {
            assert_eq!(Reply::parse(line), Err(ProtoError::Reply), "{line:?}");
        }
    }
}
