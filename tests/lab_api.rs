//! Lab tests of the synergy() API: the Rust example and a C program linked against
//! libsynergy_craft.so punch for a TCP listener and a UDP socket and the peer gets in; the C ABI's
//! errno semantics; an unprivileged user punches through the daemon; and the daemon refuses, with
//! a reason and without sending anything, what its policy forbids, and survives malformed requests.

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{Lab, NOBODY, c_program, example, in_netns, scratch, start_daemon};
use synergy_craft::daemon::client::exchange;
use synergy_craft::daemon::proto::Request;

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";

/// Runs `prog` (already with its arguments) on A and the peer on B; both must see each other's line.
fn talk(
    lab: &Lab,
    a_cmd: &[&str],
    proto: &str,
    port: u16,
    env: &[(&str, &str)],
) -> (String, String, String) {
    let (p, q) = (port.to_string(), (port + 1000).to_string());
    let mut full: Vec<String> = vec!["env".into()];
    full.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    full.extend(a_cmd.iter().map(|s| s.to_string()));
    full.extend([proto, A, &p, B, &q, "2"].map(String::from));
    let args: Vec<&str> = full.iter().map(String::as_str).collect();
    let a = lab.spawn("A", &args);
    // The punch is seen on fwa1 (its entry for the flow) before the peer starts.
    let l4 = if proto.starts_with("tcp") {
        "tcp"
    } else {
        "udp"
    };
    lab.wait_entry("fwa1", l4, port, port + 1000);
    let peer = if proto.starts_with("tcp") {
        format!("(echo hello from B; sleep 2) | socat - TCP6:[{A}]:{p},bind=[{B}]:{q}")
    } else {
        format!("(echo hello from B; sleep 2) | nc -6 -u -w 2 -s {B} -p {q} {A} {p}")
    };
    let b = lab.spawn("B", &["sh", "-c", &peer]);
    let (ao, _) = a.finish(Duration::from_secs(12));
    let (bo, _) = b.finish(Duration::from_secs(5));
    let s = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    (s(&ao.stdout), s(&ao.stderr), s(&bo.stdout))
}

#[test]
fn rust_example_punches_for_tcp_and_udp() {
    let Some(lab) = Lab::up("apirs", &[]) else {
        return;
    };
    let ex = example();
    let ex = ex.to_str().unwrap();
    for (proto, port) in [("tcp", 4444), ("udp", 4445)] {
        let (out, err, peer) = talk(&lab, &[ex], proto, port, &[]);
        assert!(out.contains("got: hello from B"), "{proto}: {out} {err}");
        assert_eq!(peer, "hello from Rust\n", "{proto}: {err}");
    }
    // The original sequence on a std TcpListener (bind, listen, synergy, accept through the
    // library's synergy_accept), through the same strict firewall.
    let (out, err, peer) = talk(&lab, &[ex], "tcp-listener", 4446, &[]);
    assert!(
        out.contains("got: hello from B"),
        "tcp-listener: {out} {err}"
    );
    assert_eq!(peer, "hello from Rust\n", "tcp-listener: {err}");
    assert_eq!(lab.counters("fwa1")["invalid_drops"], 0);
}

/// The C program uses synergy() with its original semantics and the draft's sequences (for TCP
/// the library's accept() hands over the punched connection), through strict firewalls
/// (nf_conntrack_tcp_be_liberal=0, read from the firewall).
#[test]
fn c_program_punches_for_udp_and_tcp() {
    let prog = c_program();
    let prog = prog.to_str().unwrap();
    let Some(lab) = Lab::up("apic", &[]) else {
        return;
    };
    let liberal = lab.exec(
        "fwa1",
        &["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_be_liberal"],
    );
    assert_eq!(String::from_utf8_lossy(&liberal.stdout).trim(), "0");
    for (proto, port) in [("udp", 4445), ("tcp", 4444)] {
        let (out, err, peer) = talk(&lab, &[prog], proto, port, &[]);
        assert!(
            out.contains("punched") && out.contains("got: hello from B"),
            "{proto}: {out} {err}"
        );
        assert_eq!(peer, "hello from C\n", "{proto}: {err}");
    }
    assert_eq!(lab.counters("fwa1")["invalid_drops"], 0);
}

