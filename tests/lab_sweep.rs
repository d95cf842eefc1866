//! Lab tests of sweeps and the fast send path: every patched probe of a sweep sent by two threads
//! is exact — the firewall's conntrack (which verifies TCP/UDP/SCTP checksums) makes one entry
//! per probe and counts none INVALID, and each is the probe asked for — and `scripts/bench.sh`
//! runs end to end on a small count.

mod common;

use std::process::Command;

use common::Lab;

/// A sweep from A to B sent by two threads (`--threads 2`), checked on fwa1: one conntrack entry
/// per source port that crosses it and nothing INVALID (conntrack verifies the checksums), so
/// every patched probe is exact and none is sent twice or left out; and every probe reported
/// sent, in the sweep's order, has the bytes and fields of the same probe of a one-thread dry run
/// of the sweep. `sports` ports, `hops` hop limits (2 crosses fwa1, 1 dies there), `extra`
/// fields; with `link`, the probes go out at the link layer to fwa1's MAC address.
#[allow(clippy::too_many_arguments)] // one row of the sweep table per call
fn exact_sweep(
    proto: &str,
    prefix: &str,
    sports: &str,
    hops: &str,
    extra: &[&str],
    link: bool,
    probes: u64,
    entries: usize,
) {
    let Some(lab) = Lab::up(prefix, &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let mac = fwa1_mac(&lab);
    let mut args = vec![
        "probe",
        "--proto",
        proto,
        "--src",
        &a,
        "--sport",
        sports,
        "--dst",
        &b,
        "--dport",
        "5555",
        "--hop-limit",
        hops,
    ];
    args.extend(extra);
    // The fields drawn at random unless given, pinned so that two runs ask for the same probes:
    // TCP's sequence number, an SCTP INIT's tag and TSN, the punch's Stale Cookie measure (here
    // the punch's ERROR chunk given as bytes).
    let init = extra.contains(&"init");
    let pinned: &[(&str, bool, &str, &str)] = &[
        ("tcp", true, "--seq", "7"),
        ("sctp", init, "--init-tag", "9"),
        ("sctp", init, "--tsn", "5"),
        ("sctp", !init, "--chunk", "9:0:00030008000003e8"),
    ];
    for (p, when, flag, value) in pinned {
        if *p == proto && *when && !extra.contains(flag) {
            args.extend([*flag, *value]);
        }
    }
    args.extend(["--rate", "max", "--each-probe", "--json"]);
    // What was asked for: the sweep built by one thread, sending nothing.
    let asked =
        probe_events(&lab.craft("A", &[&args[..], &["--dry-run", "--threads", "1"]].concat()));
    if link {
        args.extend(["--link", "to-fwa1", "--next-hop-mac", &mac]);
    }
    // Sent by two threads, each its own socket and its share of the sweep.
    let out = lab.craft("A", &[&args[..], &["--threads", "2"]].concat());
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["sent"], probes, "{summary}");
    // Every probe sent is the one asked for, reported once, in the sweep's order.
    let sent = probe_events(&out);
    assert_eq!(sent.len() as u64, probes);
    for (i, (s, a)) in sent.iter().zip(&asked).enumerate() {
        assert_eq!(s["index"], i as u64 + 1, "{proto}: out of order");
        assert_eq!(
            s["event"],
            "probe_sent",
            "{proto}: probe {} not sent",
            i + 1
        );
        assert_eq!(
            (&s["bytes"], &s["probe"]),
            (&a["bytes"], &a["probe"]),
            "{proto}: probe {} is not the one asked for",
            i + 1
        );
    }
    // Every probe has been sent; wait until fwa1 has seen them all (or 5 s have passed).
    let count = || {
        lab.conntrack("fwa1")
            .iter()
            .filter(|l| l.split_whitespace().nth(2) == Some(proto))
            .count()
    };
    common::eventually(std::time::Duration::from_secs(5), || count() >= entries);
    let got = count();
    assert_eq!(
        got, entries,
        "{proto}: {got} entries for {entries} crossing source ports"
    );
    assert_eq!(
        lab.counters("fwa1")["invalid_drops"],
        0,
        "{proto}: a patched probe was INVALID"
    );
}

