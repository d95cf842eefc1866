//! Lab tests of `listen` and `connect`: a named peer (an unmodified socat or nc, or synergy-craft on
//! the other side) gets in through strict firewalls, data flows both ways, the firewalls' entries
//! are ESTABLISHED/[ASSURED] (tcp) or replied (udp) with zero INVALID drops, strangers get nothing,
//! re-punching keeps a hole alive, and the classic TCP mode shows what the firewalls do with it.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{BIN, Lab, Running};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";
const C: &str = "2001:db8:3::7";

fn listen(lab: &Lab, proto: &str, extra: &[&str]) -> Running {
    lab.spawn(
        "A",
        &[
            &[
                BIN,
                "listen",
                proto,
                A,
                "4444",
                B,
                "5555",
                "2",
                "--timeout",
                "20",
            ],
            extra,
        ]
        .concat(),
    )
}

/// Runs a shell pipeline on a node (for socat/nc with a timed stdin).
fn sh(lab: &Lab, node: &str, script: &str) -> Running {
    lab.spawn(node, &["sh", "-c", script])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The flow's entry on every firewall, looked up from either end's original direction.
fn entries(lab: &Lab, proto: &str, a_port: u16, b_port: u16) -> Vec<(String, String)> {
    lab.firewalls()
        .into_iter()
        .map(|fw| {
            let e = lab
                .entry(&fw, proto, a_port, b_port)
                .or_else(|| lab.entry(&fw, proto, b_port, a_port));
            (fw, e.unwrap_or_default())
        })
        .collect()
}

/// Waits for both ends and checks that a line went each way and that A (and B, when
/// `b_must_succeed`) ended by itself with success; returns both outputs.
fn line_each_way(a: Running, b: Running, wait: Duration, b_must_succeed: bool) -> (Output, Output) {
    let (ao, a_ended) = a.finish(wait);
    let (bo, b_ended) = b.finish(wait);
    assert!(a_ended && ao.status.success(), "A: {}", text(&ao.stderr));
    if b_must_succeed {
        assert!(b_ended && bo.status.success(), "B: {}", text(&bo.stderr));
    }
    assert_eq!(
        text(&ao.stdout),
        "hello from B\n",
        "A: {}",
        text(&ao.stderr)
    );
    assert_eq!(
        text(&bo.stdout),
        "hello from A\n",
        "B: {}",
        text(&bo.stderr)
    );
    (ao, bo)
}

/// Waits (at most 5 s) until every firewall's entry for the flow satisfies `ok`, and returns them.
fn entries_when(
    lab: &Lab,
    proto: &str,
    a_port: u16,
    b_port: u16,
    ok: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    common::eventually(Duration::from_secs(5), || {
        entries(lab, proto, a_port, b_port)
            .iter()
            .all(|(_, x)| ok(x))
    });
    entries(lab, proto, a_port, b_port)
}

#[test]
fn tcp_listen_with_socat_through_strict() {
    let Some(lab) = Lab::up("lstcp", &[]) else {
        return;
    };
    let mut a = listen(&lab, "tcp", &[]);
    assert!(
        a.wait_stderr("punched", Duration::from_secs(10)),
        "no punch"
    );
    let b = sh(
        &lab,
        "B",
        &format!("(echo hello from B; sleep 3) | socat - TCP6:[{A}]:4444,bind=[{B}]:5555"),
    );
    a.write(b"hello from A\n");
    assert!(
        a.wait_stderr("connected", Duration::from_secs(10)),
        "B never came"
    );
    let established = |e: &str| e.contains("ESTABLISHED") && e.contains("[ASSURED]");
    for (fw, e) in entries_when(&lab, "tcp", 4444, 5555, established) {
        assert!(
            e.contains("ESTABLISHED") && e.contains("[ASSURED]"),
            "{fw}: {e:?}"
        );
    }
    line_each_way(a, b, Duration::from_secs(8), false);
    lab.assert_no_invalid("");
}

#[test]
fn udp_listen_with_nc_through_strict() {
    let Some(lab) = Lab::up("lsudp", &[]) else {
        return;
    };
    let mut a = listen(&lab, "udp", &["--linger", "1500ms"]);
    assert!(
        a.wait_stderr("punched", Duration::from_secs(10)),
        "no punch"
    );
    let b = sh(
        &lab,
        "B",
        &format!("(echo hello from B; sleep 3) | nc -6 -u -w 3 -s {B} -p 5555 {A} 4444"),
    );
    assert!(
        a.wait_stderr("connected", Duration::from_secs(10)),
        "B never came"
    );
    a.write(b"hello from A\n");
    let replied = |e: &str| !e.is_empty() && !e.contains("UNREPLIED");
    for (fw, e) in entries_when(&lab, "udp", 4444, 5555, replied) {
        assert!(!e.is_empty() && !e.contains("UNREPLIED"), "{fw}: {e:?}");
    }
    line_each_way(a, b, Duration::from_secs(6), false);
    lab.assert_no_invalid("");
}

fn connect_both_sides(proto: &str, prefix: &str) {
    let Some(lab) = Lab::up(prefix, &[]) else {
        return;
    };
    let mut a = lab.spawn(
        "A",
        &[
            BIN,
            "connect",
            proto,
            A,
            "4444",
            B,
            "5555",
            "2",
            "--timeout",
            "15",
            "--json",
        ],
    );
    let mut b = lab.spawn(
        "B",
        &[
            BIN,
            "connect",
            proto,
            B,
            "5555",
            A,
            "4444",
            "2",
            "--timeout",
            "15",
        ],
    );
    a.write(b"hello from A\n");
    b.write(b"hello from B\n");
    // A's events are JSON (`"peer_connected"`), B's human lines (`connected (`).
    assert!(
        a.wait_stderr("connected", Duration::from_secs(15)),
        "A never connected"
    );
    assert!(
        b.wait_stderr("connected", Duration::from_secs(15)),
        "B never connected"
    );
    let done = |e: &str| {
        if proto == "tcp" {
            e.contains("ESTABLISHED") && e.contains("[ASSURED]")
        } else {
            !e.is_empty() && !e.contains("UNREPLIED")
        }
    };
    for (fw, e) in entries_when(&lab, proto, 4444, 5555, done) {
        assert!(done(&e), "{fw}: {e:?}");
    }
    let (ao, _) = line_each_way(a, b, Duration::from_secs(8), true);
    lab.assert_no_invalid("");
    // A ran with --json: its events are JSON Lines on stderr, in order.
    let events: Vec<serde_json::Value> = text(&ao.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"punched"), "{kinds:?}");
    let connected = kinds
        .iter()
        .position(|k| *k == "peer_connected")
        .expect("peer_connected event");
    assert_eq!(kinds.last(), Some(&"closed"), "{kinds:?}");
    assert!(connected < kinds.len() - 1);
    assert_eq!(
        events.last().map(|e| e["bytes_received"].clone()),
        Some(serde_json::json!(13))
    );
    assert_eq!(events[0]["hop_limit"], 2);
}

