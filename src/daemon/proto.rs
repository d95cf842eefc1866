//! The daemon's wire format. On the daemon's Unix stream socket the daemon speaks first: `ready`
//! to a caller it admits, else its refusal. The caller then sends one 32-byte request with exactly
//! one file descriptor (SCM_RIGHTS); the reply is one line of text: `ok <what was sent>` or
//! `err <errno> <reason>`. For a listening TCP socket the reply is `wait <what was sent>`: the
//! daemon keeps the connection and later sends `conn [addr]:port` with the connected socket
//! (SCM_RIGHTS, one descriptor) or `err <errno> <reason>`. For an unconnected TCP socket the
//! reply is `sock <what was sent>` with a socket attached: the caller's socket made anew by the
//! daemon with the probe's sequence number, for the caller to put in its place. Version 4 adds
//! the operations of the flags byte: keep a flow's hole open (`ok`), let it go (`ok`), and a
//! status request (no descriptor) answered by `status` and one JSON document up to the end of
//! the connection; and hop limit 0, "auto": the daemon's route memory chooses. Pure: no I/O.

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
    /// Bit 0: a peer address follows (else the daemon uses getpeername on the socket); bits 1-2:
    /// the operation ([`super::Op`]).
    pub const FLAGS: usize = 6;
    pub const PEER_ADDR: Field = 8..24;
    pub const PEER_PORT: Field = 24..26;
}

pub const REQUEST_LEN: usize = 32;
pub const MAGIC: &[u8; 4] = b"SYNC";
/// Version 2: the client waits for [`READY`] before it sends its request. Version 3: the `wait`
/// and `conn` replies of a punched listener. Version 4: [`Op`] and the auto hop limit (0); a
/// version 3 request (a punch with a hop limit) is still read.
pub const VERSION: u8 = 4;
const OLDEST_VERSION: u8 = 3;
/// The daemon's first line to a caller it has admitted: only now may descriptors be sent
/// (SO_PASSRIGHTS is on for this connection alone). A refused caller gets its `err` line instead.
pub const READY: &str = "ready\n";
const FLAG_PEER: u8 = 1;
const OP_SHIFT: u8 = 1;
const OP_MASK: u8 = 0b110;

/// What a request asks for (version 4: bits 1-2 of the flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Op {
    /// Punch once for the socket's flow (`synergy()`).
    #[default]
    Punch,
    /// Punch, and keep the hole open until the socket is closed or let go (`synergy_keep()`).
    Keep,
    /// Stop keeping the socket's flow (`synergy_unkeep()`).
    Unkeep,
    /// The daemon's state: kept flows (the caller's own; root's: all), routes, counters. No
    /// descriptor is sent with it.
    Status,
}

impl Op {
    fn bits(self) -> u8 {
        (match self {
            Op::Punch => 0,
            Op::Keep => 1,
            Op::Unkeep => 2,
            Op::Status => 3,
        }) << OP_SHIFT
    }

    fn from_bits(flags: u8) -> Op {
        match (flags & OP_MASK) >> OP_SHIFT {
            0 => Op::Punch,
            1 => Op::Keep,
            2 => Op::Unkeep,
            _ => Op::Status,
        }
    }
}

/// The hop limit that asks the daemon to choose from its route memory (C: `SYNERGY_HOP_AUTO`).
pub const HOP_AUTO: u8 = 0;

/// A request: 32 bytes, sent with the caller's socket attached (none for [`Op::Status`]) after
/// the daemon's [`READY`].
///
/// ```
/// use synergy_craft::daemon::proto::{Op, Request};
/// let req = Request { hop_limit: 2, peer: Some("[2001:db8:2::5]:5000".parse().unwrap()), op: Op::Keep };
/// assert_eq!(Request::parse(&req.emit()).unwrap(), req);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// 1-255, or [`HOP_AUTO`].
    pub hop_limit: u8,
    pub peer: Option<SocketAddrV6>,
    pub op: Op,
}

