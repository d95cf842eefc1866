//! Relaying a session's data: stdin to the peer, the peer's data to stdout, for streams and for
//! datagrams, with the closing events. Does I/O.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{Events, closed, from_icmp};

/// Copies stdin to the stream and the stream to stdout. When stdin ends, the sending side is shut
/// down and the peer's data is still read until it closes; when the peer closes, the session ends.
pub(super) fn stream(stream: TcpStream, ev: Events) -> anyhow::Result<()> {
    let mut writer = stream.try_clone().context("cloning the connection")?;
    // Counted as it is written, so the total is right even when the peer closes first and stdin
    // is still open (the copy thread is then left blocked on stdin).
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 16384];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if writer.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = writer.shutdown(Shutdown::Write);
        let _ = done_tx.send(());
    });
    let mut reader = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16384];
    let mut received = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
                received += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading from the peer"),
        }
    }
    let stdin_ended = done_rx.recv_timeout(Duration::from_millis(200)).is_ok();
    let sent = sent.load(Ordering::Relaxed);
    ev.emit(
        "bytes",
        &format!("{sent} bytes sent, {received} received"),
        json!({ "bytes_sent": sent, "bytes_received": received }),
    );
    closed(
        ev,
        sent,
        received,
        if stdin_ended {
            "both sides"
        } else {
            "the peer"
        },
    );
    Ok(())
}

/// Sends each read from stdin as one datagram and writes the peer's non-empty datagrams to stdout;
/// after stdin ends, keeps receiving until nothing has come for `linger`. Meanwhile the probe
/// goes out again every `repunch`: the local firewalls forget an idle UDP flow after their
/// timeout (as short as a few seconds on some), and the probe, which expires past them, refreshes
/// their entries without reaching the peer.
pub(super) fn datagrams(
    sock: UdpSocket,
    first: Vec<u8>,
    linger: Duration,
    keep: Option<(&crate::punch::Puncher, Duration)>,
    ev: Events,
) -> anyhow::Result<()> {
    let mut next_punch = keep.map(|(_, every)| Instant::now() + every);
    let mut out = std::io::stdout().lock();
    let mut received = first.len() as u64;
    out.write_all(&first)?;
    out.flush()?;
    let sender = sock.try_clone().context("cloning the UDP socket")?;
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 8192];
        let mut sent = 0u64;
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send(&buf[..n]).is_ok() {
                        sent += n as u64;
                    }
                }
            }
        }
        let _ = done_tx.send(sent);
    });
    let mut buf = vec![0u8; 65536];
    let mut sent = None;
    let mut last = Instant::now();
    loop {
        if sent.is_none() {
            sent = done_rx.try_recv().ok();
            if sent.is_some() {
                last = Instant::now();
            }
        }
        if sent.is_some() && last.elapsed() >= linger {
            break;
        }
        if let (Some(at), Some((puncher, every))) = (next_punch, keep)
            && Instant::now() >= at
        {
            if let Err(e) = puncher.punch() {
                log::warn!("re-punching while relaying: {}", crate::with_causes(&e));
            }
            next_punch = Some(Instant::now() + every);
        }
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .context("setting a timeout")?;
        match sock.recv(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
                received += n as u64;
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) || from_icmp(&e) => {}
            Err(e) => return Err(e).context("receiving from the peer"),
        }
    }
    closed(ev, sent.unwrap_or(0), received, "stdin end and linger");
    Ok(())
}
