//! A Rust program that punches with the synergy-craft library and talks to its peer.
//!
//! ```text
//! punch tcp|tcp-listener|tcp-connect|udp LOCAL LPORT PEER PPORT HOPLIMIT
//! ```
//!
//! `tcp` uses `tcp_accept_from` (the server sequence in one call); `tcp-listener` the server
//! sequence on a std `TcpListener` (bind, listen, `synergy`, `synergy_accept`); `tcp-connect` the
//! client sequence (bind, `synergy_connect`, retried with a fresh socket when refused, as a real
//! program does); `udp` uses `synergy()` on an ordinary `UdpSocket` (socket, bind, synergy,
//! connect). Every TCP case is clean through strict conntrack. Without the privilege the library
//! asks the daemon. It prints the peer's first line (for `tcp-connect` after sending its own),
//! answers "hello from Rust", and exits.

use std::io::{Read, Write};
use std::net::{SocketAddrV6, UdpSocket};
use std::time::Duration;

use synergy_craft::api::{synergy, synergy_accept, synergy_connect, tcp_accept_from};
use synergy_craft::param::HopLimit;

/// Prints the peer's first line, answers, and closes the sending side.
fn exchange(mut stream: std::net::TcpStream) -> anyhow::Result<()> {
    let mut buf = [0u8; 512];
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let n = stream.read(&mut buf)?;
    print!("got: {}", String::from_utf8_lossy(&buf[..n]));
    stream.write_all(b"hello from Rust\n")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    env_logger::init();
    let args: Vec<String> = std::env::args().collect();
    let [_, proto, local, lport, peer, pport, hop] = &args[..] else {
        anyhow::bail!(
            "usage: punch tcp|tcp-listener|tcp-connect|udp LOCAL LPORT PEER PPORT HOPLIMIT"
        );
    };
    let local = SocketAddrV6::new(local.parse()?, lport.parse()?, 0, 0);
    let peer = SocketAddrV6::new(peer.parse()?, pport.parse()?, 0, 0);
    let hop: HopLimit = hop.parse()?;
    let mut buf = [0u8; 512];
    if proto == "tcp" {
        let stream = tcp_accept_from(local, peer, hop, Some(Duration::from_secs(10)))?;
        exchange(stream)?;
    } else if proto == "tcp-connect" {
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        let stream = loop {
            let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            sock.bind(&local.into())?;
            match synergy_connect(&sock, hop, peer) {
                Ok(()) => break std::net::TcpStream::from(sock),
                Err(e) if std::time::Instant::now() < give_up => {
                    eprintln!("attempt failed ({}); again with a fresh socket", e.reason());
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut s = stream;
        s.write_all(b"hello from Rust\n")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let n = s.read(&mut buf)?;
        print!("got: {}", String::from_utf8_lossy(&buf[..n]));
        s.shutdown(std::net::Shutdown::Write)?;
        std::thread::sleep(Duration::from_millis(300));
    } else if proto == "tcp-listener" {
        let listener = std::net::TcpListener::bind(local)?;
        synergy(&listener, hop, Some(peer))?;
        let (stream, from) = synergy_accept(&listener)?;
        anyhow::ensure!(
            from == std::net::SocketAddr::V6(peer),
            "connection from {from}, not the peer"
        );
        exchange(stream)?;
    } else {
        let sock = UdpSocket::bind(local)?;
        synergy(&sock, hop, Some(peer))?;
        sock.connect(peer)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let n = sock.recv(&mut buf)?;
        print!("got: {}", String::from_utf8_lossy(&buf[..n]));
        sock.send(b"hello from Rust\n")?;
    }
    Ok(())
}
