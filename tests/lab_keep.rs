//! Lab tests of issue #15, through the daemon as `nobody` and the C ABI: kept UDP holes outlive
//! the local firewall's UDP timeout for a minute and are gone within one timeout of the program's
//! exit (fwa1's conntrack table is the judge); a punch reset from the peer's side lowers the hop
//! limit "auto" uses on that route, and the lesson outlives a restart of the daemon; letting go of
//! a kept flow works once.

mod common;

use std::time::{Duration, Instant};

use common::{
    BIN, Lab, NOBODY, c_program, daemon_status, eventually, scratch, start_daemon, state_dir,
};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";

/// fwa1's conntrack entries of UDP flows whose original direction has a destination port in
/// `ports` (the table writes addresses in full, so the ports name the flows: nothing else in the
/// lab uses them).
fn kept_entries(lab: &Lab, ports: std::ops::Range<u16>) -> usize {
    lab.conntrack("fwa1")
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some("udp"))
        .filter(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("dport="))
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| ports.contains(&p))
        })
        .count()
}

/// A sysctl of a lab node, as a number.
fn sysctl(lab: &Lab, node: &str, name: &str) -> u64 {
    let out = lab.exec(node, &["sysctl", "-n", name]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} on {node}"))
}

/// A daemon on A admitting nobody, told the firewalls' UDP timeout and `rate` requests a second
/// (keeping many flows is one request each), with its socket path.
fn keeping_daemon(
    lab: &Lab,
    name: &str,
    udp_timeout: u64,
    rate: &str,
) -> (common::Running, String) {
    let dir = scratch(name);
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let ct = format!("udp={udp_timeout}s");
    let args = [
        "--allow-uid",
        "65534",
        "--user",
        "sys",
        "--rate",
        rate,
        "--conntrack-timeout",
        &ct,
    ];
    (start_daemon(lab, &sock, &args), sock)
}

/// The C program's `keep` mode on A as nobody through the daemon at `sock` (with `env` too):
/// `n` UDP sockets from A:lbase+i, each kept toward B:pbase+i with hop limit `hop` (0: auto).
fn keep_as_nobody(
    lab: &Lab,
    sock: &str,
    env: &[&str],
    n: u16,
    (lbase, pbase): (u16, u16),
    hop: &str,
) -> common::Running {
    let prog = c_program();
    let mut cmd: Vec<String> = vec!["env".into(), format!("SYNERGY_DAEMON_SOCKET={sock}")];
    cmd.extend(env.iter().map(|s| s.to_string()));
    cmd.extend(NOBODY.iter().map(|s| s.to_string()));
    for a in [
        prog.to_str().unwrap(),
        "keep",
        &n.to_string(),
        A,
        &lbase.to_string(),
        B,
        &pbase.to_string(),
        hop,
    ] {
        cmd.push(a.to_string());
    }
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    lab.spawn("A", &argv)
}