/// The per-probe events of a JSON run (the summary and anything else left out).
fn probe_events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["event"] == "probe_sent" || v["event"] == "probe_built")
        .collect()
}

/// fwa1's MAC address on A's link: the next hop of probes sent at the link layer.
fn fwa1_mac(lab: &Lab) -> String {
    let out = lab.exec("fwa1", &["cat", "/sys/class/net/to-A/address"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// 200 source ports x hop limits 1-2: only hop limit 2 crosses fwa1.
fn ports_and_hops(proto: &str, prefix: &str, link: bool) {
    exact_sweep(proto, prefix, "40000-40199", "1-2", &[], link, 400, 200);
}

#[test]
fn tcp_sweep_is_exact() {
    ports_and_hops("tcp", "swtcp", false);
}

#[test]
fn udp_sweep_is_exact() {
    ports_and_hops("udp", "swudp", false);
}

#[test]
fn sctp_sweep_is_exact() {
    ports_and_hops("sctp", "swsctp", false);
}

#[test]
fn link_path_sweep_is_exact() {
    ports_and_hops("tcp", "swlink", true);
}

/// Every other numeric field swept together with ten source ports.
#[test]
fn tcp_sweep_of_every_field_is_exact() {
    let extra = [
        "--ack",
        "0,7",
        "--win",
        "1000-1002",
        "--mss",
        "1200,1400",
        "--wscale",
        "0,7",
        "--timestamp",
        "1-2:0",
        "--flow",
        "1,2",
        "--traffic-class",
        "0,32",
        "--urgent",
        "0,1",
    ];
    exact_sweep(
        "tcp",
        "swalltcp",
        "40000-40009",
        "2",
        &extra,
        false,
        10 * 2 * 3 * 2 * 2 * 2 * 2 * 2 * 2,
        10,
    );
}

#[test]
fn sctp_sweep_of_every_field_is_exact() {
    let extra = [
        "--tsn",
        "1-3",
        "--a-rwnd",
        "1000,2000",
        "--streams",
        "1-2:5,6",
        "--init-tag",
        "7,8",
        "--chunk",
        "init",
    ];
    exact_sweep(
        "sctp",
        "swallsctp",
        "40000-40009",
        "2",
        &extra,
        false,
        10 * 3 * 2 * 2 * 2 * 2,
        10,
    );
}

/// `--payload-length` leaves at the link layer as written, swept: fwa1's IPv6 input drops each
/// probe whose payload length claims more than the packet holds (counted as truncated, RFC 8200
/// §3 and Linux's `ipv6_rcv`), and the probes with their real length (8: a UDP header) cross it to
/// conntrack, one entry per source port, none INVALID.
#[test]
fn payload_length_is_sent_as_written_on_the_link() {
    let Some(lab) = Lab::up("swplen", &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let mac = fwa1_mac(&lab);
    let truncated = || lab.snmp6("fwa1", "Ip6InTruncatedPkts");
    let before = truncated();
    let out = lab.craft(
        "A",
        &[
            "probe",
            "--proto",
            "udp",
            "--src",
            &a,
            "--sport",
            "40000-40009",
            "--dst",
            &b,
            "--dport",
            "5555",
            "--hop-limit",
            "2",
            "--payload-length",
            "8,9",
            "--link",
            "to-fwa1",
            "--next-hop-mac",
            &mac,
            "-q",
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["sent"], 20, "{summary}");
    let udp = || {
        lab.conntrack("fwa1")
            .iter()
            .filter(|l| l.split_whitespace().nth(2) == Some("udp"))
            .count()
    };
    common::eventually(std::time::Duration::from_secs(5), || {
        udp() >= 10 && truncated() >= before + 10
    });
    assert_eq!(truncated() - before, 10, "the probes claiming 9 bytes");
    assert_eq!(udp(), 10, "the probes with their real length");
    assert_eq!(lab.counters("fwa1")["invalid_drops"], 0);
}

/// The benchmark script runs end to end on a small count (performance itself is asserted by
/// reading the script's table in docs/PERFORMANCE.md, never by a timed test).
#[test]
fn bench_script_runs_end_to_end() {
    let Some(lab) = Lab::up("benchchk", &[]) else {
        return;
    };
    drop(lab);
    let out = Command::new(common::root().join("scripts/bench.sh"))
        .args(["--count", "20000", "--reps", "1", "--accuracy-seconds", "1"])
        .output()
        .expect("bench.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "synergy-craft (IP)",
        "C sendto() baseline",
        "rate accuracy",
        "peak resident set",
    ] {
        assert!(text.contains(row), "no {row:?} in:\n{text}");
    }
    // Every target is measured: six, and two more (threads) on a machine with more than one core.
    let targets: Vec<&str> = text.lines().filter(|l| l.contains("; >= ")).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(targets.len(), if cpus > 1 { 8 } else { 6 }, "{text}");
    assert!(
        targets.iter().all(|l| !l.contains("not measured")),
        "a target without its ratios:\n{text}"
    );
    println!("{text}");
}

/// Ctrl-C (SIGINT) or SIGTERM during a paced sweep written to a pcap, sent by one thread or by
/// two: the run stops, prints its JSON summary (marked interrupted), leaves a pcap that tcpdump
/// reads to the end with exactly the probes sent, which are the first ones of the sweep, each
/// reported once in order, and exits 130 or 143.
#[test]
fn a_signal_ends_a_run_with_its_summary_and_a_whole_pcap() {
    let Some(lab) = Lab::up("swsig", &[]) else {
        return;
    };
    let b = lab.addr("B").to_string();
    for (sig, code, threads) in [
        (libc::SIGINT, 130, "1"),
        (libc::SIGTERM, 143, "1"),
        (libc::SIGINT, 130, "2"),
    ] {
        let pcap = common::scratch("signal").join(format!("{sig}-{threads}.pcap"));
        let p = pcap.to_str().unwrap();
        let mut run = lab.spawn(
            "A",
            &[
                common::BIN,
                "probe",
                "--proto",
                "udp",
                "--sport",
                "40000-40999",
                "--dst",
                &b,
                "--dport",
                "5555",
                "--hop-limit",
                "2",
                "--delay",
                "10ms",
                "--pcap",
                p,
                "--json",
                "--threads",
                threads,
            ],
        );
        assert!(
            run.wait_stdout("\"index\":20,", std::time::Duration::from_secs(10)),
            "the run did not start"
        );
        run.signal(sig);
        let (out, ended) = run.finish(std::time::Duration::from_secs(5));
        assert!(ended, "signal {sig}: the run did not end");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = common::event(&stdout, "summary")
            .unwrap_or_else(|| panic!("signal {sig}: no summary: {stdout}"));
        let sent = summary["sent"].as_u64().unwrap();
        assert!((20..1000).contains(&sent), "{summary}");
        assert!(summary["interrupted"].is_string(), "{summary}");
        // Each probe sent reported once, in order (a paced run's threads take turns).
        let indexes: Vec<u64> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "probe_sent")
            .filter_map(|v| v["index"].as_u64())
            .collect();
        assert_eq!(
            indexes,
            (1..=sent).collect::<Vec<_>>(),
            "{threads} threads: the probes sent are the first ones, each reported once, in order"
        );
        let read = Command::new("tcpdump")
            .args(["-n", "-r", p])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&read.stderr);
        assert!(read.status.success() && !err.contains("truncated"), "{err}");
        let packets = String::from_utf8_lossy(&read.stdout).lines().count() as u64;
        assert_eq!(
            packets, sent,
            "the pcap holds every probe sent, and only those"
        );
        let _ = std::fs::remove_file(&pcap);
    }
}