#[test]
fn tcp_connect_both_sides_behind_strict() {
    connect_both_sides("tcp", "cntcp");
}

#[test]
fn udp_connect_both_sides_behind_strict() {
    connect_both_sides("udp", "cnudp");
}

/// C, the stranger, tries A's port during the wait and after the connection: nothing reaches A
/// from C, C gets nothing, and nothing of C's is relayed.
#[test]
fn stranger_gets_nothing() {
    let Some(lab) = Lab::up("strgr", &[]) else {
        return;
    };
    let stranger = |n: u16| {
        let c = sh(
            &lab,
            "C",
            &format!(
                "echo stranger {n} | socat -T 1 - TCP6:[{A}]:4444,bind=[{C}]:5555,connect-timeout=1"
            ),
        );
        let (out, _) = c.finish(Duration::from_secs(4));
        assert!(!out.status.success(), "the stranger's connect succeeded");
        assert!(
            out.stdout.is_empty(),
            "the stranger got data: {}",
            text(&out.stdout)
        );
        let u = sh(
            &lab,
            "C",
            &format!("echo stranger udp {n} | nc -6 -u -w 1 -s {C} -p 5556 {A} 4444"),
        );
        let (out, _) = u.finish(Duration::from_secs(4));
        assert!(out.stdout.is_empty(), "the stranger got a datagram back");
    };
    let mut a = listen(&lab, "tcp", &[]);
    assert!(
        a.wait_stderr("punched", Duration::from_secs(10)),
        "no punch"
    );
    let seen_during = lab.capture(
        "A",
        &format!("ip6 src {C}"),
        1,
        Duration::from_millis(500),
        || stranger(1),
    );
    assert!(
        seen_during.is_empty(),
        "C's packets reached A during the wait: {seen_during:?}"
    );
    let b = sh(
        &lab,
        "B",
        &format!("(echo hello from B; sleep 4) | socat - TCP6:[{A}]:4444,bind=[{B}]:5555"),
    );
    a.write(b"hello from A\n");
    assert!(
        a.wait_stderr("connected", Duration::from_secs(10)),
        "B never came"
    );
    let seen_after = lab.capture(
        "A",
        &format!("ip6 src {C}"),
        1,
        Duration::from_millis(500),
        || stranger(2),
    );
    assert!(
        seen_after.is_empty(),
        "C's packets reached A after the connection: {seen_after:?}"
    );
    let (ao, _) = a.finish(Duration::from_secs(8));
    let (bo, _) = b.finish(Duration::from_secs(8));
    assert_eq!(
        text(&ao.stdout),
        "hello from B\n",
        "only the peer's data is relayed"
    );
    assert_eq!(text(&bo.stdout), "hello from A\n");
    assert!(
        lab.counters("fwa1")["outside_drops"] >= 4,
        "fwa1 should have dropped C's attempts"
    );
}

