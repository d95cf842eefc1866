//! Lab tests of reply matching and hop-limit discovery: `hops` recommends the lowest hop limit seen
//! to expire outside the site for several topologies (a silent border firewall, both sites in one
//! /48), `listen` then works with it (and with `auto`), silence gives no recommendation and a
//! non-zero exit, nothing of a trace reaches the peer (counted on B's link) with a dropping and a
//! rejecting remote firewall, `connect tcp … auto` started after its peer works 10 of 10,
//! `probe --watch` reports where a probe expired or who reset/rejected it, and the longest path is
//! traced in under a second.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Lab};

const A: &str = "2001:db8:1::11";
const B: &str = "2001:db8:2::5";

fn hops_json(lab: &Lab, proto: &str, sport: &str) -> serde_json::Value {
    let b = lab.addr("B").to_string();
    let out = lab.craft(
        "A",
        &[
            "hops", "--proto", proto, "--sport", sport, "--dst", &b, "--dport", "5555", "--json",
        ],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("hops --json: {e}: {out}"))
}

/// `probe --proto udp` from A's `sport` to B:5555 with `extra` arguments; its stdout.
fn udp_probe_to_b(lab: &Lab, sport: &str, extra: &[&str]) -> String {
    let args = [
        "probe", "--proto", "udp", "--sport", sport, "--dst", B, "--dport", "5555",
    ];
    lab.craft("A", &[&args[..], extra].concat())
}

/// The `hops` event of `hops --json` output; a failed run also ends with an `error` event, whose
/// exit code must be the process's.
fn hops_event(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let events = common::events(&text);
    if !out.status.success() {
        let last = events.last().expect("an error event");
        assert_eq!(last["event"], "error", "{text}");
        assert_eq!(
            last["exit_code"].as_i64(),
            out.status.code().map(i64::from),
            "{text}"
        );
    }
    events
        .into_iter()
        .find(|e| e["event"] == "hops")
        .unwrap_or_else(|| panic!("no hops event: {text}"))
}

/// Packets from A's address that arrived on B's link (B's own prerouting counter, see lab.sh).
fn from_a_at_b(lab: &Lab) -> u64 {
    *lab.counters("B").get("from_a").expect("B's from_a counter")
}

fn watch(lab: &Lab, proto: &str, sport: &str, hop: &str) -> serde_json::Value {
    let out = lab.craft(
        "A",
        &[
            "probe",
            "--proto",
            proto,
            "--sport",
            sport,
            "--dst",
            B,
            "--dport",
            "5555",
            "--hop-limit",
            hop,
            "--watch",
            "700ms",
            "--json",
        ],
    );
    let fate = out
        .lines()
        .find(|l| l.contains("\"event\":\"fate\""))
        .unwrap_or_else(|| panic!("no fate: {out}"));
    serde_json::from_str(fate).unwrap()
}

