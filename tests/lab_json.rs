//! The JSON interface: every JSON object that `probe`, `hops`, `listen`, `connect`, `routes` and
//! `status` write with `--json`, produced by real runs in the lab, is valid against
//! docs/schema/events.v1.json, and the runs below produce every event the schema names except
//! `log` (which needs a warning).
//! `listen`/`connect --json` keep their stderr pure JSON: every line parses, a failure included.

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use common::{BIN, Lab, scratch, start_daemon};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(common::root().join("docs/schema/events.v1.json"))
        .expect("docs/schema/events.v1.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&v).expect("the schema is a valid JSON Schema")
}

/// Validates every line of `text` (each must be a JSON object) and records its event name.
fn check_lines(v: &jsonschema::Validator, what: &str, text: &str, seen: &mut BTreeSet<String>) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{what}: {line}\n{}", errors.join("\n"));
        seen.insert(value["event"].as_str().unwrap_or("?").to_string());
    }
}

#[test]
fn every_json_line_of_every_command_matches_the_schema() {
    let Some(lab) = Lab::up("json", &[]) else {
        return;
    };
    let v = schema();
    let mut seen = BTreeSet::new();
    let probe = [
        "probe", "--proto", "tcp", "--sport", "4000", "--dst", B, "--dport", "5555",
    ];
    let out = lab.run(
        "A",
        &[
            &probe[..],
            &["--hop-limit", "1-2", "--watch", "500ms", "--json"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_lines(
        &v,
        "probe --watch",
        &String::from_utf8_lossy(&out.stdout),
        &mut seen,
    );
    let out = lab.run("A", &[&probe[..], &["--dry-run", "--json"]].concat());
    check_lines(
        &v,
        "probe --dry-run",
        &String::from_utf8_lossy(&out.stdout),
        &mut seen,
    );
    let out = lab.run(
        "A",
        &[
            "hops", "--proto", "udp", "--sport", "4001", "--dst", B, "--dport", "5555", "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_lines(&v, "hops", &String::from_utf8_lossy(&out.stdout), &mut seen);
    // A failing probe: its error is an event on its JSON stream (stdout) too.
    let out = lab.run(
        "A",
        &[
            &probe[..],
            &["--src", A, "--site-prefix", "2001:db8:5::/48", "--json"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    check_lines(
        &v,
        "probe error",
        &String::from_utf8_lossy(&out.stdout),
        &mut seen,
    );

    // listen udp with auto, re-punching and no peer: stderr is all JSON, the failure included. Its
    // route memory is empty (a directory of its own), so auto traces.
    let fresh = scratch("json-fresh-state");
    let fresh = format!("STATE_DIRECTORY={}", fresh.display());
    let mut listen = lab.spawn(
        "A",
        &[
            "env",
            &fresh,
            BIN,
            "listen",
            "udp",
            A,
            "4002",
            B,
            "5002",
            "auto",
            "--repunch",
            "200ms",
            "--timeout",
            "2",
            "--json",
        ],
    );
    assert!(listen.wait_stderr("\"event\":\"repunched\"", Duration::from_secs(10)));
    let (out, _) = listen.finish(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    check_lines(
        &v,
        "listen udp",
        &String::from_utf8_lossy(&out.stderr),
        &mut seen,
    );

    // With the node's route memory (the `hops` run above taught it the route), auto takes the
    // hop limit from there.
    let out = lab.run(
        "A",
        &[
            "listen",
            "udp",
            A,
            "4004",
            B,
            "5004",
            "auto",
            "--timeout",
            "1",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    check_lines(
        &v,
        "listen udp, auto from the route memory",
        &String::from_utf8_lossy(&out.stderr),
        &mut seen,
    );
    let out = lab.run("A", &["routes", "--json"]);
    assert!(out.status.success());
    check_lines(
        &v,
        "routes",
        &String::from_utf8_lossy(&out.stdout),
        &mut seen,
    );
    let dir = scratch("json-daemon");
    let sock = dir.join("d.sock");
    let sock = sock.to_str().unwrap();
    let daemon = start_daemon(&lab, sock, &["--hop-range", "2001:db8:2::/48=2-3"]);
    let status = common::daemon_status(&lab, sock).to_string();
    check_lines(&v, "status", &status, &mut seen);
    let _ = daemon.finish(Duration::from_millis(100));

    // A whole TCP session with socat as the peer.
    let mut listen = lab.spawn(
        "A",
        &[
            BIN,
            "listen",
            "tcp",
            A,
            "4003",
            B,
            "5003",
            "2",
            "--timeout",
            "10",
            "--json",
        ],
    );
    assert!(listen.wait_stderr("\"event\":\"punched\"", Duration::from_secs(10)));
    // A local client that is not the peer: accepted by the listener, turned away by the session.
    let local = lab.exec(
        "A",
        &[
            "sh",
            "-c",
            &format!("echo x | socat -T 1 - TCP6:[{A}]:4003"),
        ],
    );
    assert!(local.status.code().is_some());
    assert!(listen.wait_stderr("\"event\":\"stranger\"", Duration::from_secs(5)));
    let peer = lab.spawn(
        "B",
        &[
            "sh",
            "-c",
            &format!("(echo hello; sleep 1) | socat - TCP6:[{A}]:4003,bind=[{B}]:5003"),
        ],
    );
    listen.write(b"hi\n");
    let (_, _) = peer.finish(Duration::from_secs(8));
    let (out, _) = listen.finish(Duration::from_secs(8));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    check_lines(
        &v,
        "listen tcp",
        &String::from_utf8_lossy(&out.stderr),
        &mut seen,
    );

    let want: BTreeSet<String> = [
        "probe_sent",
        "probe_built",
        "summary",
        "fate",
        "fates",
        "hops",
        "error",
        "hop_limit",
        "route_hop_limit",
        "routes",
        "status",
        "punched",
        "repunched",
        "stranger",
        "peer_connected",
        "bytes",
        "closed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "events never produced: {missing:?} (seen {seen:?})"
    );
}
