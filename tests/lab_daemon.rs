//! Lab tests of the daemon against hostile local users: every attack of issue #10 driven as
//! `nobody` through the C ABI (from its own `unshare -Urn` namespace where that is the attack) is
//! refused with its documented errno while nothing leaves the host, and a stranger's datagrams to
//! root's UDP services stay blocked; an honest caller is served while idle connections and a
//! blocking close are pending, and a late request is not punched for; the socket file is made and
//! removed safely; the daemon runs unprivileged.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{BIN, Lab, NOBODY, c_program, in_netns, scratch, start_daemon, start_daemon_env};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";

/// Runs the C program's `try` mode as nobody on A and returns the errno (0 for success).
fn attempt(lab: &Lab, env: &[String], wrap: &[&str], args: &[&str]) -> (i32, String) {
    let prog = c_program();
    let mut cmd: Vec<String> = vec!["env".into()];
    cmd.extend(env.iter().cloned());
    cmd.extend(NOBODY.iter().map(|s| s.to_string()));
    cmd.extend(wrap.iter().map(|s| s.to_string()));
    cmd.push(prog.to_str().unwrap().into());
    cmd.push("try".into());
    cmd.extend(args.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = lab.exec("A", &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {text}{err}");
    let line = text
        .lines()
        .find(|l| l.starts_with("result "))
        .unwrap_or("");
    let errno = if line == "result 0" {
        0
    } else {
        line.split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    };
    (errno, format!("{text}{err}"))
}

/// A root UDP service on A: a socket bound to `addr`:`port`, with SO_REUSEADDR like mDNS.
fn root_service(lab: &Lab, addr: &str, port: u16) -> UdpSocket {
    let bind = format!("[{addr}]:{port}");
    in_netns(lab, "A", move || {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&bind.parse::<std::net::SocketAddr>().unwrap().into())
            .unwrap();
        s.set_nonblocking(true).unwrap();
        UdpSocket::from(s)
    })
}

/// Waits until fwa1's outside_drops counter reaches `want` (the stranger's datagrams arrived and
/// were dropped), at most 5 s.
fn wait_drops(lab: &Lab, want: u64) -> u64 {
    let start = Instant::now();
    loop {
        let now = lab.counters("fwa1")["outside_drops"];
        if now >= want || start.elapsed() > Duration::from_secs(5) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attacks_are_refused_with_their_errno_and_nothing_leaves() {
    let Some(lab) = Lab::up("dmnatk", &[]) else {
        return;
    };
    let dir = scratch("attacks");
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    // A rate that the twenty attempts below stay under: each must meet its own check.
    let daemon = start_daemon(
        &lab,
        &sock,
        &[
            "--allow-uid",
            "65534",
            "--max-hop",
            "4",
            "--rate",
            "1000",
            "--user",
            "sys",
        ],
    );
    // Root's UDP services: mDNS-like on [::]:5353 with SO_REUSEADDR, and one on A:53.
    let mdns = root_service(&lab, "::", 5353);
    let dns = root_service(&lab, A, 53);
    // ICMPv6 ping sockets for nobody, as some distributions allow.
    lab.exec("A", &["sysctl", "-q", "net.ipv4.ping_group_range=0 65534"]);
    let fw_link = lab.addr("fwa1");
    let env = vec![format!("SYNERGY_DAEMON_SOCKET={sock}")];
    // In its own user namespace, root's uid is not mapped: it sees the daemon's listener as the
    // overflow uid, and an attacker sets what its client trusts.
    let mut userns_env = env.clone();
    userns_env.push("SYNERGY_DAEMON_UID=65534".into());
    let unshare = [
        "unshare",
        "-Urn",
        "sh",
        "-c",
        "ip link set lo up && ip addr add 2001:db8:1::11/64 dev lo nodad && exec \"$@\"",
        "attack",
    ];
    let fw = fw_link.to_string();
    // (what, from its own user and network namespace, `try` arguments, errno).
    let cases: [(&str, bool, Vec<&str>, i32); 21] = [
        (
            "spoofed remote source (freebind)",
            false,
            vec!["udp", B, "5354", "2001:db8:2::9", "5555", "4", "freebind"],
            libc::EADDRNOTAVAIL,
        ),
        (
            "spoofed router source (freebind)",
            false,
            vec!["tcp", &fw, "8022", B, "5555", "4", "freebind"],
            libc::EADDRNOTAVAIL,
        ),
        (
            "own address with freebind",
            false,
            vec!["udp", A, "4100", B, "5555", "2", "freebind"],
            libc::EADDRNOTAVAIL,
        ),
        (
            "own network namespace",
            true,
            vec!["udp", A, "53", B, "5555", "2"],
            libc::EXDEV,
        ),
        (
            "own network namespace, tcp",
            true,
            vec!["tcp", A, "22", B, "5555", "2"],
            libc::EXDEV,
        ),
        (
            "udp-lite on root's port",
            false,
            vec!["udplite", A, "5353", B, "5555", "2"],
            libc::EPROTONOSUPPORT,
        ),
        (
            "icmpv6 ping socket",
            false,
            vec!["ping", A, "5353", B, "5555", "2"],
            libc::EPROTONOSUPPORT,
        ),
        (
            "port shared with root (SO_REUSEADDR)",
            false,
            vec!["udp", A, "5353", B, "5555", "2", "reuseaddr"],
            libc::EADDRINUSE,
        ),
        (
            "MPTCP socket whose connect failed (it holds no port)",
            false,
            vec!["mptcp", A, "0", B, "5555", "2", "stale"],
            libc::EADDRINUSE,
        ),
        (
            "MPTCP socket bound, not connected (neither TCP sequence reaches its subflows)",
            false,
            vec!["mptcp", A, "4120", B, "5555", "2"],
            libc::EPROTONOSUPPORT,
        ),
        (
            "TCP listener in an SO_REUSEPORT group",
            false,
            vec!["tcp", A, "4121", B, "5555", "2", "reuseport", "listen"],
            libc::EOPNOTSUPP,
        ),
        (
            "source ::",
            false,
            vec!["udp", "::", "4102", B, "5555", "2"],
            libc::EADDRNOTAVAIL,
        ),
        (
            "source ::1",
            false,
            vec!["udp", "::1", "4103", B, "5555", "2"],
            libc::EADDRNOTAVAIL,
        ),
        (
            "source IPv4-mapped",
            false,
            vec!["udp", "::ffff:127.0.0.1", "4104", B, "5555", "2", "mapped"],
            libc::EADDRNOTAVAIL,
        ),
        (
            "peer multicast",
            false,
            vec!["udp", A, "4105", "ff02::1", "5555", "2"],
            libc::EDESTADDRREQ,
        ),
        (
            "peer ::",
            false,
            vec!["udp", A, "4106", "::", "5555", "2"],
            libc::EDESTADDRREQ,
        ),
        (
            "peer ::1",
            false,
            vec!["udp", A, "4107", "::1", "5555", "2"],
            libc::EDESTADDRREQ,
        ),
        (
            "peer is this host",
            false,
            vec!["udp", A, "4108", A, "5555", "2"],
            libc::EDESTADDRREQ,
        ),
        (
            "peer IPv4-mapped",
            false,
            vec!["udp", A, "4109", "::ffff:192.0.2.1", "5555", "2"],
            libc::EDESTADDRREQ,
        ),
        (
            "peer port 0",
            false,
            vec!["udp", A, "4110", B, "0", "2"],
            libc::EDESTADDRREQ,
        ),
        (
            "hop limit above the range",
            false,
            vec!["udp", A, "4112", B, "5555", "9"],
            libc::ERANGE,
        ),
    ];
    let captured = lab.capture(
        "A",
        // What leaves A for another host (the MPTCP case's own SYN to A's closed port stays on lo).
        &format!("ip6 and (tcp or udp or ip6 proto 132) and not dst host {A}"),
        1,
        Duration::from_millis(300),
        || {
            for (name, own_netns, args, want) in &cases {
                let (got, out) = if *own_netns {
                    attempt(&lab, &userns_env, &unshare, args)
                } else {
                    attempt(&lab, &env, &[], args)
                };
                assert_eq!(got, *want, "{name}: {out}");
            }
            // A link-local source the host does not have (the kernel lets it be bound with
            // net.ipv6.ip_nonlocal_bind, as freebind does per socket).
            lab.exec("A", &["sysctl", "-q", "net.ipv6.ip_nonlocal_bind=1"]);
            let (got, out) = attempt(
                &lab,
                &env,
                &[],
                &[
                    "udp",
                    "fe80::1234%to-fwa1",
                    "4111",
                    "fe80::1%to-fwa1",
                    "5555",
                    "2",
                ],
            );
            lab.exec("A", &["sysctl", "-q", "net.ipv6.ip_nonlocal_bind=0"]);
            assert_eq!(got, libc::EADDRNOTAVAIL, "link-local not assigned: {out}");
        },
    );
    assert!(
        captured.is_empty(),
        "an attack sent something: {captured:?}"
    );

    // A stranger (B, from the peer port the attacks named) sends to root's services: the local
    // firewall drops every datagram, and root's sockets receive none.
    let before = lab.counters("fwa1")["outside_drops"];
    for port in ["5353", "53"] {
        let out = lab.exec(
            "B",
            &[
                "sh",
                "-c",
                &format!("echo stranger | nc -6 -u -w 1 -s {B} -p 5555 {A} {port}"),
            ],
        );
        assert!(out.status.success() || out.status.code() == Some(1));
    }
    let after = wait_drops(&lab, before + 2);
    assert!(
        after >= before + 2,
        "the stranger's datagrams did not reach fwa1: {before} -> {after}"
    );
    let mut buf = [0u8; 64];
    assert!(
        mdns.recv_from(&mut buf).is_err(),
        "root's [::]:5353 received the stranger"
    );
    assert!(
        dns.recv_from(&mut buf).is_err(),
        "root's A:53 received the stranger"
    );
    for proto in ["udp", "tcp"] {
        for port in [5353, 53, 22] {
            assert!(
                lab.entry("fwa1", proto, port, 5555).is_none(),
                "{proto} {port}: a hole was made"
            );
        }
    }
    let (out, _) = daemon.finish(Duration::from_millis(100));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("punched"), "{log}");
    // Refusals are logged, but at most a few lines per uid and window, then a summary.
    assert!(
        log.matches("uid 65534 gid 65534: refused").count() <= 5,
        "{log}"
    );
    assert!(log.contains("counted, not logged"), "{log}");
}

/// Twenty idle connections of another uid and a passed socket whose last close blocks (when the
/// staller wins its race, retried up to five times) do not hold up an honest caller; a request
/// that comes after the deadline is not punched for.
#[test]
fn honest_caller_is_served_while_idle_callers_and_a_blocking_close_are_pending() {
    let Some(lab) = Lab::up("dmnstl", &[]) else {
        return;
    };
    let prog = c_program();
    let prog = prog.to_str().unwrap();
    let dir = scratch("stall");
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let mut daemon = start_daemon_env(
        &lab,
        &["RUST_LOG=synergy_craft=debug"],
        &sock,
        &[
            "--allow-uid",
            "65534",
            "--allow-uid",
            "1",
            // Not nobody, which it admits (the daemon refuses to run as a caller's uid).
            "--user",
            "sys",
            "--request-timeout",
            "400ms",
        ],
    );
    let env = format!("SYNERGY_DAEMON_SOCKET={sock}");
    // Two stallers, each with 20 idle connections: uid 1 is admitted and passes a socket whose
    // close blocks; uid 2 is not admitted, and may not even send its socket (SO_PASSRIGHTS).
    let stall = |uid: &str| {
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
        let mut staller = lab.spawn(
            "A",
            &[
                "env",
                &env,
                "setpriv",
                &reuid,
                &regid,
                "--clear-groups",
                "--inh-caps=-all",
                prog,
                "stall",
                &sock,
                "20",
            ],
        );
        let mut line = String::new();
        {
            use std::io::BufRead;
            let out = staller.child.stdout.as_mut().unwrap();
            std::io::BufReader::new(out).read_line(&mut line).unwrap();
        }
        (staller, line.trim().to_string())
    };
    // The staller closes its copy right after passing it, so that the daemon's close is the last
    // one, the one that lingers; when the daemon happens to close first, the staller says
    // "lost" and another one tries (a race the staller has no way to win every time).
    let mut tries = 0;
    let (mut admitted, said) = loop {
        tries += 1;
        let (s, said) = stall("1");
        if said != "stalling: lost (the daemon closed its copy first)" || tries == 5 {
            break (s, said);
        }
        let mut s = s;
        s.close_stdin();
        let _ = s.finish(Duration::from_secs(2));
    };
    assert_eq!(said, "stalling: passed");
    let (mut refused, said) = stall("2");
    assert!(said.starts_with("stalling: refused"), "{said}");
    let mut cmd = vec!["env", &env];
    cmd.extend(NOBODY);
    cmd.extend([prog, "time", "udp", A, "4200", B, "5555", "2"]);
    let out = lab.exec("A", &cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(": ok"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab.entry("fwa1", "udp", 4200, 5555).is_some(),
        "the honest punch made no entry"
    );

    // A request sent after the deadline: refused as late, and nothing is punched.
    let s = sock.clone();
    let late = in_netns(&lab, "A", move || {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let udp = UdpSocket::bind(format!("[{A}]:4201")).unwrap();
        let conn = std::os::unix::net::UnixStream::connect(&s).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let req = synergy_craft::daemon::proto::Request {
            hop_limit: 2,
            peer: Some(format!("[{B}]:5555").parse().unwrap()),
            op: Default::default(),
        }
        .emit();
        let _ = synergy_craft::daemon::client::send_with_fds(
            conn.as_raw_fd(),
            &req,
            &[udp.as_raw_fd()],
        );
        let mut answer = String::new();
        let _ = (&conn).read_to_string(&mut answer);
        // The daemon spoke first ("ready": uid 0 is admitted), then refused the late request.
        answer
            .strip_prefix(synergy_craft::daemon::proto::READY)
            .unwrap_or(&answer)
            .to_string()
    });
    assert!(
        late.starts_with(&format!("err {} ", libc::ETIMEDOUT)),
        "{late}"
    );
    assert!(
        lab.entry("fwa1", "udp", 4201, 5555).is_none(),
        "a late request was punched for"
    );
    for s in [&mut admitted, &mut refused] {
        s.close_stdin();
    }
    let _ = admitted.finish(Duration::from_secs(2));
    let _ = refused.finish(Duration::from_secs(2));
    daemon.close_stdin();
    let (dout, _) = daemon.finish(Duration::from_millis(300));
    let log = String::from_utf8_lossy(&dout.stderr);
    // Whether the daemon's close of the lingering socket was the last (and so blocked, and was
    // interrupted) depends on a race the staller cannot always win (see above); the test's claim
    // is that the honest caller was served meanwhile, asserted above. Said, not asserted: #14.
    if !log.contains("interrupting a close") {
        eprintln!("note: this run's lingering close was not the daemon's (a lost race)");
    }
    assert!(
        log.contains("uid 65534 gid 65534: punched udp [2001:db8:1::11]:4200"),
        "{log}"
    );
}

/// The socket file: group access with --group (a supplementary group counts), deny by default, a
/// second daemon refuses to start, a planted symlink is not followed, a directory others may
/// write is refused, and the file is gone after SIGTERM.
#[test]
fn socket_file_is_made_and_removed_safely() {
    let Some(lab) = Lab::up("dmnsock", &[]) else {
        return;
    };
    let prog = c_program();
    let prog = prog.to_str().unwrap();
    let dir = scratch("sockfile");
    let sock = dir.join("g.sock").to_str().unwrap().to_string();
    let daemon = start_daemon(&lab, &sock, &["--group", "users"]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, 100, 0o660)
    );
    let env = format!("SYNERGY_DAEMON_SOCKET={sock}");
    let run = |groups: &str, port: &str| {
        let out = lab.exec(
            "A",
            &[
                "env",
                &env,
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                groups,
                "--inh-caps=-all",
                prog,
                "try",
                "udp",
                A,
                port,
                B,
                "5555",
                "2",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        run("--groups=100", "4300").trim(),
        "result 0",
        "a member of users is served"
    );
    assert!(run("--clear-groups", "4301").contains(&format!("errno {} ", libc::EACCES)));

    // A second daemon on the same path refuses to start and leaves the first one's socket.
    let second = lab.exec("A", &[BIN, "daemon", "--socket", &sock]);
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another daemon answers"));
    assert_eq!(
        run("--groups=100", "4302").trim(),
        "result 0",
        "the first daemon still serves"
    );

    // SIGTERM: the daemon ends and its socket file is gone.
    let pid = daemon.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (out, ended) = daemon.finish(Duration::from_secs(5));
    assert!(ended, "the daemon did not end on SIGTERM");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !Path::new(&sock).exists(),
        "the socket file outlived the daemon"
    );

    // Deny by default: without --allow-uid/--allow-gid/--group only root is admitted.
    let d = start_daemon(&lab, &sock, &[]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(run("--groups=100", "4303").contains(&format!("errno {} ", libc::EACCES)));
    drop(d);

    // A symlink planted in a sticky, world-writable directory is not followed.
    let sticky = scratch("sticky");
    std::process::Command::new("chmod")
        .arg("1777")
        .arg(&sticky)
        .status()
        .unwrap();
    let target = sticky.join("target");
    std::fs::write(&target, "x").unwrap();
    std::process::Command::new("chmod")
        .arg("600")
        .arg(&target)
        .status()
        .unwrap();
    let planted = sticky.join("d.sock");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let out = lab.exec(
        "A",
        &[
            BIN,
            "daemon",
            "--socket",
            planted.to_str().unwrap(),
            "--mode",
            "666",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
    assert!(
        std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A directory others may write to (not sticky) is refused.
    let open = scratch("open");
    std::process::Command::new("chmod")
        .arg("777")
        .arg(&open)
        .status()
        .unwrap();
    let out = lab.exec(
        "A",
        &[
            BIN,
            "daemon",
            "--socket",
            open.join("d.sock").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("can be written by others"));
}

/// Asserts that every capability set in a /proc status is empty.
fn no_capabilities(who: &str, st: &std::collections::HashMap<String, String>) {
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[cap], "0000000000000000", "{who} {cap}");
    }
}

fn status_fields(pid: u32) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// After start-up the daemon runs as nobody with no-new-privs, an empty bounding set and nothing
/// but CAP_NET_ADMIN, permitted and not effective (a thread raises it for TCP_REPAIR alone; the
/// SYN watch, which only reads, holds none); its janitor keeps uid 0 (to remove the socket file)
/// but no capability at all. Read per thread: capability sets are per thread.
#[test]
fn daemon_runs_unprivileged_after_start() {
    let Some(lab) = Lab::up("dmnpriv", &[]) else {
        return;
    };
    let dir = scratch("priv");
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let daemon = start_daemon(&lab, &sock, &[]);
    let pid = daemon.child.id();
    // The socket file appears before the privilege is dropped: wait for the uid to change.
    let start = Instant::now();
    while status_fields(pid)["Uid"] != "65534\t65534\t65534\t65534"
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = status_fields(pid);
    assert_eq!(st["Uid"], "65534\t65534\t65534\t65534", "{st:?}");
    assert_eq!(st["Gid"], "65534\t65534\t65534\t65534", "{st:?}");
    assert_eq!(st["Groups"], "", "{st:?}");
    assert_eq!(st["NoNewPrivs"], "1");
    let net_admin = format!("{:016x}", 1u64 << 12);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name();
        let ts: std::collections::HashMap<String, String> =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", tid.to_string_lossy()))
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect();
        // The threads that may punch keep CAP_NET_ADMIN permitted for TCP_REPAIR; the SYN watch,
        // the closer and its watchdog, which only read and close, the keeper, the route learner
        // and the exit watch, which send and read through descriptors opened before, hold none
        // (capabilities are per thread).
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/task/{}/comm", tid.to_string_lossy()))
                .unwrap_or_default();
        let permitted = if [
            "syn-watch",
            "closer",
            "close-watchdog",
            "synergy-keeper",
            "route-learner",
            "exit-watch",
        ]
        .contains(&comm.trim())
        {
            "0000000000000000"
        } else {
            net_admin.as_str()
        };
        for (cap, want) in [
            ("CapInh", "0000000000000000"),
            ("CapPrm", permitted),
            ("CapEff", "0000000000000000"),
            ("CapBnd", "0000000000000000"),
            ("CapAmb", "0000000000000000"),
        ] {
            assert_eq!(ts[cap], want, "daemon thread {tid:?} {cap}");
        }
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let janitor: u32 = children
        .split_whitespace()
        .next()
        .expect("a janitor")
        .parse()
        .unwrap();
    let js = status_fields(janitor);
    assert_eq!(js["NoNewPrivs"], "1");
    no_capabilities("janitor", &js);
}

/// The client side: a daemon that does not take the connection, one set up by another user than
/// root, and one that answers garbage are each reported with their errno, never as success.
#[test]
fn unavailable_untrusted_and_garbled_daemons_are_told_apart() {
    let Some(lab) = Lab::up("dmncli", &[]) else {
        return;
    };
    let dir = scratch("client");
    // Sticky and open to all, so that nobody can make its fake socket here too.
    std::process::Command::new("chmod")
        .arg("1777")
        .arg(&dir)
        .status()
        .unwrap();
    // `timeout` turns a client that hangs into a failed attempt (exit 124), not a hung test.
    let attempt_at = |sock: &str, port: &str| {
        attempt(
            &lab,
            &[format!("SYNERGY_DAEMON_SOCKET={sock}")],
            &["timeout", "20"],
            &["udp", A, port, B, "5555", "2"],
        )
    };
    // A "daemon" whose backlog is full: connect() must not hang (ECONNREFUSED within 5 s).
    let full = dir.join("full.sock").to_str().unwrap().to_string();
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&full).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    std::process::Command::new("chmod")
        .args(["666", &full])
        .status()
        .unwrap();
    let _filler = std::os::unix::net::UnixStream::connect(&full).unwrap();
    let (got, out) = attempt_at(&full, "4400");
    assert_eq!(got, libc::ECONNREFUSED, "full backlog: {out}");

    // A fake set up by nobody that says "ok": not trusted, nothing punched. Then root's own fake
    // that answers "err 0": neither a success nor a refusal.
    let fake = |name: &str, as_nobody: bool, answer: &str| {
        let path = dir.join(name).to_str().unwrap().to_string();
        let mut cmd: Vec<String> = if as_nobody {
            NOBODY.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        };
        cmd.extend([
            "socat".to_string(),
            format!("UNIX-LISTEN:{path},fork,mode=666"),
            format!("SYSTEM:touch {path}.hit; echo {answer}"),
        ]);
        let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let running = lab.spawn("A", &argv);
        let start = Instant::now();
        while !Path::new(&path).exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        (path, running)
    };
    let (liar, liar_proc) = fake("liar.sock", true, "ok punched");
    let (got, out) = attempt_at(&liar, "4401");
    assert_eq!(got, libc::ECONNREFUSED, "nobody's fake daemon: {out}");
    let (garbled, garbler) = fake("garbled.sock", false, "err 0 fake");
    let (got, out) = attempt_at(&garbled, "4402");
    assert_eq!(got, libc::EPROTO, "garbled answer: {out}");
    // A setgid program ignores $SYNERGY_DAEMON_SOCKET (secure_getenv): root's fake that would say
    // "ok" is never asked, whatever the caller's environment says.
    let (honey, honeypot) = fake("honey.sock", false, "ok punched");
    let setgid = dir.join("synergy_test_setgid");
    std::fs::copy(c_program(), &setgid).unwrap();
    let setgid = setgid.to_str().unwrap().to_string();
    for (what, mode) in [("chown", "root:users"), ("chmod", "2755")] {
        assert!(
            std::process::Command::new(what)
                .args([mode, &setgid])
                .status()
                .unwrap()
                .success()
        );
    }
    let env = format!("SYNERGY_DAEMON_SOCKET={honey}");
    let mut cmd = vec!["env", &env];
    cmd.extend(NOBODY);
    cmd.extend([
        "timeout", "20", &setgid, "try", "udp", A, "4403", B, "5555", "2",
    ]);
    let out = lab.exec("A", &cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("result -1 "),
        "the setgid program was served: {text}"
    );
    assert!(
        !Path::new(&format!("{honey}.hit")).exists(),
        "the setgid program asked the daemon its environment named"
    );
    // The same program without the setgid bit does ask it (the check above can fail).
    let (got, out) = attempt_at(&honey, "4404");
    assert_eq!(
        got, 0,
        "the plain program did not use its environment: {out}"
    );
    assert!(Path::new(&format!("{honey}.hit")).exists());
    for p in [liar_proc, garbler, honeypot] {
        let _ = p.finish(Duration::from_millis(10));
    }
    for port in [4400, 4401, 4402, 4403] {
        assert!(
            lab.entry("fwa1", "udp", port, 5555).is_none(),
            "{port}: something was punched"
        );
    }
}