/// UDP unreplied timeout 3 s on every firewall; the peer sends after 10 s. With `--repunch 1s`
/// it gets in; with `--repunch 0` the hole has closed and it does not.
fn late_peer(repunch: &str, prefix: &str) -> Option<(bool, String)> {
    let lab = Lab::up(prefix, &["--timeout", "udp=3"])?;
    let a = lab.spawn(
        "A",
        &[
            BIN,
            "listen",
            "udp",
            A,
            "4444",
            B,
            "5555",
            "2",
            "--timeout",
            "13",
            "--repunch",
            repunch,
        ],
    );
    std::thread::sleep(Duration::from_secs(10));
    let b = sh(
        &lab,
        "B",
        &format!("echo late | nc -6 -u -w 1 -s {B} -p 5555 {A} 4444"),
    );
    let (ao, _) = a.finish(Duration::from_secs(6));
    let _ = b.finish(Duration::from_secs(3));
    Some((text(&ao.stdout) == "late\n", text(&ao.stderr)))
}

#[test]
fn repunch_keeps_udp_hole_open() {
    let Some((through, err)) = late_peer("1s", "rpon") else {
        return;
    };
    assert!(
        through,
        "with --repunch 1s the late peer did not get in: {err}"
    );
    assert!(err.contains("punched again"), "{err}");
}

#[test]
fn without_repunch_udp_hole_closes() {
    let Some((through, err)) = late_peer("0", "rpoff") else {
        return;
    };
    assert!(!through, "without re-punching the late peer still got in");
    assert!(err.contains("no connection from the peer"), "{err}");
}