#[test]
fn a_thousand_kept_udp_holes_outlive_the_timeout_and_close_with_the_program() {
    let prog = c_program();
    let Some(lab) = Lab::up(
        "keep1k",
        &["--timeout", "fwa1:udp=5", "--timeout", "fwa1:udp_stream=5"],
    ) else {
        return;
    };
    // What the firewall forgets after, read from the firewall, not assumed.
    let timeout = sysctl(&lab, "fwa1", "net.netfilter.nf_conntrack_udp_timeout");
    let stream = sysctl(
        &lab,
        "fwa1",
        "net.netfilter.nf_conntrack_udp_timeout_stream",
    );
    let forget = Duration::from_secs(timeout.max(stream));
    let (daemon, sock) = keeping_daemon(&lab, "keep1k", timeout, "5000");
    let sock = sock.as_str();
    let n = 1000u16;
    let (lbase, pbase) = (20000u16, 30000u16);
    let mut keeper = keep_as_nobody(&lab, sock, &[], n, (lbase, pbase), "2");
    if !keeper.wait_stdout(&format!("kept {n}"), Duration::from_secs(120)) {
        let (out, _) = keeper.finish(Duration::from_secs(1));
        let (dout, _) = daemon.finish(Duration::from_millis(100));
        panic!(
            "keeping {n} holes as nobody through the daemon failed: {}{}\ndaemon: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&dout.stderr)
        );
    }
    let kept_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || kept_entries(
            &lab,
            pbase..pbase + n
        ) == usize::from(n)),
        "fwa1 holds {} of the {n} flows",
        kept_entries(&lab, pbase..pbase + n)
    );
    // The claim is about time passing: a minute, a dozen timeouts, with nothing but the keeper to
    // keep the entries. Every 5 s along the way, all of them are still there.
    let minute = Duration::from_secs(60);
    while kept_at.elapsed() < minute {
        std::thread::sleep(Duration::from_secs(5).min(minute.saturating_sub(kept_at.elapsed())));
        let held = kept_entries(&lab, pbase..pbase + n);
        assert_eq!(
            held,
            usize::from(n),
            "after {:?}: fwa1 holds {held} of the {n} kept flows",
            kept_at.elapsed()
        );
    }
    let st = daemon_status(&lab, sock);
    assert_eq!(st["counters"]["kept_now"], n, "{st}");
    let flows = st["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), usize::from(n));
    // Each flow was punched again at least once per 3/4 of the timeout.
    let least = (60.0 / (0.75 * timeout as f64)).floor() as u64;
    for f in flows {
        assert!(f["punches"].as_u64().unwrap_or(0) >= least, "{f}");
        assert!(
            f["next_punch_in_ms"].as_f64().unwrap_or(f64::MAX) <= 0.75 * timeout as f64 * 1e3,
            "{f}"
        );
    }
    // Now every peer sends, and every one gets in.
    let drops = lab.counters("fwa1")["outside_drops"];
    let sent = lab.exec(
        "B",
        &[
            prog.to_str().unwrap(),
            "send",
            &n.to_string(),
            B,
            &pbase.to_string(),
            A,
            &lbase.to_string(),
        ],
    );
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains(&format!("sent {n}")),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(
        keeper.wait_stdout(&format!("heard {n}\n"), Duration::from_secs(10)),
        "not every peer got in"
    );
    assert_eq!(lab.counters("fwa1")["outside_drops"], drops);
    assert_eq!(
        *lab.counters("B").get("from_a").expect("B's from_a counter"),
        0,
        "a keeper's punch reached B"
    );
    lab.assert_no_invalid("kept UDP holes");
    // The program exits: its sockets close, and the keeper stops. Within one timeout of the
    // exit (plus the second the conntrack dump and this poll need) no hole is left.
    let (out, ended) = keeper.finish(Duration::from_secs(5));
    let exited = Instant::now();
    assert!(ended);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("heard {n} of {n}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        eventually(forget + Duration::from_secs(1), || kept_entries(
            &lab,
            pbase..pbase + n
        ) == 0),
        "{:?} after the program's exit fwa1 still holds {} of its holes",
        exited.elapsed(),
        kept_entries(&lab, pbase..pbase + n)
    );
    // Every flow ended with the program: at its exit (the daemon watches the process), or at
    // the first check that found its socket closed.
    let st = daemon_status(&lab, sock);
    assert_eq!(st["counters"]["kept_now"], 0, "{st}");
    let ended = st["counters"]["ended_exited"].as_u64().unwrap_or(0)
        + st["counters"]["ended_closed"].as_u64().unwrap_or(0);
    assert_eq!(ended, u64::from(n), "{st}");
    let _ = daemon.finish(Duration::from_millis(100));
}

