//! Lab harness for the integration tests: drives `scripts/lab.sh` (the same tool users run), reads
//! conntrack tables, counters and captures, and tears the lab down on drop, also when a test fails.
//! Does I/O: root, network namespaces, nftables, tcpdump.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_synergy-craft");

/// Runs what follows as `nobody`, with no capability at all.
pub const NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=-all",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab_script() -> PathBuf {
    root().join("scripts/lab.sh")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the lab cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and nftables need it)".into());
    }
    for tool in ["ip", "nft", "tcpdump"] {
        if !have(tool) {
            return Some(format!(
                "{tool} is not installed (scripts/test.sh installs it)"
            ));
        }
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Some("no network namespaces".into());
    }
    None
}

/// `prefix` made unique to this test process, so that two test runs on one machine (a developer's
/// and CI's) never share a lab.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:x}", std::process::id() & 0xfff)
}

/// A running lab with its own namespace prefix.
pub struct Lab {
    pub prefix: String,
}

impl Lab {
    /// Brings up a lab, or returns None after saying loudly why it cannot run. With
    /// SYNERGY_REQUIRE_LAB=1 (as CI sets it) a lab that cannot run fails the test instead.
    pub fn up(prefix: &str, opts: &[&str]) -> Option<Lab> {
        if let Some(why) = unavailable() {
            if std::env::var("SYNERGY_REQUIRE_LAB").as_deref() == Ok("1") {
                panic!("lab required (SYNERGY_REQUIRE_LAB=1) but unavailable: {why}");
            }
            eprintln!("\n*** LAB TEST SKIPPED ({prefix}): {why} ***\n");
            return None;
        }
        let lab = Lab {
            prefix: prefix.to_string(),
        };
        let out = lab.script(&[opts, &["up"]].concat());
        assert!(
            out.status.success(),
            "lab up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(lab)
    }

    pub fn script(&self, args: &[&str]) -> Output {
        Command::new(lab_script())
            .arg("--prefix")
            .arg(&self.prefix)
            .args(args)
            .output()
            .expect("run scripts/lab.sh")
    }

    /// The route memory directory of a node (STATE_DIRECTORY of every command run there): the
    /// lab's own, never the machine's /var/lib/synergy-craft.
    pub fn state_of(&self, node: &str) -> PathBuf {
        std::env::temp_dir().join(format!("synergy-state-{}-{node}", self.prefix))
    }

    /// Runs a command on a node.
    pub fn exec(&self, node: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .env("STATE_DIRECTORY", self.state_of(node))
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{}", self.prefix, node)
    }

    pub fn addr(&self, node: &str) -> Ipv6Addr {
        let out = self.script(&["addr", node]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("lab.sh addr gives an IPv6 address")
    }

    /// Runs `synergy-craft ARGS` on a node and checks that it succeeded.
    /// Runs synergy-craft with `args` on a node.
    pub fn run(&self, node: &str, args: &[&str]) -> Output {
        self.exec(node, &[&[BIN], args].concat())
    }

    /// Runs synergy-craft with `args` on a node, which must succeed; its stdout.
    pub fn craft(&self, node: &str, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            out.status.success(),
            "synergy-craft {args:?} on {node} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The conntrack entries of a node, one line each.
    pub fn conntrack(&self, node: &str) -> Vec<String> {
        let out = self.script(&["conntrack", node]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The conntrack entry of the flow `sport -> dport` of `proto` on a node, if any.
    pub fn entry(&self, node: &str, proto: &str, sport: u16, dport: u16) -> Option<String> {
        let needle = format!("sport={sport} dport={dport} ");
        self.conntrack(node)
            .into_iter()
            .find(|l| l.split_whitespace().nth(2) == Some(proto) && l.contains(&needle))
    }

    /// Waits (at most 10 s) for `node` to hold an entry for the flow `sport -> dport` of `proto`:
    /// the event that says a punch was seen there.
    pub fn wait_entry(&self, node: &str, proto: &str, sport: u16, dport: u16) {
        assert!(
            eventually(Duration::from_secs(10), || {
                self.entry(node, proto, sport, dport).is_some()
            }),
            "no {proto} entry {sport}->{dport} on {node}"
        );
    }

    /// No firewall of the lab dropped anything as INVALID (the table of one that did is shown).
    pub fn assert_no_invalid(&self, context: &str) {
        for fw in self.firewalls() {
            assert_eq!(
                self.counters(&fw)["invalid_drops"],
                0,
                "{context}: {fw} dropped INVALID packets: {:?}",
                self.conntrack(&fw)
            );
        }
    }

    /// `connect tcp` on A and on B, `runs` times on fresh ports (A's from `a_port`, B's 1000
    /// higher), each side sending "hello from NODE": every run gives data both ways and no
    /// INVALID drop on any firewall. With `b_first`, A starts only once B has punched. Returns
    /// A's stderr of each run.
    pub fn connect_tcp_runs(
        &self,
        runs: u16,
        a_port: u16,
        (a_hop, b_hop): (&str, &str),
        b_first: bool,
    ) -> Vec<String> {
        let (a, b) = (self.addr("A").to_string(), self.addr("B").to_string());
        let side = |node: &str, local: &str, lp: u16, peer: &str, pp: u16, hop: &str| {
            let script = format!(
                "(echo hello from {node}; sleep 3) | {BIN} connect tcp {local} {lp} {peer} {pp} {hop} --timeout 20"
            );
            self.spawn(node, &["sh", "-c", &script])
        };
        let mut stderr = Vec::new();
        for run in 0..runs {
            let (pa, pb) = (a_port + run, a_port + 1000 + run);
            let mut bs = side("B", &b, pb, &a, pa, b_hop);
            if b_first {
                assert!(
                    bs.wait_stderr("punched", Duration::from_secs(5)),
                    "run {run}: B never punched"
                );
            }
            let as_ = side("A", &a, pa, &b, pb, a_hop);
            let (ao, _) = as_.finish(Duration::from_secs(25));
            let (bo, _) = bs.finish(Duration::from_secs(5));
            let ae = String::from_utf8_lossy(&ao.stderr).into_owned();
            assert_eq!(
                String::from_utf8_lossy(&ao.stdout),
                "hello from B\n",
                "run {run} A: {ae}"
            );
            assert_eq!(
                String::from_utf8_lossy(&bo.stdout),
                "hello from A\n",
                "run {run} B: {}",
                String::from_utf8_lossy(&bo.stderr)
            );
            self.assert_no_invalid(&format!("run {run}"));
            stderr.push(ae);
        }
        stderr
    }

    /// One counter of a node's IPv6 statistics (`/proc/net/snmp6`, e.g. Ip6InTruncatedPkts).
    #[allow(dead_code)]
    pub fn snmp6(&self, node: &str, name: &str) -> u64 {
        let out = self.exec(node, &["cat", "/proc/net/snmp6"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {node}'s /proc/net/snmp6"))
    }

    /// A firewall's named counters: name -> packets.
    pub fn counters(&self, node: &str) -> HashMap<String, u64> {
        let out = self.script(&["counters", node]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.parse().ok()?))
            })
            .collect()
    }

    /// Captures on a node what matches `filter` while `during` runs, for at most `wait` after it
    /// (less when `count` packets arrive first). Returns tcpdump's lines.
    pub fn capture(
        &self,
        node: &str,
        filter: &str,
        count: usize,
        wait: Duration,
        during: impl FnOnce(),
    ) -> Vec<String> {
        let dir = std::env::temp_dir();
        let tag = format!("{}-{}-{:?}", self.prefix, node, std::thread::current().id())
            .replace(['(', ')'], "");
        let (out_path, err_path) = (
            dir.join(format!("cap-{tag}.out")),
            dir.join(format!("cap-{tag}.err")),
        );
        // `timeout` is only a safety net: the capture is stopped below, after `during` and `wait`.
        let secs = "60";
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(node),
                "timeout",
                secs,
                "tcpdump",
                "-i",
                "any",
                "-n",
                "-v",
                "-U",
                "-l",
            ])
            .args(["-c", &count.to_string(), filter])
            .stdout(std::fs::File::create(&out_path).expect("capture file"))
            .stderr(std::fs::File::create(&err_path).expect("capture file"))
            .spawn()
            .expect("tcpdump");
        let start = Instant::now();
        loop {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            if err.contains("listening on") {
                break;
            }
            let exited = child.try_wait().ok().flatten().is_some();
            assert!(
                !exited && start.elapsed() < Duration::from_secs(5),
                "tcpdump did not start: {err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        during();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        // With -v, tcpdump continues a packet on indented lines; keep one string per packet.
        let mut packets: Vec<String> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match packets.last_mut() {
                Some(last) if line.starts_with([' ', '\t']) => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                _ => packets.push(line.to_string()),
            }
        }
        packets
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
        for node in ["A", "B", "C"] {
            let _ = std::fs::remove_dir_all(self.state_of(node));
        }
    }
}

/// A process running on a lab node, with its stdin open until `close_stdin`.
pub struct Running {
    pub child: std::process::Child,
    /// What `wait_stdout` has read of stdout so far, and the thread reading it.
    stdout: Option<(SharedBytes, std::thread::JoinHandle<()>)>,
    /// The same for `wait_stderr`.
    stderr: Option<(SharedBytes, std::thread::JoinHandle<()>)>,
}

/// Reads a pipe to its end on a thread, into a buffer others can look at meanwhile.
fn read_along(
    mut pipe: impl std::io::Read + Send + 'static,
) -> (SharedBytes, std::thread::JoinHandle<()>) {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = std::sync::Arc::clone(&buf);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, reader)
}

type SharedBytes = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

impl Running {
    /// Sends `sig` to the command (`ip netns exec` execs it, so the child is the command).
    #[allow(dead_code)]
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid}");
    }

