//! Lab tests of privilege and size limits: sending needs CAP_NET_RAW and nothing more, the error
//! without it names the capability and the setcap command, a file capability is enough without
//! root, every capability is gone once the raw socket is open, and a probe larger than the link
//! MTU is refused before anything is sent.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Lab, NOBODY};

fn probe_args<'a>(lab_a: &'a str, lab_b: &'a str, sport: &'a str) -> Vec<&'a str> {
    vec![
        "probe",
        "--proto",
        "udp",
        "--src",
        lab_a,
        "--sport",
        sport,
        "--dst",
        lab_b,
        "--dport",
        "5555",
        "--hop-limit",
        "2",
    ]
}

#[test]
fn without_cap_net_raw_says_which_and_how() {
    let Some(lab) = Lab::up("privnone", &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let out = lab.exec(
        "A",
        &[&NOBODY[..], &[BIN], &probe_args(&a, &b, "4444")].concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("CAP_NET_RAW") && err.contains("setcap cap_net_raw+ep"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(lab.entry("fwa1", "udp", 4444, 5555).is_none());
}

/// A TCP session needs CAP_NET_RAW and CAP_NET_ADMIN: without CAP_NET_ADMIN (root with it out of
/// the bounding set) or without both (nobody), exit 77 and one line naming the whole set and the
/// one setcap line that grants it, never a bare "Operation not permitted".
#[test]
fn tcp_sessions_name_every_capability_they_need() {
    let Some(lab) = Lab::up("privtcp", &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let session = |mode: &'static str| {
        vec![
            BIN,
            mode,
            "tcp",
            &a,
            "4450",
            &b,
            "5550",
            "2",
            "--timeout",
            "2",
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let no_admin = ["setpriv", "--bounding-set", "-net_admin"];
    for (who, prefix, mode, missing) in [
        (
            "root without CAP_NET_ADMIN",
            &no_admin[..],
            "listen",
            "(CAP_NET_ADMIN missing)",
        ),
        (
            "root without CAP_NET_ADMIN",
            &no_admin[..],
            "connect",
            "(CAP_NET_ADMIN missing)",
        ),
        (
            "nobody",
            &NOBODY[..],
            "connect",
            "(CAP_NET_RAW, CAP_NET_ADMIN missing)",
        ),
    ] {
        let args = session(mode);
        let argv: Vec<&str> = prefix
            .iter()
            .copied()
            .chain(args.iter().map(String::as_str))
            .collect();
        let out = lab.exec("A", &argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{who} {mode}: {err}");
        assert!(
            err.contains("needs CAP_NET_RAW and CAP_NET_ADMIN")
                && err.contains(missing)
                && err.contains("setcap cap_net_raw,cap_net_admin+ep"),
            "{who} {mode}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{who} {mode}: {err}");
    }
}

#[test]
fn file_capability_is_enough_without_root() {
    let Some(lab) = Lab::up("privcap", &[]) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("synergy-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("synergy-craft");
    std::fs::copy(BIN, &bin).unwrap();
    let setcap = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(&bin)
        .output()
        .expect("setcap");
    assert!(
        setcap.status.success(),
        "setcap: {}",
        String::from_utf8_lossy(&setcap.stderr)
    );
    Command::new("chmod")
        .args(["755"])
        .arg(&dir)
        .status()
        .unwrap();
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let out = lab.exec(
        "A",
        &[
            &NOBODY[..],
            &[bin.to_str().unwrap()],
            &probe_args(&a, &b, "4445"),
        ]
        .concat(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "as nobody with cap_net_raw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab.entry("fwa1", "udp", 4445, 5555).is_some(),
        "the probe sent by nobody made no entry"
    );
}

/// While a run of four probes 600 ms apart, sent by two threads (each sends two), is still
/// sending, the capability sets of every thread are empty (the sending threads start after the
/// drop).
#[test]
fn capabilities_dropped_after_socket_opens() {
    let Some(lab) = Lab::up("privdrop", &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let mut args = probe_args(&a, &b, "4446");
    args.extend(["-c", "4", "--delay", "600ms", "--threads", "2"]);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("A"), BIN])
        .args(&args)
        .spawn()
        .expect("spawn");
    // The first probe is out (its entry is at fwa1): the sockets are open and the sets dropped,
    // and two more probes are to come.
    assert!(common::eventually(Duration::from_secs(5), || {
        lab.entry("fwa1", "udp", 4446, 5555).is_some()
    }));
    let threads = thread_caps(child.id());
    let done = child.wait().expect("wait");
    assert!(done.success());
    let senders = threads
        .iter()
        .filter(|(comm, _, _)| comm.starts_with("send-"));
    assert_eq!(senders.count(), 2, "two sending threads: {threads:?}");
    for (comm, eff, prm) in &threads {
        for set in [eff, prm] {
            assert_eq!(
                set, "0000000000000000",
                "{comm}: capabilities while sending: {threads:?}"
            );
        }
    }
    assert!(
        lab.entry("fwa1", "udp", 4446, 5555).is_some(),
        "probes after the drop still went out"
    );
}

#[test]
fn larger_than_link_mtu_is_refused() {
    let Some(lab) = Lab::up("privmtu", &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let big = "ab".repeat(1500);
    let mut args = probe_args(&a, &b, "4447");
    args.extend(["--data", &big]);
    let out = lab.exec("A", &[&[BIN], &args[..]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("MTU of 1500"), "{err}");
    assert!(lab.entry("fwa1", "udp", 4447, 5555).is_none());
}

/// The capability sets of each of a process's threads (comm, CapEff, CapPrm), read from
/// /proc/PID/task: capabilities are per thread.
fn thread_caps(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let set = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((comm.trim().to_string(), set("CapEff:"), set("CapPrm:")));
    }
    out
}

/// Every thread gives up the capabilities it does not need, not only the main one: a UDP
/// listener, once punched, holds none in any thread (the signal thread included); a TCP
/// listener's SYN watch, signal and waiting (synergy-accept) threads hold none, and its main
/// thread none effective; a TCP client's port-holding thread (synergy-holds) holds none.
#[test]
fn every_thread_gives_up_its_capabilities() {
    let Some(lab) = Lab::up("privthr", &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let zero = "0000000000000000";
    let mut udp = lab.spawn(
        "A",
        &[BIN, "listen", "udp", &a, "4449", &b, "5555", "2", "--json"],
    );
    assert!(
        udp.wait_stderr("\"punched\"", Duration::from_secs(10)),
        "no punch"
    );
    let caps = thread_caps(udp.child.id());
    assert!(caps.len() >= 2, "{caps:?}");
    for (comm, eff, prm) in &caps {
        assert!(
            eff == zero && prm == zero,
            "udp listen, thread {comm}: CapEff {eff}, CapPrm {prm}"
        );
    }
    drop(udp.finish(Duration::from_millis(100)));

    let mut tcp = lab.spawn(
        "A",
        &[BIN, "listen", "tcp", &a, "4450", &b, "5555", "2", "--json"],
    );
    assert!(
        tcp.wait_stderr("\"punched\"", Duration::from_secs(10)),
        "no punch"
    );
    // Its waiting threads start as the punch goes out and give up their capabilities as they
    // start: give them that moment (2 s at most) before judging.
    let names = ["signals", "syn-watch", "synergy-accept"];
    let mut caps = Vec::new();
    common::eventually(Duration::from_secs(2), || {
        caps = thread_caps(tcp.child.id());
        names.iter().all(|n| {
            caps.iter()
                .any(|(c, e, p)| c == n && e == zero && p == zero)
        }) && caps.iter().filter(|(c, ..)| c == "synergy-craft").count() == 1
    });
    let main = caps
        .iter()
        .find(|(c, ..)| c == "synergy-craft")
        .expect("the main thread");
    assert_eq!(main.1, zero, "tcp listen, main thread effective: {caps:?}");
    for name in names {
        let (_, eff, prm) = caps
            .iter()
            .find(|(c, ..)| c == name)
            .unwrap_or_else(|| panic!("no {name} thread: {caps:?}"));
        assert!(
            eff == zero && prm == zero,
            "tcp listen, thread {name}: CapEff {eff}, CapPrm {prm}"
        );
    }
    drop(tcp.finish(Duration::from_millis(100)));

    // B's side stays silent: A's client punches, holds its port and retries meanwhile.
    let mut client = lab.spawn(
        "A",
        &[BIN, "connect", "tcp", &a, "4451", &b, "5556", "2", "--json"],
    );
    assert!(
        client.wait_stderr("\"punched\"", Duration::from_secs(10)),
        "no punch"
    );
    // The port-holding thread is started as the punch goes out, and gives up its capabilities as
    // it starts: give it that moment (2 s at most) before judging.
    let mut caps = Vec::new();
    common::eventually(Duration::from_secs(2), || {
        caps = thread_caps(client.child.id());
        caps.iter()
            .any(|(c, e, p)| c == "synergy-holds" && e == zero && p == zero)
    });
    let (_, eff, prm) = caps
        .iter()
        .find(|(c, ..)| c == "synergy-holds")
        .unwrap_or_else(|| panic!("no synergy-holds thread: {caps:?}"));
    assert!(
        eff == zero && prm == zero,
        "tcp connect, synergy-holds: CapEff {eff}, CapPrm {prm}"
    );
    drop(client.finish(Duration::from_millis(100)));
}