/// Keeping ends with the process that asked, even while another process (here its child, which
/// inherited the sockets) still holds them: the daemon watches the asker's pidfd.
#[test]
fn kept_holes_end_with_the_process_that_asked() {
    let Some(lab) = Lab::up("keepex", &["--timeout", "fwa1:udp=5"]) else {
        return;
    };
    let timeout = sysctl(&lab, "fwa1", "net.netfilter.nf_conntrack_udp_timeout");
    let (daemon, sock) = keeping_daemon(&lab, "keepex", timeout, "1000");
    let sock = sock.as_str();
    let n = 20u16;
    let (lbase, pbase) = (21000u16, 31000u16);
    let mut asker = keep_as_nobody(
        &lab,
        sock,
        &["SYNERGY_TEST_KEEP_FORK=1"],
        n,
        (lbase, pbase),
        "2",
    );
    if !asker.wait_stdout("forked ", Duration::from_secs(30)) {
        let (out, _) = asker.finish(Duration::from_secs(1));
        let (dout, _) = daemon.finish(Duration::from_millis(100));
        panic!(
            "keep and fork: {}{}\ndaemon: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&dout.stderr)
        );
    }
    let exited = Instant::now();
    // The asker is gone; its child holds every socket.
    assert!(eventually(Duration::from_secs(5), || asker
        .child
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    assert!(
        eventually(
            Duration::from_secs(2),
            || daemon_status(&lab, sock)["counters"]["ended_exited"] == n
        ),
        "{}",
        daemon_status(&lab, sock)
    );
    assert_eq!(daemon_status(&lab, sock)["counters"]["kept_now"], 0);
    assert!(
        eventually(Duration::from_secs(timeout + 1), || kept_entries(
            &lab,
            pbase..pbase + n
        ) == 0),
        "{:?} after the asker's exit fwa1 still holds {} of its holes",
        exited.elapsed(),
        kept_entries(&lab, pbase..pbase + n)
    );
    // The child still holds the sockets (it is still running) when the holes are gone.
    let held = lab.exec("A", &["ss", "-Huan", "sport", "=", ":21000"]);
    assert!(
        String::from_utf8_lossy(&held.stdout).contains(":21000"),
        "the child no longer holds the sockets"
    );
    // Closing the shared stdin ends the child too.
    let _ = asker.finish(Duration::from_secs(1));
    let _ = daemon.finish(Duration::from_millis(100));
}

/// The C program's `try` mode as nobody through the daemon, on a TCP listener (the server
/// punch: what it sends teaches the route memory; a client's does not): its result line.
fn try_tcp(lab: &Lab, sock: &str, lport: u16, peer: &str, hop: u8) -> String {
    let prog = c_program();
    let mut cmd: Vec<String> = vec!["env".into(), format!("SYNERGY_DAEMON_SOCKET={sock}")];
    cmd.extend(NOBODY.iter().map(|s| s.to_string()));
    for a in [
        prog.to_str().unwrap(),
        "try",
        "tcp",
        A,
        &lport.to_string(),
        peer,
        "5000",
        &hop.to_string(),
        "listen",
    ] {
        cmd.push(a.to_string());
    }
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = lab.exec("A", &argv);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("result"))
        .unwrap_or("")
        .to_string()
}

/// The route memory as `synergy-craft routes --json` shows it (the daemon's state directory).
fn routes(lab: &Lab, sock: &str) -> serde_json::Value {
    let state = format!("STATE_DIRECTORY={}", state_dir(sock).display());
    let out = lab.exec("A", &["env", &state, BIN, "routes", "--json"]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("routes is one JSON object")
}

#[test]
fn a_reset_lowers_the_auto_hop_limit_of_the_route_across_a_restart() {
    let Some(lab) = Lab::up("keeprst", &["--remote-profile", "reject"]) else {
        return;
    };
    let dir = scratch("keeprst");
    let sock = dir.join("d.sock");
    let sock = sock.to_str().unwrap();
    // The operator says B's network is 2 to 4 hops from here: auto takes the highest, 4, which
    // crosses fwa1 and r1 and reaches fwb1, which rejects with a reset for B.
    let args = [
        "--allow-uid",
        "65534",
        "--user",
        "sys",
        "--max-hop",
        "8",
        "--hop-range",
        "2001:db8:2::/48=2-4",
    ];
    let daemon = start_daemon(&lab, sock, &args);
    // Nothing known toward C (its route has nothing learnt, and no operator range covers it):
    // auto is refused with ERANGE, and nothing is sent.
    let c = lab.addr("C").to_string();
    let unknown = try_tcp(&lab, sock, 4100, &c, 0);
    assert!(
        unknown.starts_with(&format!("result -1 errno {} ", libc::ERANGE)),
        "auto with nothing known: {unknown}"
    );
    let learnt = |lab: &Lab| {
        routes(lab, sock)["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["max"]["from"] == "reset").cloned())
    };
    // A punch whose hop limit the caller fixed is reset too, but teaches nothing: a caller cannot
    // aim refusals at the route memory.
    let rejects = lab.counters("fwb1")["outside_rejects"];
    assert_eq!(try_tcp(&lab, sock, 4101, B, 4), "result 0");
    assert!(eventually(Duration::from_secs(5), || lab.counters("fwb1")
        ["outside_rejects"]
        > rejects));
    let rejects = lab.counters("fwb1")["outside_rejects"];
    // The auto punch (4) is reset: the route's maximum becomes 3.
    assert_eq!(try_tcp(&lab, sock, 4102, B, 0), "result 0");
    assert!(
        eventually(Duration::from_secs(5), || learnt(&lab).is_some()),
        "the reset taught nothing: {}",
        routes(&lab, sock)
    );
    assert!(lab.counters("fwb1")["outside_rejects"] > rejects);
    let row = learnt(&lab).expect("a learnt row");
    assert_eq!(row["max"]["value"], 3, "{row}");
    assert_eq!(row["kind"], "via", "{row}");
    // The next auto punch on that route uses 3: the daemon says so.
    assert_eq!(try_tcp(&lab, sock, 4103, B, 0), "result 0");
    let (dout, _) = daemon.finish(Duration::from_millis(200));
    let log = String::from_utf8_lossy(&dout.stderr);
    for (port, hop) in [(4101, 4), (4102, 4), (4103, 3)] {
        assert!(
            log.contains(&format!("[{A}]:{port} > [{B}]:5000 hop limit {hop}")),
            "{log}"
        );
    }
    // After a restart the lesson is still there, and auto still uses it.
    let daemon = start_daemon(&lab, sock, &args);
    let row = learnt(&lab).expect("the lesson after a restart");
    assert_eq!(row["max"]["value"], 3, "{row}");
    let caps = lab.capture(
        "A",
        &format!("tcp and src port 4104 and dst {B}"),
        1,
        Duration::from_secs(2),
        || {
            assert_eq!(try_tcp(&lab, sock, 4104, B, 0), "result 0");
        },
    );
    assert!(
        caps.iter().any(|l| l.contains("hlim 3")),
        "the auto punch after the restart: {caps:?}"
    );
    let (dout, _) = daemon.finish(Duration::from_millis(200));
    let log = String::from_utf8_lossy(&dout.stderr);
    assert!(
        log.contains(&format!("[{A}]:4104 > [{B}]:5000 hop limit 3")),
        "{log}"
    );
}

#[test]
fn a_kept_flow_is_let_go_once() {
    let prog = c_program();
    let Some(lab) = Lab::up("keepun", &[]) else {
        return;
    };
    let dir = scratch("keepun");
    let sock = dir.join("d.sock");
    let sock = sock.to_str().unwrap();
    let daemon = start_daemon(&lab, sock, &["--allow-uid", "65534", "--user", "sys"]);
    let mut cmd: Vec<String> = vec!["env".into(), format!("SYNERGY_DAEMON_SOCKET={sock}")];
    cmd.extend(NOBODY.iter().map(|s| s.to_string()));
    for a in [prog.to_str().unwrap(), "unkeep", A, "4200", B, "5200", "2"] {
        cmd.push(a.to_string());
    }
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let mut p = lab.spawn("A", &argv);
    assert!(p.wait_stdout("unkeep again", Duration::from_secs(10)));
    let st = daemon_status(&lab, sock);
    let (out, _) = p.finish(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keep 0\n"), "{text}");
    assert!(text.contains("unkeep 0\n"), "{text}");
    assert!(
        text.contains("unkeep again -1 errno No such file or directory"),
        "{text}"
    );
    assert_eq!(st["counters"]["kept_now"], 0, "{st}");
    assert_eq!(st["counters"]["ended_unkept"], 1, "{st}");
    let _ = daemon.finish(Duration::from_millis(100));
}

/// Root's `hops` writes what it found into the route memory the daemon owns (its directory is
/// the daemon's user's, the lock file 0600), and the daemon's auto takes it at once.
#[test]
fn hops_as_root_teaches_the_daemon_s_route_memory() {
    let Some(lab) = Lab::up("keephop", &[]) else {
        return;
    };
    let dir = scratch("keephop");
    let sock = dir.join("d.sock");
    let sock = sock.to_str().unwrap();
    let daemon = start_daemon(&lab, sock, &["--allow-uid", "65534", "--user", "sys"]);
    let state = format!("STATE_DIRECTORY={}", state_dir(sock).display());
    let out = lab.exec(
        "A",
        &[
            "env", &state, BIN, "hops", "--proto", "udp", "--sport", "4400", "--dst", B, "--dport",
            "5400", "--json",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = common::event(&text, "hops").expect("a hops event");
    assert_eq!(h["route_memory"]["min"]["from"], "hops", "{h}");
    let min = h["route_memory"]["min"]["value"].clone();
    assert_eq!(min, h["recommended_hop_limit"], "{h}");
    // The daemon's user still owns what it writes; the lock is nobody else's to hold.
    use std::os::unix::fs::MetadataExt;
    let lock = std::fs::metadata(state_dir(sock).join("routes.lock")).unwrap();
    assert_eq!(lock.mode() & 0o777, 0o600);
    // An auto punch through the daemon now uses the trace's hop limit.
    assert_eq!(try_tcp(&lab, sock, 4401, B, 0), "result 0");
    let (dout, _) = daemon.finish(Duration::from_millis(200));
    let log = String::from_utf8_lossy(&dout.stderr);
    assert!(
        log.contains(&format!("[{A}]:4401 > [{B}]:5000 hop limit {min}")),
        "{log}"
    );
}

/// A privileged program keeps its holes itself (no daemon), with the firewalls' timeout it was
/// told in $SYNERGY_CONNTRACK_TIMEOUT: the entries outlive several timeouts and go with it.
#[test]
fn a_privileged_program_keeps_its_own_holes() {
    let prog = c_program();
    let Some(lab) = Lab::up(
        "keepown",
        &["--timeout", "fwa1:udp=5", "--timeout", "fwa1:udp_stream=5"],
    ) else {
        return;
    };
    let timeout = sysctl(&lab, "fwa1", "net.netfilter.nf_conntrack_udp_timeout");
    let told = format!("SYNERGY_CONNTRACK_TIMEOUT=udp={timeout}s");
    // No daemon: a socket path where none listens, so that a fall-back would fail loudly.
    let mut keeper = lab.spawn(
        "A",
        &[
            "env",
            &told,
            "SYNERGY_DAEMON_SOCKET=/nonexistent/d.sock",
            prog.to_str().unwrap(),
            "keep",
            "5",
            A,
            "22000",
            B,
            "32000",
            "2",
        ],
    );
    assert!(keeper.wait_stdout("kept 5", Duration::from_secs(10)));
    let kept_at = Instant::now();
    let span = Duration::from_secs(3 * timeout);
    while kept_at.elapsed() < span {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            kept_entries(&lab, 32000..32005),
            5,
            "after {:?}",
            kept_at.elapsed()
        );
    }
    let (_, ended) = keeper.finish(Duration::from_secs(5));
    assert!(ended);
    assert!(
        eventually(Duration::from_secs(timeout + 1), || kept_entries(
            &lab,
            32000..32005
        ) == 0),
        "the holes outlived the program"
    );
}

/// A kept auto flow whose punch the peer's side refuses is sent lower from then on: with the
/// operator's range 2-4 toward B, the keeps go out at 4, fwb1 rejects them, the route's maximum
/// becomes 3 and every kept flow is punched with 3, which fwb1 no longer sees to reject.
#[test]
fn a_refused_kept_flow_is_punched_lower_from_then_on() {
    let Some(lab) = Lab::up(
        "keeplow",
        &["--remote-profile", "reject", "--timeout", "fwa1:udp=5"],
    ) else {
        return;
    };
    let timeout = sysctl(&lab, "fwa1", "net.netfilter.nf_conntrack_udp_timeout");
    let dir = scratch("keeplow");
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let ct = format!("udp={timeout}s");
    let mut daemon = start_daemon(
        &lab,
        &sock,
        &[
            "--allow-uid",
            "65534",
            "--user",
            "sys",
            "--conntrack-timeout",
            &ct,
            "--hop-range",
            "2001:db8:2::/48=2-4",
        ],
    );
    let keeper = keep_as_nobody(&lab, &sock, &[], 2, (24000, 34000), "0");
    assert!(
        daemon.wait_stderr("now punched with hop limit 3", Duration::from_secs(10)),
        "no kept flow was lowered"
    );
    // Both flows lowered (each by its own refusal), then two timeouts of repunches: fwb1 rejects
    // nothing more.
    assert!(eventually(Duration::from_secs(2 * timeout), || {
        let st = daemon_status(&lab, &sock);
        st["flows"]
            .as_array()
            .is_some_and(|f| f.len() == 2 && f.iter().all(|f| f["hop_limit"] == 3))
    }));
    let rejects = lab.counters("fwb1")["outside_rejects"];
    std::thread::sleep(Duration::from_secs(2 * timeout));
    assert_eq!(lab.counters("fwb1")["outside_rejects"], rejects);
    assert_eq!(kept_entries(&lab, 34000..34002), 2);
    let _ = keeper.finish(Duration::from_secs(2));
    let _ = daemon.finish(Duration::from_millis(100));
}