/// The classic SocketSynergy TCP mode (listen() + accept() after a probe with an unrelated
/// sequence number), per profile, asserted as the lab shows it: with be_liberal=0 (strict, and
/// reject, which is strict inside) A's replies never reach the peer and fwa1 counts INVALID drops;
/// with `liberal` the connection works both ways.
fn classic(profile: &str, prefix: &str) {
    let Some(lab) = Lab::up(prefix, &["--profile", profile]) else {
        return;
    };
    let mut a = listen(&lab, "tcp", &["--tcp-mode", "classic"]);
    assert!(
        a.wait_stderr("punched", Duration::from_secs(10)),
        "no punch"
    );
    let b = sh(
        &lab,
        "B",
        &format!(
            "(echo hello from B; sleep 3) | socat - TCP6:[{A}]:4444,bind=[{B}]:5555,connect-timeout=3"
        ),
    );
    a.write(b"hello from A\n");
    // The event each profile ends in: the connection made, or fwa1 dropping A's reply.
    if profile == "liberal" {
        assert!(
            a.wait_stderr("connected", Duration::from_secs(10)),
            "B never came"
        );
    } else {
        common::eventually(Duration::from_secs(5), || {
            lab.counters("fwa1")["invalid_drops"] > 0
        });
    }
    let fwa1 = lab.entry("fwa1", "tcp", 4444, 5555).unwrap_or_default();
    let (bo, _) = b.finish(Duration::from_secs(6));
    let (ao, _) = a.finish(Duration::from_secs(3));
    let invalid = lab.counters("fwa1")["invalid_drops"];
    if profile == "liberal" {
        assert_eq!(text(&bo.stdout), "hello from A\n");
        assert_eq!(text(&ao.stdout), "hello from B\n");
        assert_eq!(invalid, 0);
        assert!(fwa1.contains("ESTABLISHED"), "{fwa1}");
    } else {
        assert_eq!(
            text(&bo.stdout),
            "",
            "{profile}: A's data reached the peer in classic mode"
        );
        assert!(invalid >= 1, "{profile}: fwa1 dropped nothing as INVALID");
        assert!(!fwa1.contains("ESTABLISHED"), "{profile}: {fwa1}");
    }
}

#[test]
fn classic_mode_strict() {
    classic("strict", "clstrict");
}

#[test]
fn classic_mode_liberal() {
    classic("liberal", "cllib");
}

#[test]
fn classic_mode_reject() {
    classic("reject", "clrej");
}

/// `listen sctp` needs the kernel's SCTP sockets: where /proc/net/protocols lists none, it fails at
/// once with one line naming the missing support (EPROTONOSUPPORT); where it lists SCTPv6, the
/// listener starts, punches, and gives up after `--timeout` waiting for the peer.
#[test]
fn listen_sctp_follows_the_kernels_support() {
    let Some(lab) = Lab::up("lsctp", &[]) else {
        return;
    };
    let out = lab.exec(
        "A",
        &[
            BIN,
            "listen",
            "sctp",
            A,
            "4444",
            B,
            "5555",
            "2",
            "--timeout",
            "2",
        ],
    );
    let err = text(&out.stderr);
    let has_sctp =
        std::fs::read_to_string("/proc/net/protocols").is_ok_and(|p| p.contains("SCTPv6"));
    assert_eq!(out.status.code(), Some(1), "{err}");
    if has_sctp {
        assert!(err.contains("punched"), "{err}");
        assert!(err.contains("no connection from the peer"), "{err}");
        return;
    }
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("no SCTP sockets") && err.contains("EPROTONOSUPPORT"),
        "{err}"
    );
}