impl Request {
    pub fn emit(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[field::MAGIC].copy_from_slice(MAGIC);
        b[field::VERSION] = VERSION;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::FLAGS] = self.op.bits();
        if let Some(p) = self.peer {
            b[field::FLAGS] |= FLAG_PEER;
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
        let version = b[field::VERSION];
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(ProtoError::Version(version));
        }
        let known = if version >= 4 {
            FLAG_PEER | OP_MASK
        } else {
            FLAG_PEER
        };
        // Every byte no field of this version uses, the flags but FLAG_PEER, and without it the
        // peer's bytes, are 0.
        let has_peer = b[field::FLAGS] & FLAG_PEER != 0;
        let used = |i: usize| {
            field::MAGIC.contains(&i)
                || [field::VERSION, field::HOP_LIMIT, field::FLAGS].contains(&i)
                || (has_peer && (field::PEER_ADDR.contains(&i) || field::PEER_PORT.contains(&i)))
        };
        if b[field::FLAGS] & !known != 0 {
            return Err(ProtoError::Reserved(field::FLAGS));
        }
        let op = Op::from_bits(b[field::FLAGS]);
        // A status request names no flow and no hop limit; an auto hop limit is version 4's.
        if op == Op::Status && (has_peer || b[field::HOP_LIMIT] != 0)
            || version < 4 && b[field::HOP_LIMIT] == HOP_AUTO
        {
            return Err(ProtoError::Reserved(field::HOP_LIMIT));
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
            op,
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
    /// The answer to [`Op::Status`]: one JSON document follows, up to the end of the connection
    /// (docs/JSON.md, `status`).
    Status,
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
            Reply::Status => "status\n".to_string(),
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
        if line == "status" {
            return Ok(Reply::Status);
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
        for op in [Op::Punch, Op::Keep, Op::Unkeep] {
            let r = Request {
                hop_limit: 3,
                peer: Some("[2001:db8:2::5]:5555".parse().unwrap()),
                op,
            };
            assert_eq!(Request::parse(&r.emit()), Ok(r));
        }
        let status = Request {
            hop_limit: 0,
            peer: None,
            op: Op::Status,
        };
        assert_eq!(Request::parse(&status.emit()), Ok(status));
        let r = Request {
            hop_limit: 2,
            peer: None,
            op: Op::Punch,
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
            (field::FLAGS, 0x08),
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
            Reply::Status,
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
            verb in 0u8..6,
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
                4 => Reply::Status,
                _ => Reply::Err { errno, reason: text.clone() },
            };
            proptest::prop_assert_eq!(Reply::parse(&r.line()), Ok(r.clone()));
        }

        #[test]
        fn a_line_read_as_a_reply_is_that_reply_s_line(line in "(ok|wait|sock|conn|err|status)[ -~\r]{0,40}\n") {
            if let Ok(r) = Reply::parse(&line) {
                proptest::prop_assert_eq!(r.line(), line);
            }
        }
    }

    /// A version 3 request (what an older library sends) is still a punch; its flags byte has
    /// no operation and its hop limit is never auto. A status request carries neither a peer nor
    /// a hop limit.
    #[test]
    fn versions_and_operations() {
        let keep = Request {
            hop_limit: 2,
            peer: None,
            op: Op::Keep,
        }
        .emit();
        let mut v3 = keep;
        v3[field::VERSION] = 3;
        assert_eq!(Request::parse(&v3), Err(ProtoError::Reserved(field::FLAGS)));
        v3[field::FLAGS] = 0;
        assert_eq!(Request::parse(&v3).map(|r| r.op), Ok(Op::Punch));
        v3[field::HOP_LIMIT] = HOP_AUTO;
        assert_eq!(
            Request::parse(&v3),
            Err(ProtoError::Reserved(field::HOP_LIMIT))
        );
        let mut v2 = keep;
        v2[field::VERSION] = 2;
        assert_eq!(Request::parse(&v2), Err(ProtoError::Version(2)));
        let mut status = Request {
            hop_limit: 0,
            peer: None,
            op: Op::Status,
        }
        .emit();
        status[field::HOP_LIMIT] = 1;
        assert_eq!(
            Request::parse(&status),
            Err(ProtoError::Reserved(field::HOP_LIMIT))
        );
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
            "status \n",
            "status x\n",
        ] {
            assert_eq!(Reply::parse(line), Err(ProtoError::Reply), "{line:?}");
        }
    }
}