#[test]
fn c_abi_errno_semantics() {
    let prog = c_program();
    let Some(lab) = Lab::up("apierr", &[]) else {
        return;
    };
    let out = lab.exec("A", &[prog.to_str().unwrap(), "errno", A]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("ok ").count(), 4, "{text}");
}

/// `nobody`, without any capability, punches through the daemon: the C ABI and the Rust API both
/// fall back to it by themselves, and the peer gets in.
#[test]
fn unprivileged_user_punches_through_the_daemon() {
    let prog = c_program();
    let Some(lab) = Lab::up("apidmn", &[]) else {
        return;
    };
    let dir = scratch("daemon");
    let sock = dir.join("d.sock");
    let sock = sock.to_str().unwrap();
    let daemon = start_daemon(
        &lab,
        sock,
        &["--allow-uid", "65534", "--max-hop", "4", "--user", "sys"],
    );
    let env = [("SYNERGY_DAEMON_SOCKET", sock)];
    let mut cmd: Vec<&str> = NOBODY.to_vec();
    cmd.push(prog.to_str().unwrap());
    let (out, err, peer) = talk(&lab, &cmd, "udp", 4445, &env);
    assert!(
        out.contains("got: hello from B"),
        "C as nobody: {out} {err}"
    );
    assert_eq!(peer, "hello from C\n");
    let mut cmd: Vec<&str> = NOBODY.to_vec();
    let ex = example();
    cmd.push(ex.to_str().unwrap());
    let (out, err, peer) = talk(&lab, &cmd, "udp", 4446, &env);
    assert!(
        out.contains("got: hello from B"),
        "Rust as nobody: {out} {err}"
    );
    assert_eq!(peer, "hello from Rust\n");
    let (dout, _) = daemon.finish(Duration::from_millis(100));
    let log = String::from_utf8_lossy(&dout.stderr);
    assert_eq!(
        log.matches("uid 65534 gid 65534: punched udp").count(),
        2,
        "{log}"
    );
}