    /// Writes to the process's stdin; a process that has already ended is not an error here:
    /// the caller's assertions on its output say what happened.
    pub fn write(&mut self, data: &[u8]) {
        use std::io::Write;
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(data).and_then(|()| stdin.flush());
        }
    }

    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Waits at most `limit` for `needle` to appear on the process's stdout (read as it comes,
    /// and still returned whole by `finish`). True when it appeared.
    pub fn wait_stdout(&mut self, needle: &str, limit: Duration) -> bool {
        if self.stdout.is_none() {
            self.stdout = Some(read_along(self.child.stdout.take().expect("stdout piped")));
        }
        let buf = std::sync::Arc::clone(&self.stdout.as_ref().unwrap().0);
        self.wait_in(&buf, needle, limit)
    }

    /// Like `wait_stdout`, on stderr.
    pub fn wait_stderr(&mut self, needle: &str, limit: Duration) -> bool {
        if self.stderr.is_none() {
            self.stderr = Some(read_along(self.child.stderr.take().expect("stderr piped")));
        }
        let buf = std::sync::Arc::clone(&self.stderr.as_ref().unwrap().0);
        self.wait_in(&buf, needle, limit)
    }

    fn wait_in(&mut self, buf: &SharedBytes, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if String::from_utf8_lossy(&buf.lock().unwrap()).contains(needle) {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                std::thread::sleep(Duration::from_millis(50));
                return String::from_utf8_lossy(&buf.lock().unwrap()).contains(needle);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits at most `limit` for the process to end (killing it then) and returns its output and
    /// whether it ended by itself.
    pub fn finish(mut self, limit: Duration) -> (Output, bool) {
        self.close_stdin();
        let deadline = Instant::now() + limit;
        let mut ended = false;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !ended {
            let _ = self.child.kill();
        }
        let mut out = self.child.wait_with_output().expect("collect output");
        if let Some((buf, reader)) = self.stdout.take() {
            let _ = reader.join();
            out.stdout = std::mem::take(&mut *buf.lock().unwrap());
        }
        if let Some((buf, reader)) = self.stderr.take() {
            let _ = reader.join();
            out.stderr = std::mem::take(&mut *buf.lock().unwrap());
        }
        (out, ended)
    }
}

impl Lab {
    /// Starts `args` on a node with stdin, stdout and stderr piped.
    pub fn spawn(&self, node: &str, args: &[&str]) -> Running {
        let child = Command::new("ip")
            .env("STATE_DIRECTORY", self.state_of(node))
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn on lab node");
        Running {
            child,
            stdout: None,
            stderr: None,
        }
    }

    /// Every firewall of the lab (fwa*, fwb*).
    pub fn firewalls(&self) -> Vec<String> {
        let out = self.script(&["info"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("fwa") || n.starts_with("fwb"))
            .map(str::to_string)
            .collect()
    }
}

pub fn target_dir() -> PathBuf {
    PathBuf::from(BIN)
        .parent()
        .expect("target dir")
        .to_path_buf()
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("synergy-api-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Command::new("chmod").arg("755").arg(&d).status().unwrap();
    d
}

/// tests/c/synergy_test.c compiled against the library with cc, once per test process: tests run
/// in parallel, and a second compile rewriting the program while another test runs it made that
/// run fail with EACCES.
pub fn c_program() -> PathBuf {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(compile_c_program).clone()
}

fn compile_c_program() -> PathBuf {
    let lib = target_dir().join("libsynergy_craft.so");
    // Always: a library left from an earlier build must not stand in for this one.
    let st = Command::new("cargo")
        .args(["build", "--lib"])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(st.success() && lib.exists());
    let out = scratch("c").join("synergy_test");
    let cc = Command::new("cc")
        .args(["-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(root().join("tests/c/synergy_test.c"))
        .arg(format!("-I{}", root().join("include").display()))
        .arg(format!("-L{}", target_dir().display()))
        .arg(format!("-Wl,-rpath,{}", target_dir().display()))
        .arg("-lsynergy_craft")
        .output()
        .expect("cc");
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    out
}

pub fn example() -> PathBuf {
    target_dir().join("examples/punch")
}

/// Runs `f` on a thread that has entered the lab node's network namespace (so that sockets it
/// makes belong to that node).
pub fn in_netns<T: Send + 'static>(
    lab: &Lab,
    node: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{}", lab.ns(node));
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on this thread only, with an open namespace fd.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        f()
    })
    .join()
    .expect("netns thread")
}

/// Starts the daemon on node A at `sock` and waits for its socket file.
pub fn start_daemon(lab: &Lab, sock: &str, extra: &[&str]) -> Running {
    start_daemon_env(lab, &[], sock, extra)
}

/// `start_daemon` with environment settings (`NAME=value`) for the daemon. Its route memory is
/// in the socket's directory (STATE_DIRECTORY, unless `env` sets it): never the host's /var/lib.
pub fn start_daemon_env(lab: &Lab, env: &[&str], sock: &str, extra: &[&str]) -> Running {
    let state = format!("STATE_DIRECTORY={}", state_dir(sock).display());
    let d = lab.spawn(
        "A",
        &[
            &["env", state.as_str()],
            env,
            &[BIN, "daemon", "--socket", sock],
            extra,
        ]
        .concat(),
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if Path::new(sock).exists() {
            return d;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, _) = d.finish(Duration::from_millis(100));
    panic!(
        "daemon did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon's status as root on A reads it (`synergy-craft status --json`), one JSON object.
#[allow(dead_code)]
pub fn daemon_status(lab: &Lab, sock: &str) -> serde_json::Value {
    let out = lab.exec(
        "A",
        &[
            "env",
            &format!("SYNERGY_DAEMON_SOCKET={sock}"),
            BIN,
            "status",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is one JSON object")
}

/// `STATE_DIRECTORY=` an empty directory of its own, to put after `env` in a command's arguments:
/// a route memory that knows nothing, for a run whose `auto` must trace.
#[allow(dead_code)]
pub fn empty_memory() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "STATE_DIRECTORY={}",
        scratch(&format!("empty-memory-{n}")).display()
    )
}

/// The route memory directory of the daemon at socket path `sock`: `state` beside it.
pub fn state_dir(sock: &str) -> PathBuf {
    Path::new(sock)
        .parent()
        .expect("the socket is in a directory")
        .join("state")
}

/// The events of a command's JSON Lines output (docs/JSON.md), each parsed; a line that is not
/// JSON fails the test.
#[allow(dead_code)]
pub fn events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The last JSON event named `name` in a command's output (lines that are not JSON, such as
/// human lines on stderr, are passed over).
#[allow(dead_code)]
pub fn event(out: &str, name: &str) -> Option<serde_json::Value> {
    out.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == name)
}

/// Polls `done` every 20 ms until it holds or `limit` has passed; whether it held. The way to
/// wait for an event the lab shows (an entry, a counter, a state), never a fixed sleep.
#[allow(dead_code)]
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
