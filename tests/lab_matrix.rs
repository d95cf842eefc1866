//! Lab test: `scripts/lab.sh matrix`, the table users run, gives the outcome the lab shows for
//! every profile, protocol and hop limit (right, one too low, reaching the remote firewall).

mod common;

use std::process::Command;

#[test]
fn matrix_outcomes() {
    // Lab::up only to learn whether the lab can run here (and fail under SYNERGY_REQUIRE_LAB=1);
    // the matrix builds its own labs under another prefix.
    let Some(probe_lab) = common::Lab::up("mxchk", &[]) else {
        return;
    };
    drop(probe_lab);
    let out = Command::new(common::root().join("scripts/lab.sh"))
        .args(["--prefix", &common::unique("mxtest"), "matrix"])
        .env("SYNERGY_CRAFT", common::BIN)
        .output()
        .expect("lab.sh matrix");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "matrix failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    let mut rows = 0;
    for line in text.lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (profile, proto, label, peer, entry) = (w[0], w[1], w[2], w[4], w[5]);
        let want = match (profile, proto, label) {
            (_, _, "low") => "blocked",
            (_, _, "right") => "through",
            // A TCP probe that reaches a reject firewall draws a RST that kills the local entry.
            ("reject", "tcp", "high") => "blocked",
            // Elsewhere the remote firewall drops silently or answers with ICMPv6, which leaves
            // the local entry in place.
            (_, _, "high") => "through",
            _ => panic!("unexpected row {line}"),
        };
        assert_eq!(peer, want, "{line}");
        // The last local firewall holds the probe's entry exactly when the peer gets through.
        let expected_entry = match proto {
            "tcp" => "SYN_SENT",
            "udp" => "UNREPLIED",
            _ => "CLOSED",
        };
        assert_eq!(
            entry,
            if want == "through" {
                expected_entry
            } else {
                "none"
            },
            "{line}"
        );
        rows += 1;
    }
    assert_eq!(rows, 27, "3 profiles x 3 protocols x 3 hop limits");
}
