//! A Rust program that punches with the synergy-craft library and talks to its peer.
//!
//! ```text
//! punch tcp|tcp-listener|udp LOCAL LPORT PEER PPORT HOPLIMIT
//! ```
//!
//! `tcp` uses `tcp_accept_from`, the clean simultaneous open through strict conntrack;
//! `tcp-listener` the original sequence on a std `TcpListener` (bind, listen, synergy, accept),
//! whose own ISN strict conntrack rejects (docs/LAB.md); `udp` uses `synergy()` on an ordinary
//! `UdpSocket` (socket, bind, synergy, connect). `synergy()` falls back to the daemon when the
//! process lacks CAP_NET_RAW. It prints the peer's first line, answers
//! "hello from Rust", and exits.

use std::io::{Read, Write};
use std::net::{SocketAddrV6, UdpSocket};
use std::time::Duration;

use synergy_craft::api::{synergy, tcp_accept_from};
use synergy_craft::param::{HopChoice, HopLimit};

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
        anyhow::bail!("usage: punch tcp|tcp-listener|udp LOCAL LPORT PEER PPORT HOPLIMIT");
    };
    let local = SocketAddrV6::new(local.parse()?, lport.parse()?, 0, 0);
    let peer = SocketAddrV6::new(peer.parse()?, pport.parse()?, 0, 0);
    let hop: HopLimit = hop.parse()?;
    let mut buf = [0u8; 512];
    if proto == "tcp" {
        let stream = tcp_accept_from(
            local,
            peer,
            HopChoice::Fixed(hop),
            Some(Duration::from_secs(10)),
        )?;
        exchange(stream)?;
    } else if proto == "tcp-listener" {
        let listener = std::net::TcpListener::bind(local)?;
        synergy(&listener, hop, Some(peer))?;
        let (stream, from) = listener.accept()?;
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
