//! Lab tests of sweeps and the fast send path: every patched probe of a sweep is exact — the
//! firewall's conntrack (which verifies TCP/UDP/SCTP checksums) makes one entry per probe and
//! counts none INVALID — and `scripts/bench.sh` runs end to end on a small count.

mod common;

use std::process::Command;

use common::Lab;

fn sweep_makes_one_entry_per_probe(proto: &str, prefix: &str) {
    sweep_on(proto, prefix, false);
}

/// With `link`, the probes go out at the link layer to fwa1's MAC address.
fn sweep_on(proto: &str, prefix: &str, link: bool) {
    let Some(lab) = Lab::up(prefix, &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let mac = {
        let out = lab.exec("fwa1", &["cat", "/sys/class/net/to-A/address"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut args = vec![
        "probe",
        "--proto",
        proto,
        "--src",
        &a,
        "--sport",
        "40000-40199",
        "--dst",
        &b,
        "--dport",
        "5555",
        "--hop-limit",
        "1-2",
    ];
    args.extend(["--rate", "max", "-q", "--json"]);
    if link {
        args.extend(["--link", "to-fwa1", "--next-hop-mac", &mac]);
    }
    let out = lab.craft("A", &args);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["sent"], 400, "{summary}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let entries = lab
        .conntrack("fwa1")
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some(proto))
        .count();
    // Hop limit 1 dies at fwa1 (no entry); hop limit 2 crosses it: one entry per source port.
    assert_eq!(
        entries, 200,
        "{proto}: {entries} entries for 200 crossing probes"
    );
    assert_eq!(
        lab.counters("fwa1")["invalid_drops"],
        0,
        "{proto}: a patched probe was INVALID"
    );
}

#[test]
fn tcp_sweep_is_exact() {
    sweep_makes_one_entry_per_probe("tcp", "swtcp");
}

#[test]
fn udp_sweep_is_exact() {
    sweep_makes_one_entry_per_probe("udp", "swudp");
}

#[test]
fn link_path_sweep_is_exact() {
    sweep_on("tcp", "swlink", true);
}

#[test]
fn sctp_sweep_is_exact() {
    sweep_makes_one_entry_per_probe("sctp", "swsctp");
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
    println!("{text}");
}

/// Sweeps of every other numeric field, combined with ten source ports: still one conntrack entry
/// per source port and nothing INVALID, so every patched checksum is right.
fn wide_sweep(proto: &str, prefix: &str, extra: &[&str], probes: u64) {
    let Some(lab) = Lab::up(prefix, &[]) else {
        return;
    };
    let (a, b) = (lab.addr("A").to_string(), lab.addr("B").to_string());
    let mut args = vec![
        "probe",
        "--proto",
        proto,
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
    ];
    args.extend(extra);
    args.extend(["--rate", "max", "-q", "--json"]);
    let out = lab.craft("A", &args);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["sent"], probes, "{summary}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let entries = lab
        .conntrack("fwa1")
        .iter()
        .filter(|l| l.split_whitespace().nth(2) == Some(proto))
        .count();
    assert_eq!(entries, 10, "{proto}: {entries} entries");
    assert_eq!(
        lab.counters("fwa1")["invalid_drops"],
        0,
        "{proto}: a patched probe was INVALID"
    );
}

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
    wide_sweep(
        "tcp",
        "swalltcp",
        &extra,
        10 * 2 * 3 * 2 * 2 * 2 * 2 * 2 * 2,
    );
}

#[test]
fn sctp_sweep_of_every_field_is_exact() {
    wide_sweep(
        "sctp",
        "swallsctp",
        &[
            "--tsn",
            "1-3",
            "--a-rwnd",
            "1000,2000",
            "--streams",
            "1-2:5,6",
            "--init-tag",
            "7,8",
        ],
        10 * 3 * 2 * 2 * 2 * 2,
    );
}