/// A line each way through `listen` with an unmodified peer (socat for tcp, nc for udp).
fn listen_works(lab: &Lab, proto: &str, port: u16, hop: &str) {
    let (p, q) = (port.to_string(), (port + 1000).to_string());
    let b_addr = lab.addr("B").to_string();
    let b_ip = b_addr.as_str();
    // `auto` with a route memory that knows nothing: the trace is what is tested.
    let memory = common::empty_memory();
    let mut a = lab.spawn(
        "A",
        &[
            "env",
            &memory,
            BIN,
            "listen",
            proto,
            A,
            &p,
            b_ip,
            &q,
            hop,
            "--timeout",
            "15",
        ],
    );
    assert!(
        a.wait_stderr("punched", Duration::from_secs(10)),
        "{proto} listen, hop limit {hop}: never punched"
    );
    let peer = if proto == "tcp" {
        format!("(echo hello from B; sleep 2) | socat - TCP6:[{A}]:{p},bind=[{b_ip}]:{q}")
    } else {
        format!("(echo hello from B; sleep 2) | nc -6 -u -w 2 -s {b_ip} -p {q} {A} {p}")
    };
    let b = lab.spawn("B", &["sh", "-c", &peer]);
    assert!(
        a.wait_stderr("connected", Duration::from_secs(10)),
        "{proto} listen, hop limit {hop}: the peer never came"
    );
    a.write(b"hello from A\n");
    let (bo, _) = b.finish(Duration::from_secs(6));
    let (ao, _) = a.finish(Duration::from_secs(4));
    let ae = String::from_utf8_lossy(&ao.stderr);
    assert_eq!(
        String::from_utf8_lossy(&ao.stdout),
        "hello from B\n",
        "{proto} listen, hop limit {hop}: {ae}"
    );
    assert_eq!(
        String::from_utf8_lossy(&bo.stdout),
        "hello from A\n",
        "{proto} peer, hop limit {hop}: {ae}"
    );
    if hop == "auto" {
        assert!(
            ae.contains("hop limit auto") && ae.contains("recommended hop limit"),
            "{ae}"
        );
    }
}

