//! Lab tests of the TCP sequences of the SocketSynergy draft through the socket API, with programs
//! that use only the documented interfaces: tests/c/synergy_test.c (compiled with cc, linked with
//! -lsynergy_craft) and the Rust example. Topology: A behind two strict local firewalls (fwa1,
//! fwa2: nf_conntrack_tcp_be_liberal=0, `ct state invalid drop`) and B behind a rejecting one
//! (fwb1: strict inside, unsolicited inbound TCP answered with a RST). A punches with hop limit 3
//! (expires at r1, past fwa2), B with 2 (expires at r1, past fwb1). "Works" is read from the
//! firewalls: data both ways, zero INVALID drops on every firewall, ASSURED on the local ones.

mod common;

use std::time::Duration;

use common::{BIN, Lab, NOBODY, Running, c_program, example, scratch, start_daemon};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";
const C: &str = "2001:db8:3::7";

fn lab(prefix: &str) -> Option<Lab> {
    let lab = Lab::up(prefix, &["--local", "2", "--remote-profile", "reject"])?;
    // What the strictness rests on is read, not assumed.
    for fw in ["fwa1", "fwa2", "fwb1"] {
        let out = lab.exec(
            fw,
            &["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_be_liberal"],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{fw}");
    }
    Some(lab)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Zero INVALID drops on every firewall, and each flow `a_port <-> b_port` ASSURED on A's local
/// firewalls (in whichever direction it was opened).
fn assert_clean(lab: &Lab, flows: &[(u16, u16)]) {
    lab.assert_no_invalid("");
    for &(a_port, b_port) in flows {
        for fw in ["fwa1", "fwa2"] {
            let e = lab
                .entry(fw, "tcp", a_port, b_port)
                .or_else(|| lab.entry(fw, "tcp", b_port, a_port))
                .unwrap_or_default();
            assert!(e.contains("[ASSURED]"), "{fw} {a_port}<->{b_port}: {e:?}");
        }
    }
}

/// A daemon on A admitting nobody (with `extra` options), and the `env` setting that points the
/// C program at it.
fn nobody_daemon(lab: &Lab, name: &str, extra: &[&str]) -> (Running, String) {
    let dir = scratch(name);
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let opts = [&["--allow-uid", "65534", "--user", "sys"][..], extra].concat();
    (
        start_daemon(lab, &sock, &opts),
        format!("SYNERGY_DAEMON_SOCKET={sock}"),
    )
}

/// Runs the C program on A as nobody through the daemon `env` names, with `args`.
fn c_as_nobody(lab: &Lab, env: &str, args: &[&str]) -> std::process::Output {
    let prog = c_program();
    let mut argv = vec!["env", env];
    argv.extend(NOBODY);
    argv.push(prog.to_str().unwrap());
    argv.extend(args);
    lab.exec("A", &argv)
}

/// socat on `node` from `[from]:port` to A's listener: sends a line, prints what comes back.
fn socat_to_a(lab: &Lab, node: &str, from: Option<(&str, u16)>, a_port: u16) -> Running {
    let bind = from.map_or(String::new(), |(ip, p)| format!(",bind=[{ip}]:{p}"));
    let line = format!("hello from {node}");
    lab.spawn(
        node,
        &[
            "sh",
            "-c",
            &format!("(echo {line}; sleep 2) | timeout 15 socat - TCP6:[{A}]:{a_port}{bind}"),
        ],
    )
}

/// The server sequence of the C program on A (`server` mode), as `user` (None: root), punched
/// for `peers`, waiting for `nconn` connections with `how` (blocking, poll, epoll).
fn c_server(
    lab: &Lab,
    env: &[String],
    as_nobody: bool,
    a_port: u16,
    nconn: usize,
    how: &str,
    peers: &[(&str, u16)],
) -> Running {
    let prog = c_program();
    let mut args: Vec<String> = vec!["env".into()];
    args.extend(env.iter().cloned());
    if as_nobody {
        args.extend(NOBODY.iter().map(|s| s.to_string()));
    }
    args.push(prog.to_str().unwrap().into());
    args.extend(
        [
            "server",
            A,
            &a_port.to_string(),
            "3",
            &nconn.to_string(),
            how,
        ]
        .map(String::from),
    );
    for (ip, port) in peers {
        args.push(ip.to_string());
        args.push(port.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut srv = lab.spawn("A", &args);
    assert!(
        srv.wait_stdout(
            &format!("punched {}", peers[peers.len() - 1].0),
            Duration::from_secs(10)
        ),
        "the server did not punch"
    );
    srv
}

fn server_with_socat(prefix: &str, as_nobody: bool, how: &str) {
    let Some(lab) = lab(prefix) else { return };
    let dir = scratch(prefix);
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let _daemon =
        as_nobody.then(|| start_daemon(&lab, &sock, &["--allow-uid", "65534", "--user", "sys"]));
    let env = vec![format!("SYNERGY_DAEMON_SOCKET={sock}")];
    let srv = c_server(&lab, &env, as_nobody, 4000, 1, how, &[(B, 5000)]);
    let peer = socat_to_a(&lab, "B", Some((B, 5000)), 4000);
    let (so, _) = srv.finish(Duration::from_secs(20));
    let (po, _) = peer.finish(Duration::from_secs(5));
    let out = text(&so.stdout);
    assert!(
        out.contains(&format!("accepted [{B}]:5000")) && out.contains("hello from B"),
        "{out} {}",
        text(&so.stderr)
    );
    assert_eq!(text(&po.stdout), "hello from C\n", "{}", text(&po.stderr));
    assert_clean(&lab, &[(4000, 5000)]);
}

#[test]
fn c_server_as_root_blocking_accept_with_socat() {
    server_with_socat("tcsrv", false, "blocking");
}

#[test]
fn c_server_as_root_after_poll_with_socat() {
    server_with_socat("tcpoll", false, "poll");
}

#[test]
fn c_server_as_nobody_through_the_daemon_after_epoll_with_socat() {
    server_with_socat("tcnob", true, "epoll");
}

/// Two punched peers on one listener (B and C) each get their own connection, and a client that
/// was never punched for (one on A itself) is served by the same listener as before.
fn two_peers_and_an_unpunched_client(prefix: &str, as_nobody: bool) {
    let Some(lab) = lab(prefix) else { return };
    let dir = scratch(prefix);
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let _daemon =
        as_nobody.then(|| start_daemon(&lab, &sock, &["--allow-uid", "65534", "--user", "sys"]));
    let env = vec![format!("SYNERGY_DAEMON_SOCKET={sock}")];
    let srv = c_server(
        &lab,
        &env,
        as_nobody,
        4000,
        3,
        "blocking",
        &[(B, 5000), (C, 6000)],
    );
    let local = socat_to_a(&lab, "A", None, 4000);
    let b = socat_to_a(&lab, "B", Some((B, 5000)), 4000);
    let c = socat_to_a(&lab, "C", Some((C, 6000)), 4000);
    let (so, _) = srv.finish(Duration::from_secs(20));
    let out = text(&so.stdout);
    for (who, line) in [
        (format!("[{B}]:5000"), "hello from B"),
        (format!("[{C}]:6000"), "hello from C"),
        (format!("[{A}]:"), "hello from A"),
    ] {
        assert!(
            out.contains(&format!("got {who}")) && out.contains(line),
            "{who}: {out} {}",
            text(&so.stderr)
        );
    }
    for r in [local, b, c] {
        let (o, _) = r.finish(Duration::from_secs(5));
        assert_eq!(text(&o.stdout), "hello from C\n", "{}", text(&o.stderr));
    }
    assert_clean(&lab, &[(4000, 5000), (4000, 6000)]);
}

#[test]
fn c_server_two_peers_and_an_unpunched_client_as_root() {
    two_peers_and_an_unpunched_client("tctwo", false);
}

#[test]
fn c_server_two_peers_and_an_unpunched_client_as_nobody() {
    two_peers_and_an_unpunched_client("tctwon", true);
}

/// Client/client with the C program's client sequence on both sides; each side retries a refused
/// attempt with a fresh socket. `a_first`: A starts first (its full SYNs meet the rejecting fwb1
/// until B has punched) and waits `a_delay_ms` between synergy() and connect(), as a program that
/// meets its peer in between does, so that B's SYN arrives while A's socket is not connecting
/// (it must be swallowed, not reset). Else B first, then A.
fn client_client(prefix: &str, as_nobody: bool, a_first: bool, a_delay_ms: u32) {
    let Some(lab) = lab(prefix) else { return };
    let dir = scratch(prefix);
    let (sa, sb) = (
        dir.join("a.sock").to_str().unwrap().to_string(),
        dir.join("b.sock").to_str().unwrap().to_string(),
    );
    let _daemons = as_nobody.then(|| {
        let b = lab.spawn(
            "B",
            &[
                BIN,
                "daemon",
                "--socket",
                &sb,
                "--allow-uid",
                "65534",
                "--user",
                "sys",
            ],
        );
        (
            start_daemon(&lab, &sa, &["--allow-uid", "65534", "--user", "sys"]),
            b,
        )
    });
    if as_nobody {
        let start = std::time::Instant::now();
        while !std::path::Path::new(&sb).exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let prog = c_program();
    let prog = prog.to_str().unwrap();
    let delay = format!("SYNERGY_TEST_CONNECT_DELAY_MS={a_delay_ms}");
    let run = |node: &str, sock: &str, args: [&str; 5]| {
        let env = format!("SYNERGY_DAEMON_SOCKET={sock}");
        let mut v: Vec<&str> = vec!["env", &env];
        if node == "A" {
            v.push(&delay);
        }
        if as_nobody {
            v.extend(NOBODY);
        }
        v.push(prog);
        v.push("client");
        v.extend(args);
        lab.spawn(node, &v)
    };
    let (a, b) = if a_first {
        let a = run("A", &sa, [A, "4000", B, "5000", "3"]);
        lab.wait_entry("fwa2", "tcp", 4000, 5000);
        (a, run("B", &sb, [B, "5000", A, "4000", "2"]))
    } else {
        let b = run("B", &sb, [B, "5000", A, "4000", "2"]);
        lab.wait_entry("fwb1", "tcp", 5000, 4000);
        (run("A", &sa, [A, "4000", B, "5000", "3"]), b)
    };
    let (ao, _) = a.finish(Duration::from_secs(30));
    let (bo, _) = b.finish(Duration::from_secs(10));
    let (aout, bout) = (text(&ao.stdout), text(&bo.stdout));
    assert!(
        aout.contains("got: hello from C"),
        "A: {aout} {}",
        text(&ao.stderr)
    );
    assert!(
        bout.contains("got: hello from C"),
        "B: {bout} {}",
        text(&bo.stderr)
    );
    assert_clean(&lab, &[(4000, 5000)]);
    let e = lab.entry("fwb1", "tcp", 5000, 4000).unwrap_or_default();
    assert!(e.contains("[ASSURED]"), "fwb1: {e:?}");
}

#[test]
fn c_client_client_as_root() {
    client_client("tccc", false, false, 0);
}

#[test]
fn c_client_client_as_nobody_through_daemons() {
    client_client("tcccn", true, false, 0);
}

#[test]
fn c_client_client_a_first_connecting_after_a_rendezvous_as_root() {
    client_client("tccca", false, true, 1500);
}

#[test]
fn c_client_client_a_first_connecting_after_a_rendezvous_as_nobody() {
    client_client("tcccan", true, true, 1500);
}

/// The Rust example does the same with the Rust calls: `tcp-listener` (bind, listen, synergy,
/// synergy_accept) with socat as the peer, and `tcp-connect` (bind, synergy_connect) on both
/// sides.
#[test]
fn rust_example_server_and_client_client() {
    let Some(lab) = lab("tcrs") else { return };
    let ex = example();
    let ex = ex.to_str().unwrap();
    // The example's server sequence from A:a_port for B:a_port+1000, run as `prefix` (empty: root).
    let serve = |prefix: &[&str], a_port: u16, who: &str| {
        let (ap, bp) = (a_port.to_string(), (a_port + 1000).to_string());
        let args = [prefix, &[ex, "tcp-listener", A, &ap, B, &bp, "3"]].concat();
        let srv = lab.spawn("A", &args);
        // The example prints nothing before the peer comes; the punch shows on fwa2's table.
        lab.wait_entry("fwa2", "tcp", a_port, a_port + 1000);
        let peer = socat_to_a(&lab, "B", Some((B, a_port + 1000)), a_port);
        let (so, _) = srv.finish(Duration::from_secs(15));
        let (po, _) = peer.finish(Duration::from_secs(5));
        assert!(
            text(&so.stdout).contains("got: hello from B"),
            "{who}: {}",
            text(&so.stderr)
        );
        assert_eq!(text(&po.stdout), "hello from Rust\n");
    };
    serve(&[], 4000, "root");
    assert_clean(&lab, &[(4000, 5000)]);

    // The same server sequence as nobody, through the daemon (no CAP_NET_ADMIN in the program).
    let dir = scratch("tcrs");
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let daemon = start_daemon(&lab, &sock, &["--allow-uid", "65534", "--user", "sys"]);
    let env = format!("SYNERGY_DAEMON_SOCKET={sock}");
    serve(
        &[&["env", env.as_str()][..], &NOBODY[..]].concat(),
        4200,
        "nobody",
    );
    drop(daemon);

    let b = lab.spawn("B", &[ex, "tcp-connect", B, "5100", A, "4100", "2"]);
    lab.wait_entry("fwb1", "tcp", 5100, 4100);
    let a = lab.spawn("A", &[ex, "tcp-connect", A, "4100", B, "5100", "3"]);
    let (ao, _) = a.finish(Duration::from_secs(30));
    let (bo, _) = b.finish(Duration::from_secs(10));
    assert!(
        text(&ao.stdout).contains("got: hello from Rust"),
        "A: {}",
        text(&ao.stderr)
    );
    assert!(
        text(&bo.stdout).contains("got: hello from Rust"),
        "B: {}",
        text(&bo.stderr)
    );
    assert_clean(&lab, &[(4000, 5000), (4100, 5100), (4200, 5200)]);
}

/// An attacker's race against the client path through the daemon: while synergy() runs, a
/// second thread keeps trying a repair-only option (TCP_REPAIR_QUEUE, which the kernel checks
/// against the socket's repair mode alone) on the caller's descriptor. The daemon never puts a
/// socket the caller can reach into repair mode, so the kernel refuses every try; every punch
/// still succeeds.
#[test]
fn client_path_never_lends_repair_mode_to_the_caller() {
    let Some(lab) = lab("tcrace") else { return };
    let (_daemon, env) = nobody_daemon(&lab, "tcrace", &["--rate", "1000"]);
    let out = c_as_nobody(
        &lab,
        &env,
        &["repairrace", A, "20000", B, "5000", "3", "100"],
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "{o} {}", text(&out.stderr));
    assert!(o.contains("repair wins 0\n"), "{o}");
    assert!(o.contains("synergy ok 100\n"), "{o}");
}

/// A listener with a socket filter of its own is refused (EBUSY) rather than having it replaced,
/// and so is one that has locked its filter (SO_LOCK_FILTER, with no filter: the kernel refuses
/// any filter with EPERM, and the refusal says EBUSY, not EPERM, which means a privilege
/// problem); as root, since this kernel refuses socket filters to unprivileged users
/// (kernel.unprivileged_bpf_disabled), so only a privileged program can have one.
#[test]
fn listener_with_a_filter_of_its_own_is_refused() {
    let Some(lab) = lab("tcfilt") else { return };
    let prog = c_program();
    for (port, how) in [("4122", "filter"), ("4123", "lockfilter")] {
        let out = lab.exec(
            "A",
            &[
                prog.to_str().unwrap(),
                "try",
                "tcp",
                A,
                port,
                B,
                "5555",
                "3",
                "listen",
                how,
            ],
        );
        let o = text(&out.stdout);
        assert!(
            o.contains(&format!("result -1 errno {} ", libc::EBUSY)),
            "{how}: {o} {}",
            text(&out.stderr)
        );
        assert!(
            lab.entry("fwa1", "tcp", port.parse().unwrap(), 5555)
                .is_none(),
            "{how}: nothing was sent"
        );
    }
}

/// The sockets the daemon makes for a caller belong to the daemon's user, so a caller must not be
/// able to use one for anything but its peer (it would pass egress rules that match the socket's
/// owner under another name): the socket is filtered to the peer and the filter locked. As
/// nobody: synergy() toward B, then connect() to C (a listening socat) instead: never connected,
/// C gets nothing; the filter cannot be detached. Toward B the same sequence works (other tests).
#[test]
fn a_socket_made_for_a_caller_reaches_its_peer_alone() {
    let Some(lab) = lab("tclaund") else { return };
    let (_daemon, env) = nobody_daemon(&lab, "tclaund", &[]);
    let mut c = lab.spawn(
        "C",
        &[
            "timeout",
            "10",
            "socat",
            "-u",
            &format!("TCP6-LISTEN:7000,bind=[{C}]"),
            "-",
        ],
    );
    // socat listens once its port shows in C's socket table.
    let start = std::time::Instant::now();
    while !text(&lab.exec("C", &["ss", "-Htln", "sport = :7000"]).stdout).contains("7000") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "socat on C did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c_as_nobody(
        &lab,
        &env,
        &["launder", A, "4300", B, "5000", "3", C, "7000"],
    );
    let o = text(&out.stdout);
    assert!(o.contains("not connected"), "{o} {}", text(&out.stderr));
    assert!(!o.contains("detach worked"), "{o}");
    c.close_stdin();
    let (co, _) = c.finish(Duration::from_secs(12));
    assert!(!text(&co.stdout).contains("laundered"), "C received data");
}

/// A kept listener (`synergy_keep` on the server sequence, as nobody through the daemon) keeps
/// its hole through the local firewalls' SYN_SENT timeout: with fwa1 and fwa2 forgetting an
/// unanswered SYN after 10 s (read from their sysctl) and the daemon told so, the peer that comes
/// after 1.7 timeouts (when a punch of plain synergy(), repeated every 20 s, has lapsed) gets in
/// with its first SYN (no drop on A's firewalls), and the connection is clean.
#[test]
fn a_kept_listener_outlives_the_syn_sent_timeout() {
    let Some(lab) = Lab::up(
        "tckeep",
        &[
            "--local",
            "2",
            "--remote-profile",
            "reject",
            "--timeout",
            "fwa1:tcp_syn_sent=10",
            "--timeout",
            "fwa2:tcp_syn_sent=10",
        ],
    ) else {
        return;
    };
    let timeout: u64 = ["fwa1", "fwa2"]
        .iter()
        .map(|fw| {
            let out = lab.exec(
                fw,
                &[
                    "sysctl",
                    "-n",
                    "net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
                ],
            );
            text(&out.stdout).trim().parse::<u64>().expect("a timeout")
        })
        .max()
        .unwrap();
    let ct = format!("tcp={timeout}s");
    let (_daemon, env) = nobody_daemon(&lab, "tckeep", &["--conntrack-timeout", &ct]);
    let srv = c_server(
        &lab,
        &[env, "SYNERGY_TEST_KEEP=1".into()],
        true,
        4300,
        1,
        "poll",
        &[(B, 5300)],
    );
    let started = std::time::Instant::now();
    let drops = |lab: &Lab| -> u64 {
        ["fwa1", "fwa2"]
            .iter()
            .map(|fw| lab.counters(fw)["outside_drops"])
            .sum()
    };
    let before = drops(&lab);
    // 1.7 timeouts: a hole punched once at the start (or every 20 s) would be gone now.
    std::thread::sleep(Duration::from_millis(timeout * 1700).saturating_sub(started.elapsed()));
    let peer = socat_to_a(&lab, "B", Some((B, 5300)), 4300);
    let (so, _) = srv.finish(Duration::from_secs(15));
    let (po, _) = peer.finish(Duration::from_secs(5));
    let out = text(&so.stdout);
    assert!(
        out.contains(&format!("accepted [{B}]:5300")) && out.contains("hello from B"),
        "{out} {}",
        text(&so.stderr)
    );
    assert_eq!(text(&po.stdout), "hello from C\n", "{}", text(&po.stderr));
    assert_eq!(
        drops(&lab),
        before,
        "the peer's SYN was dropped: the hole had lapsed"
    );
    assert_clean(&lab, &[(4300, 5300)]);
}