/// The closing summary counts what was sent even when the peer closes first while stdin is still
/// open (issue #12.6: it said 0 bytes sent). A sends 50000 bytes and keeps stdin open; socat on B
/// only receives, and closes after 3 s.
#[test]
fn bytes_sent_are_counted_when_the_peer_closes_first() {
    let Some(lab) = Lab::up("lsbytes", &[]) else {
        return;
    };
    let mut a = listen(&lab, "tcp", &["--json"]);
    // A has punched once fwa1 holds the flow's entry.
    lab.wait_entry("fwa1", "tcp", 4444, 5555);
    let b = sh(
        &lab,
        "B",
        &format!("timeout 3 socat -u TCP6:[{A}]:4444,bind=[{B}]:5555 - | wc -c"),
    );
    a.write(&[b'x'; 50_000]);
    let (bo, _) = b.finish(Duration::from_secs(10));
    assert_eq!(text(&bo.stdout).trim(), "50000", "B: {}", text(&bo.stderr));
    // A's stdin stays open: the session ends because the peer closed.
    let start = std::time::Instant::now();
    while a.child.try_wait().ok().flatten().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "A did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ao, _) = a.finish(Duration::from_secs(1));
    let closed = common::event(&text(&ao.stderr), "closed")
        .unwrap_or_else(|| panic!("no closed event: {}", text(&ao.stderr)));
    assert_eq!(closed["bytes_sent"], 50_000, "{closed}");
    assert_eq!(closed["by"], "the peer", "{closed}");
}

/// A UDP session of `listen` behind a local firewall (fwa1) whose UDP timeouts, unreplied and
/// stream, are both 5 s (read back from fwa1): B sends "first", stays silent for `idle`, then
/// sends "second". Returns A's stdout. Only the re-punches refresh fwa1's entry: A sends nothing.
fn udp_after_idle(prefix: &str, extra: &[&str], idle: u64) -> Option<String> {
    let lab = Lab::up(
        prefix,
        &["--timeout", "fwa1:udp=5", "--timeout", "fwa1:udp_stream=5"],
    )?;
    for key in ["udp_timeout", "udp_timeout_stream"] {
        let out = lab.exec(
            "fwa1",
            &["sysctl", "-n", &format!("net.netfilter.nf_conntrack_{key}")],
        );
        assert_eq!(text(&out.stdout).trim(), "5", "{key}");
    }
    let mut a = listen(&lab, "udp", extra);
    lab.wait_entry("fwa1", "udp", 4444, 5555);
    let b = sh(
        &lab,
        "B",
        &format!(
            "(echo first; sleep {idle}; echo second) | socat -u - UDP6:[{A}]:4444,bind=[{B}]:5555"
        ),
    );
    let _ = b.finish(Duration::from_secs(idle + 10));
    // "second" has had its time to arrive once the fwa1 entry shows B's reply or not at all; A's
    // session ends with stdin and its linger.
    a.close_stdin();
    let (ao, _) = a.finish(Duration::from_secs(5));
    Some(text(&ao.stdout))
}

/// #12.5: with the default re-punch the hole survives 90 s of idle behind 5 s UDP timeouts.
#[test]
fn default_repunch_keeps_an_idle_udp_session_open() {
    let Some(out) = udp_after_idle("idleon", &[], 90) else {
        return;
    };
    assert_eq!(out, "first\nsecond\n");
}

/// The control: without re-punching, 12 s of idle behind the same firewall close the hole.
#[test]
fn without_repunch_an_idle_udp_session_closes() {
    let Some(out) = udp_after_idle("idleoff", &["--repunch", "0"], 12) else {
        return;
    };
    assert_eq!(out, "first\n");
}

/// #12.3: `connect tcp` on both sides between two rejecting site firewalls (each answers an
/// unsolicited SYN with a RST, which also closes the sender's own fresh entry), started together:
/// 10 of 10 runs connect, with data both ways and zero INVALID drops. Each attempt keeps its hole
/// open (re-punch at once after a refusal, the hold swallows an early peer SYN) and paces its
/// full-hop SYNs, connecting at once when the peer's SYN shows up.
#[test]
fn tcp_connect_both_sides_between_rejecting_firewalls_10_of_10() {
    let Some(lab) = Lab::up("ccrej", &["--profile", "reject"]) else {
        return;
    };
    lab.connect_tcp_runs(10, 4600, ("2", "2"), false);
}