fn topology(local: u8, routers: u8, prefix: &str) {
    let (l, r) = (local.to_string(), routers.to_string());
    let Some(lab) = Lab::up(prefix, &["--local", &l, "--routers", &r]) else {
        return;
    };
    let want = u64::from(local) + 1;
    for (proto, sport) in [("tcp", "4000"), ("udp", "4001")] {
        let h = hops_json(&lab, proto, sport);
        assert_eq!(
            h["recommended_hop_limit"], want,
            "{proto} local {local} routers {routers}: {h}"
        );
        // The responders at the recommended hop limit and the one below are r1 and the last local firewall.
        let hops = h["hops"].as_array().unwrap();
        let at = |n: u64| {
            hops.iter()
                .find(|x| x["hop_limit"] == n)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(at(want)["fate"]["by"], lab.addr("r1").to_string(), "{h}");
        assert_eq!(at(want)["place"], "outside");
        assert_eq!(at(want - 1)["place"], "inside");
    }
    let f = watch(&lab, "tcp", "4002", &want.to_string());
    assert_eq!(f["fate"]["fate"], "expired", "{f}");
    assert_eq!(f["fate"]["by"], lab.addr("r1").to_string(), "{f}");
    assert_eq!(f["too_high"], false);
    listen_works(&lab, "tcp", 4444, &want.to_string());
    listen_works(&lab, "udp", 4445, &want.to_string());
}

#[test]
fn one_local_firewall_one_router() {
    topology(1, 1, "hp11");
}

#[test]
fn two_local_firewalls_two_routers() {
    topology(2, 2, "hp22");
}

#[test]
fn one_local_firewall_three_routers() {
    topology(1, 3, "hp13");
}

#[test]
fn two_local_firewalls_three_routers() {
    topology(2, 3, "hp23");
}

#[test]
fn listen_auto_finds_the_hop_limit() {
    let Some(lab) = Lab::up(
        "hpauto",
        &[
            "--local",
            "2",
            "--routers",
            "2",
            "--remote-profile",
            "reject",
        ],
    ) else {
        return;
    };
    listen_works(&lab, "tcp", 4444, "auto");
    listen_works(&lab, "udp", 4445, "auto");
    lab.assert_no_invalid("");
}

/// A `reject` firewall right after one router: `hops` recommends the hop limit that expires at the
/// router before it and never sends past that router (the firewall rejects nothing, B gets
/// nothing); a deliberately too-high probe reports the reset and who sent it.
#[test]
fn close_reject_firewall_is_never_recommended_into() {
    let Some(lab) = Lab::up("hprej", &["--remote-profile", "reject"]) else {
        return;
    };
    for (proto, sport) in [("tcp", "4000"), ("udp", "4001"), ("sctp", "4005")] {
        let h = hops_json(&lab, proto, sport);
        assert_eq!(h["recommended_hop_limit"], 2, "{h}");
        assert_eq!(
            h["recommendation"]["outside_by"],
            lab.addr("r1").to_string()
        );
        assert_eq!(h["hops"].as_array().map(Vec::len), Some(2), "{h}");
        assert_eq!(lab.counters("fwb1")["outside_rejects"], 0, "{proto}: {h}");
        // The recommended probe expires at r1 and is not reset.
        let f = watch(&lab, proto, "4002", "2");
        assert_eq!(f["fate"]["fate"], "expired", "{f}");
    }
    assert_eq!(from_a_at_b(&lab), 0);
    let f = watch(&lab, "tcp", "4003", "4");
    assert_eq!(f["fate"]["fate"], "reset", "{f}");
    assert_eq!(
        f["fate"]["by"], B,
        "the reset carries the peer's address (the firewall speaks for it): {f}"
    );
    assert_eq!(f["too_high"], true);
    let f = watch(&lab, "udp", "4004", "4");
    assert_eq!(f["fate"]["fate"], "unreachable", "{f}");
    assert_eq!(f["fate"]["code"], 1, "administratively prohibited: {f}");
    assert_eq!(
        f["fate"]["by"],
        lab.addr("fwb1").to_string(),
        "rejected by fwb1: {f}"
    );
    assert_eq!(f["too_high"], true);
}

/// With a dropping and with a rejecting remote firewall, nothing of a trace arrives on B's link:
/// not from `hops` (tcp, udp, sctp), not from `listen … auto` (which punches with hop limit 2
/// after it), and from `connect … auto` only the session's own flow (the trace has a port of its
/// own and stops at r1).
#[test]
fn nothing_of_a_trace_reaches_the_peer() {
    for (profile, prefix) in [("strict", "hpnob"), ("reject", "hpnor")] {
        let Some(lab) = Lab::up(prefix, &["--remote-profile", profile]) else {
            return;
        };
        for (proto, sport) in [("tcp", "4000"), ("udp", "4001"), ("sctp", "4002")] {
            let h = hops_json(&lab, proto, sport);
            assert_eq!(h["recommended_hop_limit"], 2, "{profile} {proto}: {h}");
        }
        for proto in ["tcp", "udp"] {
            let memory = common::empty_memory();
            let out = lab.exec(
                "A",
                &[
                    "env",
                    &memory,
                    BIN,
                    "listen",
                    proto,
                    A,
                    "4010",
                    B,
                    "5010",
                    "auto",
                    "--timeout",
                    "1",
                    "--json",
                ],
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("\"event\":\"hop_limit\""),
                "{profile} listen {proto}: {err}"
            );
        }
        assert_eq!(from_a_at_b(&lab), 0, "{profile}: trace or punch reached B");
        for fw in lab.firewalls() {
            let c = lab.counters(&fw);
            assert_eq!(
                c["outside_rejects"] + c["outside_drops"],
                0,
                "{profile} {fw}: {c:?}"
            );
        }
        for (proto, port) in [("tcp", 4020u16), ("udp", 4021)] {
            let p = port.to_string();
            let mut events = String::new();
            let seen = lab.capture(
                "B",
                &format!("ip6 src {A}"),
                1000,
                Duration::from_millis(300),
                || {
                    let memory = common::empty_memory();
                    let out = lab.exec(
                        "A",
                        &[
                            "env",
                            &memory,
                            BIN,
                            "connect",
                            proto,
                            A,
                            &p,
                            B,
                            "5020",
                            "auto",
                            "--timeout",
                            "2",
                            "--json",
                        ],
                    );
                    events = String::from_utf8_lossy(&out.stderr).into_owned();
                },
            );
            let hop = events
                .lines()
                .find(|l| l.contains("\"event\":\"hop_limit\""))
                .unwrap_or_else(|| {
                    panic!("{profile} connect {proto}: no hop_limit event: {events}")
                });
            let hop: serde_json::Value = serde_json::from_str(hop).unwrap();
            assert_eq!(hop["hop_limit"], 2, "{hop}");
            assert_ne!(hop["trace_port"], port, "{hop}");
            let own = format!("{A}.{p} > {B}.5020");
            for pkt in &seen {
                assert!(
                    pkt.contains(&own),
                    "{profile} connect {proto}: not the session's flow at B: {pkt}"
                );
            }
        }
    }
}

/// A border firewall that does not send time exceeded: hop 2 (it) is silent, so 2 is no evidence;
/// `hops` recommends 3 (seen to expire at r1), and `listen` works with it and with `auto`.
#[test]
fn a_silent_border_firewall_gets_the_hop_limit_that_works() {
    let Some(lab) = Lab::up(
        "hpsil",
        &[
            "--local",
            "2",
            "--silent",
            "fwa2",
            "--remote-profile",
            "reject",
        ],
    ) else {
        return;
    };
    for (proto, sport) in [("tcp", "4000"), ("udp", "4001")] {
        let h = hops_json(&lab, proto, sport);
        assert_eq!(h["recommended_hop_limit"], 3, "{proto}: {h}");
        assert_eq!(h["hops"][1]["place"], "silent", "{h}");
    }
    assert!(lab.counters("fwa2")["silenced"] >= 2, "fwa2 was not silent");
    listen_works(&lab, "tcp", 4444, "3");
    listen_works(&lab, "udp", 4445, "auto");
    lab.assert_no_invalid("");
}

/// No router answers: no recommendation, a non-zero exit that says why, for `hops` and `auto`;
/// the trace stops after three silent hop limits, before B.
#[test]
fn no_replies_no_recommendation() {
    let Some(lab) = Lab::up("hpnone", &["--silent", "all"]) else {
        return;
    };
    let out = lab.run(
        "A",
        &[
            "hops", "--proto", "udp", "--sport", "4000", "--dst", B, "--dport", "5555", "--json",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no recommendation: no probe was seen to expire outside the site"),
        "{err}"
    );
    let h = hops_event(&out);
    assert_eq!(h["recommended_hop_limit"], serde_json::Value::Null, "{h}");
    assert_eq!(h["recommendation"]["silent"], 3, "{h}");
    let memory = common::empty_memory();
    let out = lab.exec(
        "A",
        &[
            "env",
            &memory,
            BIN,
            "listen",
            "udp",
            A,
            "4001",
            B,
            "5001",
            "auto",
            "--timeout",
            "5",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("hop limit auto") && err.contains("no recommendation"),
        "{err}"
    );
    assert_eq!(from_a_at_b(&lab), 0);
}

/// Both sites are /56s of one ISP /48, the ISP's routers in it too: without --site-prefix the site
/// is A's /56, so r1 is outside and fwb1 never counts as local.
#[test]
fn both_sites_in_one_48_need_no_site_prefix() {
    let Some(lab) = Lab::up("hp48", &["--same-48", "--remote-profile", "reject"]) else {
        return;
    };
    assert_eq!(lab.addr("B").to_string(), "2001:db8:1:200::5");
    for (proto, sport) in [("tcp", "4000"), ("udp", "4001"), ("sctp", "4002")] {
        let h = hops_json(&lab, proto, sport);
        assert_eq!(h["recommended_hop_limit"], 2, "{proto}: {h}");
        assert_eq!(h["site_prefix"], "2001:db8:1::/56", "{h}");
    }
    listen_works(&lab, "tcp", 4444, "auto");
    listen_works(&lab, "udp", 4445, "auto");
    assert_eq!(lab.counters("fwb1")["outside_rejects"], 0);
    lab.assert_no_invalid("");
}

/// `connect tcp … auto` on A, started after B's `connect tcp` is punching, between two rejecting
/// site firewalls: data both ways, zero INVALID drops, 10 runs of 10.
#[test]
fn connect_tcp_auto_started_after_its_peer_10_of_10() {
    let Some(lab) = Lab::up("hpcauto", &["--profile", "reject"]) else {
        return;
    };
    let stderr = lab.connect_tcp_runs(10, 4600, ("auto", "2"), true);
    for (run, ae) in stderr.iter().enumerate() {
        assert!(ae.contains("hop limit auto"), "run {run}: {ae}");
    }
}

/// The longest path the tests build (3 local firewalls, 3 routers, 2 remote firewalls, silent
/// beyond): the whole `hops` run, process start to exit, takes under a second.
#[test]
fn hops_over_the_longest_path_under_one_second() {
    let Some(lab) = Lab::up(
        "hplong",
        &["--local", "3", "--routers", "3", "--remote", "2"],
    ) else {
        return;
    };
    let started = Instant::now();
    let out = Command::new("ip")
        .env("STATE_DIRECTORY", lab.state_of("A"))
        .args([
            "netns",
            "exec",
            &lab.ns("A"),
            BIN,
            "hops",
            "--proto",
            "tcp",
            "--sport",
            "4000",
            "--dst",
            B,
            "--dport",
            "5555",
            "--json",
        ])
        .output()
        .unwrap();
    let wall = started.elapsed();
    println!(
        "hops over {} hops: {:.1} ms wall time",
        3 + 3 + 2 + 1,
        wall.as_secs_f64() * 1000.0
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = hops_event(&out);
    assert_eq!(h["recommended_hop_limit"], 4, "{h}");
    assert!(wall < Duration::from_secs(1), "hops took {wall:?}");
}

/// `hops` toward a destination no router has a route to (fwa1 answers "no route" for every hop
/// limit) and toward A's own address: no recommendation, a non-zero exit that says why, and
/// never a hop limit above those traced.
#[test]
fn no_recommendation_toward_an_unreachable_destination_or_the_host_itself() {
    let Some(lab) = Lab::up("hpunr", &[]) else {
        return;
    };
    for (dst, proto) in [
        ("2001:db8:dead::1", "udp"),
        ("2001:db8:dead::1", "tcp"),
        (A, "udp"),
        (A, "tcp"),
    ] {
        let out = lab.run(
            "A",
            &[
                "hops", "--proto", proto, "--sport", "4000", "--dst", dst, "--dport", "5555",
                "--json",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{proto} to {dst}: {err}");
        assert!(
            err.contains("no recommendation") || err.contains("no safe hop limit"),
            "{err}"
        );
        let h = hops_event(&out);
        assert_eq!(h["recommended_hop_limit"], serde_json::Value::Null, "{h}");
        let traced = h["hops"].as_array().map_or(0, Vec::len);
        assert!(
            traced <= 3,
            "{proto} to {dst}: the trace went on for {traced} hops: {h}"
        );
    }
}

/// `probe --watch` tells every probe of a run apart: three identical probes (`-c 3`) get their
/// three expiries in send order, and a sweep of the hop limit alone gets each hop's responder with
/// that probe's own hop limit.
#[test]
fn watch_matches_every_probe_of_a_run() {
    let Some(lab) = Lab::up("hpwatch", &[]) else {
        return;
    };
    let fates = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = lab.craft(
            "A",
            &[
                &["probe", "--sport", "4530", "--dst", B, "--dport", "5555"][..],
                args,
                &["--watch", "700ms", "--json"],
            ]
            .concat(),
        );
        common::events(&out)
            .into_iter()
            .filter(|e| e["event"] == "fate")
            .collect()
    };
    let f = fates(&["--proto", "tcp", "--hop-limit", "2", "-c", "3"]);
    assert_eq!(f.len(), 3, "{f:?}");
    for (i, e) in f.iter().enumerate() {
        assert_eq!(e["index"], i + 1, "{f:?}");
        assert_eq!(e["fate"]["fate"], "expired", "{f:?}");
        assert_eq!(e["fate"]["by"], lab.addr("r1").to_string(), "{f:?}");
        assert_eq!(e["hop_limit"], 2);
        assert_eq!(e["matched_in_order"], true);
    }
    let f = fates(&["--proto", "udp", "--hop-limit", "1-3"]);
    let by: Vec<(u64, String)> = f
        .iter()
        .map(|e| {
            (
                e["hop_limit"].as_u64().unwrap(),
                e["fate"]["by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        by,
        vec![
            (1, lab.addr("fwa1").to_string()),
            (2, lab.addr("r1").to_string()),
            (3, lab.addr("fwb1").to_string())
        ],
        "{f:?}"
    );
}

/// `probe --watch` closes with nping's statistics: answered, silent (lost) and the replies'
/// round-trip times, min/avg/max of the fates reported, in JSON and in the human line. Hop limit 2
/// expires at r1; hop limit 10 reaches B's firewall, which drops it without a word.
#[test]
fn watch_closes_with_loss_and_rtt_statistics() {
    let Some(lab) = Lab::up("hpstats", &[]) else {
        return;
    };
    let args = |json: bool| -> Vec<&str> {
        let mut a = vec![
            "probe",
            "--proto",
            "udp",
            "--sport",
            "4531",
            "--dst",
            B,
            "--dport",
            "5555",
            "--hop-limit",
            "2,2,10",
            "--watch",
            "700ms",
        ];
        if json {
            a.push("--json");
        }
        a
    };
    let out = lab.craft("A", &args(true));
    let events = common::events(&out);
    let rtts: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "fate")
        .filter_map(|e| e["rtt_ms"].as_f64())
        .collect();
    assert_eq!(rtts.len(), 2, "{out}");
    let s = events
        .iter()
        .find(|e| e["event"] == "fates")
        .unwrap_or_else(|| panic!("no fates event: {out}"));
    assert_eq!(
        (s["answered"].as_u64(), s["silent"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    assert!(
        (s["lost_percent"].as_f64().unwrap() - 33.333).abs() < 0.01,
        "{s}"
    );
    let min = rtts.iter().copied().fold(f64::MAX, f64::min);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 0.002;
    assert!(close(&s["rtt_min_ms"], min), "{s} vs {rtts:?}");
    assert!(close(&s["rtt_max_ms"], max), "{s} vs {rtts:?}");
    assert!(
        close(&s["rtt_avg_ms"], (rtts[0] + rtts[1]) / 2.0),
        "{s} vs {rtts:?}"
    );

    let human = lab.craft("A", &args(false));
    let last = human.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fates: 2 of 3 probes answered, 1 silent (33.3% lost); rtt min/avg/max "),
        "{human}"
    );
}

/// `-e/--interface` binds the raw socket to the interface: with a host route on A that sends B's
/// traffic into a dead-end veth, a plain probe never reaches the firewall, one sent with
/// `-e to-fwa1` does (its conntrack entry is there), and `hops -e to-fwa1` traces the real path.
/// An unknown interface is bad input naming the flag.
#[test]
fn interface_binds_the_raw_socket() {
    let Some(lab) = Lab::up("hpiface", &[]) else {
        return;
    };
    for cmd in [
        &[
            "ip", "link", "add", "dv0", "type", "veth", "peer", "name", "dv1",
        ][..],
        &["ip", "link", "set", "dv0", "up"],
        &["ip", "link", "set", "dv1", "up"],
        &[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{B}/128"),
            "dev",
            "dv0",
        ],
    ] {
        let out = lab.exec("A", cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    let probe = |sport: &str, iface: Option<&str>| {
        let mut args = vec![
            "probe",
            "--proto",
            "udp",
            "--sport",
            sport,
            "--dst",
            B,
            "--dport",
            "5555",
            "--hop-limit",
            "2",
        ];
        args.extend(iface.map(|i| ["-e", i]).iter().flatten());
        lab.craft("A", &args);
    };
    probe("4560", None);
    probe("4561", Some("to-fwa1"));
    // Both have been sent (craft checked the exit): the bound one made its entry at once, and
    // then the routed one, sent before it, had had its chance too.
    lab.wait_entry("fwa1", "udp", 4561, 5555);
    assert!(
        lab.entry("fwa1", "udp", 4560, 5555).is_none(),
        "the probe without -e went past the host route"
    );

    let out = lab.craft(
        "A",
        &[
            "hops", "--proto", "udp", "--sport", "4562", "--dst", B, "--dport", "5555", "-e",
            "to-fwa1", "--json",
        ],
    );
    let h: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(h["recommended_hop_limit"], 2, "{h}");

    let out = lab.run(
        "A",
        &[
            "probe", "--proto", "udp", "--sport", "4563", "--dst", B, "--dport", "5555", "-e",
            "nosuch0",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nosuch0") && err.contains("--interface"),
        "{err}"
    );
}

/// `--dst` takes a list or a file of targets: one run sends every target the whole sweep, one
/// target after the other (B and C each get an entry at A's firewall), and `--watch` matches each
/// target's replies to its own probes.
#[test]
fn dst_list_and_file_probe_every_target() {
    let Some(lab) = Lab::up("hplist", &[]) else {
        return;
    };
    let c = lab.addr("C").to_string();
    let list = format!("{B},{c}");
    let out = lab.craft(
        "A",
        &[
            "probe",
            "--proto",
            "udp",
            "--sport",
            "4580-4581",
            "--dst",
            &list,
            "--dport",
            "5555",
            "--hop-limit",
            "2",
            "--watch",
            "700ms",
            "--json",
        ],
    );
    let events = common::events(&out);
    let sent: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["event"] == "probe_sent")
        .map(|e| {
            (
                e["dst"].as_str().unwrap().to_string(),
                e["index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            (format!("[{B}]:5555"), 1),
            (format!("[{B}]:5555"), 2),
            (format!("[{c}]:5555"), 3),
            (format!("[{c}]:5555"), 4)
        ],
        "{out}"
    );
    for sport in [4580, 4581] {
        assert!(lab.entry("fwa1", "udp", sport, 5555).is_some(), "{sport}");
    }
    let ct = lab.conntrack("fwa1");
    let to_c = ct
        .iter()
        .filter(|l| l.contains("dst=2001:0db8:0003:0000:0000:0000:0000:0007"))
        .count();
    assert_eq!(to_c, 2, "{ct:#?}");
    // Every probe's fate, each matched to its own probe: with hop limit 2 all four expire at r1,
    // the path to B and the path to C parting only after it.
    let mut fates: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["event"] == "fate")
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["fate"]["by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    fates.sort();
    let r1 = lab.addr("r1").to_string();
    assert_eq!(
        fates,
        (1..=4).map(|i| (i, r1.clone())).collect::<Vec<_>>(),
        "{out}"
    );

    // The same from a file.
    let dir = common::scratch("hplist");
    let file = dir.join("targets.txt");
    std::fs::write(&file, format!("# the two peers\n{B}\n{c} # and C\n")).unwrap();
    let at = format!("@{}", file.display());
    let out = lab.craft(
        "A",
        &[
            "probe",
            "--proto",
            "udp",
            "--sport",
            "4582",
            "--dst",
            &at,
            "--dport",
            "5555",
            "--hop-limit",
            "2",
            "--json",
        ],
    );
    let dsts: Vec<String> = common::events(&out)
        .into_iter()
        .filter(|e| e["event"] == "probe_sent")
        .map(|e| e["dst"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        dsts,
        [format!("[{B}]:5555"), format!("[{c}]:5555")],
        "{out}"
    );
}

/// The round-trip time of a watched probe is its own, taken from the kernel's arrival time of the
/// reply, however late the reply is read: probes 200 ms apart each report far less than the gap
/// (a reply read only after the last probe would report 600, 400, 200 ms).
#[test]
fn watch_rtts_are_each_replys_own() {
    let Some(lab) = Lab::up("hprtt", &[]) else {
        return;
    };
    let out = udp_probe_to_b(
        &lab,
        "4590",
        &[
            "--hop-limit",
            "2",
            "-c",
            "4",
            "--delay",
            "200ms",
            "--watch",
            "500ms",
            "--json",
        ],
    );
    let rtts: Vec<f64> = common::events(&out)
        .into_iter()
        .filter(|e| e["event"] == "fate")
        .map(|e| e["rtt_ms"].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(rtts.len(), 4, "{out}");
    assert!(rtts.iter().all(|r| *r < 100.0), "{rtts:?}: {out}");
}

/// A signal during the watch ends it at once, and what had already come back is still matched
/// and counted (with its own arrival time); `-q` keeps only the closing statistics.
#[test]
fn a_signal_during_the_watch_still_counts_what_came_back() {
    let Some(lab) = Lab::up("hpwsig", &[]) else {
        return;
    };
    let mut run = lab.spawn(
        "A",
        &[
            common::BIN,
            "probe",
            "--proto",
            "udp",
            "--sport",
            "4591",
            "--dst",
            B,
            "--dport",
            "5555",
            "--hop-limit",
            "2",
            "-c",
            "3",
            "--watch",
            "30s",
            "--json",
            "-q",
        ],
    );
    assert!(
        run.wait_stdout("\"event\":\"summary\"", Duration::from_secs(10)),
        "the probes were not sent"
    );
    // The three expiries come back within milliseconds (A's kernel counts them); the watch
    // would wait 30 s.
    let expiries = || lab.snmp6("A", "Icmp6InTimeExcds");
    assert!(
        common::eventually(Duration::from_secs(5), || expiries() >= 3),
        "the expiries did not come"
    );
    run.signal(libc::SIGTERM);
    let (out, ended) = run.finish(Duration::from_secs(5));
    assert!(ended, "the watch did not end at the signal");
    assert_eq!(out.status.code(), Some(143));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("\"event\":\"fate\""), "-q: {stdout}");
    let fates =
        common::event(&stdout, "fates").unwrap_or_else(|| panic!("no fates event: {stdout}"));
    assert_eq!(fates["answered"], 3, "{fates}");
    assert!(fates["rtt_max_ms"].as_f64().unwrap() < 100.0, "{fates}");
}

/// A probe the kernel refuses (here an output rule on A that rejects it: EPERM) is reported as
/// built, not sent, counted in the errors, and not watched.
#[test]
fn a_refused_probe_is_not_reported_sent() {
    let Some(lab) = Lab::up("hpeperm", &[]) else {
        return;
    };
    for cmd in [
        "add table ip6 refuse",
        "add chain ip6 refuse out { type filter hook output priority 0 ; }",
        "add rule ip6 refuse out udp dport 5556 drop",
    ] {
        let out = lab.exec("A", &["sh", "-c", &format!("nft '{cmd}'")]);
        assert!(out.status.success(), "{cmd}: {out:?}");
    }
    let out = lab.run(
        "A",
        &[
            "probe",
            "--proto",
            "udp",
            "--sport",
            "4592",
            "--dst",
            B,
            "--dport",
            "5556",
            "--hop-limit",
            "2",
            "--watch",
            "300ms",
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(
        kinds.contains(&"probe_built") && !kinds.contains(&"probe_sent"),
        "{stdout}"
    );
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    assert_eq!(summary["sent"], 0, "{summary}");
    assert_eq!(summary["errors"]["EPERM"], 1, "{summary}");
    assert!(
        !kinds.contains(&"fate"),
        "a refused probe has no fate: {stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "nothing could be sent");
}
