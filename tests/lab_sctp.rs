//! SCTP associations through strict firewalls, with a real SCTP stack on both ends: usrsctp's
//! example programs in raw IPv6 mode (UDP encapsulation port 0), because this kernel has no SCTP
//! sockets while its conntrack tracks SCTP. B's `client` associates with A's `echo_server`
//! (port 7) from a fixed port and sends a line that A echoes: data both ways, then a SHUTDOWN.
//! Without a punch A's firewall drops B's INIT; after the tool's default SCTP punch (an ERROR chunk
//! with a Stale Cookie cause) the association completes with zero INVALID drops; an INIT punch
//! makes conntrack drop A's INIT ACK on kernels with the 2023 INIT-collision handling (6.6+).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Lab;

const ECHO_SERVER: &str = "/usr/lib/usrsctp/echo_server";
const CLIENT: &str = "/usr/lib/usrsctp/client";
const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";
/// echo_server's port (fixed in the example program).
const SERVER_PORT: u16 = 7;

/// Whether usrsctp's examples are installed (scripts/test.sh installs libusrsctp-examples);
/// under SYNERGY_REQUIRE_LAB=1 their absence fails the test.
fn usrsctp() -> bool {
    if Path::new(ECHO_SERVER).exists() && Path::new(CLIENT).exists() {
        return true;
    }
    assert!(
        std::env::var("SYNERGY_REQUIRE_LAB").as_deref() != Ok("1"),
        "usrsctp examples required (SYNERGY_REQUIRE_LAB=1) but {ECHO_SERVER} is missing: scripts/test.sh installs libusrsctp-examples"
    );
    eprintln!(
        "\n*** SKIPPED: {ECHO_SERVER} not installed (apt-get install libusrsctp-examples) ***\n"
    );
    false
}

/// What B's client saw of one association attempt.
struct Outcome {
    /// The association came up (SCTP_COMM_UP).
    up: bool,
    /// B got its line back from A.
    echoed: bool,
    /// A received B's line (the server says so).
    received: bool,
    /// The association was shut down cleanly and the client exited 0.
    shut_down: bool,
    log: String,
}

/// Starts echo_server on A, sends `punch` (probe arguments, if any) from A's port 7 to B's
/// `cport`, and runs B's client against A for at most `limit`.
fn associate(lab: &Lab, cport: u16, punch: Option<&[&str]>, limit: Duration) -> Outcome {
    let server = lab.spawn("A", &["stdbuf", "-oL", ECHO_SERVER, "0"]);
    // Ready when its raw SCTP socket exists (protocol 132 = 0x84 in /proc/net/raw6).
    let start = Instant::now();
    loop {
        let raw6 = lab.exec("A", &["cat", "/proc/net/raw6"]);
        let ready = String::from_utf8_lossy(&raw6.stdout)
            .lines()
            .skip(1)
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(":0084"))
            });
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "echo_server never opened its raw socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cp = cport.to_string();
    if let Some(extra) = punch {
        let sp = SERVER_PORT.to_string();
        let args = [
            &[
                "probe",
                "--proto",
                "sctp",
                "--sport",
                &sp,
                "--dst",
                B,
                "--dport",
                &cp,
                "--hop-limit",
                "2",
            ][..],
            extra,
        ]
        .concat();
        lab.craft("A", &args);
        lab.wait_entry("fwa1", "sctp", SERVER_PORT, cport);
    }
    let secs = (limit.as_secs() + 2).to_string();
    let mut client = lab.spawn(
        "B",
        &["timeout", &secs, "stdbuf", "-oL", CLIENT, A, "7", &cp, "0"],
    );
    client.write(b"hello from B\n");
    let echoed = client.wait_stdout("\nhello from B\n", limit);
    let (out, _) = client.finish(Duration::from_secs(8));
    let (sout, _) = server.finish(Duration::ZERO);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stext = String::from_utf8_lossy(&sout.stdout).into_owned();
    Outcome {
        up: text.contains("SCTP_COMM_UP"),
        echoed,
        received: stext.contains(&format!("received from {B}:{cport}")),
        shut_down: text.contains("SCTP_SHUTDOWN_COMP") && out.status.success(),
        log: format!("client:\n{text}\nserver:\n{stext}"),
    }
}

#[test]
fn without_a_punch_the_peers_init_is_dropped() {
    if !usrsctp() {
        return;
    }
    let Some(lab) = Lab::up("sctpno", &[]) else {
        return;
    };
    let o = associate(&lab, 5001, None, Duration::from_secs(4));
    assert!(!o.up && !o.echoed && !o.received, "{}", o.log);
    assert!(
        lab.counters("fwa1")["outside_drops"] > 0,
        "B's INIT was not dropped at fwa1"
    );
}

#[test]
fn after_the_default_punch_an_association_completes_with_data_both_ways() {
    if !usrsctp() {
        return;
    }
    let Some(lab) = Lab::up("sctpok", &[]) else {
        return;
    };
    for (run, cport) in (5101..5104).enumerate() {
        let o = associate(&lab, cport, Some(&[]), Duration::from_secs(8));
        assert!(o.up, "run {run}: no association: {}", o.log);
        assert!(o.received, "run {run}: A did not get B's data: {}", o.log);
        assert!(o.echoed, "run {run}: B did not get A's data: {}", o.log);
        assert!(o.shut_down, "run {run}: no clean shutdown: {}", o.log);
        lab.assert_no_invalid(&format!("run {run}: {}", o.log));
    }
}

/// The kernel release decides this one: Linux 6.6 made conntrack demand that an INIT ACK after
/// INITs seen in both directions carry the first INIT's tag. On such a kernel the INIT punch
/// lets B's INIT in but A's INIT ACK is dropped as INVALID; on an older one it is only reported.
#[test]
fn an_init_punch_breaks_the_association_on_kernels_with_init_collision_handling() {
    if !usrsctp() {
        return;
    }
    let Some(lab) = Lab::up("sctpinit", &[]) else {
        return;
    };
    let o = associate(
        &lab,
        5201,
        Some(&["--chunk", "init"]),
        Duration::from_secs(4),
    );
    let invalid = lab.counters("fwa1")["invalid_drops"];
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    println!(
        "kernel {release}: INIT punch: up {}, INVALID drops at fwa1 {invalid}",
        o.up
    );
    if (major, minor) >= (6, 6) {
        assert!(!o.up, "{}", o.log);
        assert!(
            invalid > 0,
            "A's INIT ACK was not counted INVALID: {}",
            o.log
        );
    }
}