/// The probes in a pcap file as (source port, destination port, hop limit, next header), read
/// with tcpdump first (the whole file, nothing truncated) and then byte by byte.
fn pcap_probes(path: &std::path::Path) -> Vec<(u16, u16, u8, u8)> {
    let read = std::process::Command::new("tcpdump")
        .arg("-nr")
        .arg(path)
        .output()
        .expect("tcpdump");
    let err = String::from_utf8_lossy(&read.stderr);
    assert!(read.status.success() && !err.contains("truncated"), "{err}");
    let file = std::fs::File::open(path).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let d = p.unwrap().data.into_owned();
        assert!(d.len() >= 44, "{d:?}");
        let port = |at: usize| u16::from_be_bytes([d[at], d[at + 1]]);
        out.push((port(40), port(42), d[7], d[6]));
    }
    out
}

/// Runs a session on A with `--json --pcap FILE` until its stderr shows `event`, ends it with
/// SIGINT, and returns the probes of its pcap file (`pcap_probes`).
fn session_pcap(
    lab: &Lab,
    args: &[&str],
    file: &std::path::Path,
    event: &str,
) -> Vec<(u16, u16, u8, u8)> {
    // A route memory that knows nothing: `auto` traces (and the trace is in the pcap).
    let memory = common::empty_memory();
    let mut cmd = vec!["env", memory.as_str(), BIN];
    cmd.extend(args);
    cmd.extend(["--json", "--pcap", file.to_str().unwrap()]);
    let mut run = lab.spawn("A", &cmd);
    assert!(
        run.wait_stderr(event, Duration::from_secs(20)),
        "{args:?}: no {event}"
    );
    run.signal(libc::SIGINT);
    let (_, ended) = run.finish(Duration::from_secs(5));
    assert!(ended, "{args:?}: did not end at SIGINT");
    pcap_probes(file)
}

/// `hops`, `listen` and `connect` take `--pcap`: the trace's probes (hop limits 1, 2, ... on its
/// flow), every punch and re-punch, and the library's own punch (TCP connect, through synergy()),
/// each written as it goes out, so that Ctrl-C leaves a whole file.
#[test]
fn hops_listen_and_connect_write_their_probes_to_pcap() {
    let Some(lab) = Lab::up("sspcap", &[]) else {
        return;
    };
    let dir = common::scratch("sspcap");

    let f = dir.join("hops.pcap");
    let out = lab.craft(
        "A",
        &[
            "hops",
            "--proto",
            "udp",
            "--sport",
            "4570",
            "--dst",
            B,
            "--dport",
            "5555",
            "--json",
            "--pcap",
            f.to_str().unwrap(),
        ],
    );
    let h: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let traced = h["hops"].as_array().unwrap().len();
    let want: Vec<_> = (1..=traced as u8).map(|n| (4570, 5555, n, 17)).collect();
    assert_eq!(pcap_probes(&f), want, "{h}");

    let f = dir.join("listen.pcap");
    let listen = [
        "listen",
        "udp",
        A,
        "4571",
        B,
        "5555",
        "2",
        "--repunch",
        "200ms",
    ];
    let got = session_pcap(&lab, &listen, &f, "\"repunched\"");
    assert!(got.len() >= 2, "{got:?}");
    assert!(got.iter().all(|p| *p == (4571, 5555, 2, 17)), "{got:?}");

    let f = dir.join("connect.pcap");
    let got = session_pcap(
        &lab,
        &["connect", "tcp", A, "4572", B, "5555", "auto"],
        &f,
        "\"punched\"",
    );
    // The trace on its own port (hop limits 1, 2: fwa1 inside, r1 outside), then the SYN of the
    // session's port with the recommended hop limit.
    assert!(got.len() >= 3, "{got:?}");
    let trace_port = got[0].0;
    assert_ne!(trace_port, 4572);
    assert_eq!(
        got[..2],
        [(trace_port, 5555, 1, 6), (trace_port, 5555, 2, 6)],
        "{got:?}"
    );
    assert!(got[2..].iter().all(|p| *p == (4572, 5555, 2, 6)), "{got:?}");
}