#[test]
fn daemon_refuses_with_reasons_and_sends_nothing() {
    let Some(lab) = Lab::up("apiref", &[]) else {
        return;
    };
    let dir = scratch("refuse");
    let sock = dir.join("d.sock").to_str().unwrap().to_string();
    let daemon = start_daemon(
        &lab,
        &sock,
        &[
            "--allow-uid",
            "0",
            "--min-hop",
            "1",
            "--max-hop",
            "4",
            "--rate",
            "10",
        ],
    );
    let peer = Some(format!("[{B}]:5555").parse().unwrap());
    let s = sock.clone();
    let captured = lab.capture(
        "A",
        &format!("ip6 src {A} and not icmp6"),
        1,
        Duration::from_millis(300),
        || {
            let replies = in_netns(&lab, "A", move || {
                let ok = Request {
                    hop_limit: 2,
                    peer,
                    op: Default::default(),
                }
                .emit();
                let file = std::fs::File::open("/dev/null").unwrap();
                let unbound = std::net::UdpSocket::bind("[::]:0")
                    .map(|u| u.as_raw_fd())
                    .unwrap_or(-1);
                let fresh = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
                    .unwrap();
                let bound = std::net::UdpSocket::bind(format!("[{A}]:7000")).unwrap();
                let r = |fds: &[i32], bytes: &[u8]| {
                    exchange(&s, fds, bytes).unwrap_or_else(|e| format!("io error {e}"))
                };
                vec![
                    ("not a socket", r(&[file.as_raw_fd()], &ok)),
                    ("unbound", r(&[fresh.as_raw_fd()], &ok)),
                    (
                        "hop limit",
                        r(
                            &[bound.as_raw_fd()],
                            &Request {
                                hop_limit: 9,
                                peer,
                                op: Default::default(),
                            }
                            .emit(),
                        ),
                    ),
                    (
                        "garbage",
                        r(&[bound.as_raw_fd()], b"garbage that is not a request...."),
                    ),
                    ("short", r(&[bound.as_raw_fd()], b"SYNC")),
                    (
                        "long",
                        r(&[bound.as_raw_fd()], &[ok.as_slice(), &[0u8; 40]].concat()),
                    ),
                    ("no fd", r(&[], &ok)),
                    ("two fds", r(&[bound.as_raw_fd(), bound.as_raw_fd()], &ok)),
                    ("unbound port 0", r(&[unbound], &ok)),
                ]
            });
            for (case, line) in &replies {
                assert!(line.starts_with("err "), "{case}: {line}");
            }
            let reason = |case: &str| {
                replies
                    .iter()
                    .find(|r| r.0 == case)
                    .map(|r| r.1.clone())
                    .unwrap()
            };
            assert!(reason("not a socket").contains("not a socket"));
            assert!(
                reason("unbound").contains("not bound")
                    || reason("unbound").contains("getsockname"),
                "{}",
                reason("unbound")
            );
            assert!(reason("hop limit").contains("outside 1-4"));
            assert!(reason("garbage").contains("malformed"));
            assert!(reason("short").contains("malformed"));
            // The reason says what came: a request longer than the daemon reads at once is not
            // reported as the size of its buffer, and the detail under "malformed" is in the line.
            assert!(
                reason("short").contains("malformed request: 4 bytes, expected 32"),
                "{}",
                reason("short")
            );
            assert!(
                reason("long").contains("64 bytes or more, expected 32"),
                "{}",
                reason("long")
            );
            assert!(reason("no fd").contains("exactly one socket"));
            assert!(reason("two fds").contains("exactly one socket"));
        },
    );
    assert!(
        captured.is_empty(),
        "a refused request sent something: {captured:?}"
    );

    // A flood beyond 10 requests per second: the rest is refused for the rate limit. The first
    // requests above already used up the bucket, so wait for it to refill.
    std::thread::sleep(Duration::from_millis(1200));
    let s = sock.clone();
    let flood = in_netns(&lab, "A", move || {
        let bound = std::net::UdpSocket::bind(format!("[{A}]:7001")).unwrap();
        (0..25)
            .map(|_| {
                exchange(
                    &s,
                    &[bound.as_raw_fd()],
                    &Request {
                        hop_limit: 2,
                        peer,
                        op: Default::default(),
                    }
                    .emit(),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
    });
    let oks = flood.iter().filter(|l| l.starts_with("ok ")).count();
    let limited = flood.iter().filter(|l| l.contains("rate limit")).count();
    assert!((1..=11).contains(&oks), "{flood:?}");
    assert_eq!(oks + limited, 25, "{flood:?}");

    // A uid outside the policy (the daemon allows uid 0 only): refused.
    let prog = c_program();
    let mut cmd = vec![
        "env",
        "SYNERGY_DAEMON_SOCKET=",
        "setpriv",
        "--reuid=1",
        "--regid=1",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let envset = format!("SYNERGY_DAEMON_SOCKET={sock}");
    cmd[1] = &envset;
    cmd.push(prog.to_str().unwrap());
    cmd.extend(["udp", A, "7002", B, "5555", "2"]);
    let out = lab.exec("A", &cmd);
    assert!(!out.status.success());
    let (dout, _) = daemon.finish(Duration::from_millis(100));
    let log = String::from_utf8_lossy(&dout.stderr);
    assert!(
        log.contains("uid 1 gid 1: refused: uid 1 is not admitted"),
        "{log}"
    );
    // The log says why a request was malformed, as the reply does.
    assert!(log.contains("refused: malformed request: "), "{log}");
    // Still alive after all of it: the daemon answered the uid-1 request after the malformed ones.
}