/// `hops --json` from A's port `sport` toward B that waits 1 s on each hop limit and gives up
/// only after 30 silent ones: in a lab whose routers are silent, it is still running when a test
/// signals it.
fn slow_hops(lab: &Lab, sport: &str) -> common::Running {
    lab.spawn(
        "A",
        &[
            BIN,
            "hops",
            "--proto",
            "udp",
            "--sport",
            sport,
            "--dst",
            B,
            "--dport",
            "5555",
            "--wait",
            "1s",
            "--max-silent",
            "30",
            "--json",
        ],
    )
}

/// `hops`, `listen` and `connect` end at the first SIGINT or SIGTERM with 128 + the signal and,
/// with `--json`, an `error` event on their JSON stream that says so (stdout for hops, stderr for
/// the sessions).
#[test]
fn a_signal_ends_hops_and_sessions_with_an_error_event() {
    let Some(lab) = Lab::up("sssig", &["--silent", "all"]) else {
        return;
    };
    let last_event = |text: &str| -> serde_json::Value {
        text.lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap_or_else(|| panic!("no JSON: {text}"))
    };
    // Every router is silent: hops waits 1 s on each hop limit, for up to 30 of them. The
    // second probe passes fwa1 (the first expires there) and leaves its entry.
    let mut run = slow_hops(&lab, "4600");
    // Its second probe is out (fwa1 holds its entry) and it waits for a reply.
    let out = common::eventually(Duration::from_secs(10), || {
        lab.entry("fwa1", "udp", 4600, 5555).is_some()
            || run.child.try_wait().ok().flatten().is_some()
    });
    if !out || lab.entry("fwa1", "udp", 4600, 5555).is_none() {
        let (out, _) = run.finish(Duration::from_secs(1));
        panic!("hops sent nothing or ended early: {out:?}");
    }
    run.signal(libc::SIGINT);
    let (out, ended) = run.finish(Duration::from_secs(5));
    assert!(ended, "hops did not end at SIGINT");
    assert_eq!(out.status.code(), Some(130));
    let e = last_event(&text(&out.stdout));
    assert_eq!(
        (e["event"].as_str(), e["exit_code"].as_u64()),
        (Some("error"), Some(130)),
        "{e}"
    );

    let mut run = lab.spawn(
        "A",
        &[BIN, "listen", "udp", A, "4601", B, "5555", "2", "--json"],
    );
    assert!(
        run.wait_stderr("\"punched\"", Duration::from_secs(10)),
        "no punch"
    );
    run.signal(libc::SIGTERM);
    let (out, ended) = run.finish(Duration::from_secs(5));
    assert!(ended, "listen did not end at SIGTERM");
    assert_eq!(out.status.code(), Some(143));
    let e = last_event(&text(&out.stderr));
    assert_eq!(
        (e["event"].as_str(), e["exit_code"].as_u64()),
        (Some("error"), Some(143)),
        "{e}"
    );
}

/// A signal ends the run even when its report cannot be written: `hops --json` whose reader has
/// gone (stdout a broken pipe) still exits 130 at SIGINT, at once, instead of hanging.
#[test]
fn a_signal_ends_the_run_when_its_report_cannot_be_written() {
    let Some(lab) = Lab::up("sshang", &["--silent", "all"]) else {
        return;
    };
    let mut run = slow_hops(&lab, "4700");
    assert!(
        common::eventually(Duration::from_secs(10), || {
            lab.entry("fwa1", "udp", 4700, 5555).is_some()
        }),
        "hops sent nothing"
    );
    drop(run.child.stdout.take()); // the reader goes away
    run.signal(libc::SIGINT);
    let (out, ended) = run.finish(Duration::from_secs(8));
    assert!(ended, "hops hung after SIGINT with its stdout gone");
    assert_eq!(out.status.code(), Some(130));
}
