//! The application edge: runs a parsed command line, adds context to errors, and maps them to exit
//! codes (0 success, 1 failure, 2 bad input, 77 missing privilege). Does I/O.

mod fates;
mod hops;
pub(crate) use hops::remember;
mod probe;
mod report;
pub mod stop;

use crate::cli::{Cli, Command};
use crate::config::ConfigError;
use crate::net::{NetError, privilege};
use crate::wire::WireError;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NOPERM: u8 = 77;

/// Where a command with `--json` writes its JSON events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStream {
    /// `probe` and `hops`: their results on stdout.
    Stdout,
    /// `listen` and `connect`: stdout carries the peer's bytes, events go to stderr.
    Stderr,
}

/// The JSON stream of a command run with `--json`, if it was.
pub fn json_stream(cli: &Cli) -> Option<JsonStream> {
    match &cli.command {
        Command::Probe(a) if a.json => Some(JsonStream::Stdout),
        Command::Hops(a) if a.json => Some(JsonStream::Stdout),
        Command::Routes(a) | Command::Status(a) if a.json => Some(JsonStream::Stdout),
        Command::Listen(a) | Command::Connect(a) if a.json => Some(JsonStream::Stderr),
        _ => None,
    }
}

/// Says why a command failed and returns its exit code: a line on stderr, and with `--json` an
/// `error` event on the command's JSON stream (for `listen`/`connect`, whose stderr is that
/// stream, only the event).
pub fn report_error(e: &anyhow::Error, json: Option<JsonStream>) -> u8 {
    // Written where it can be: stdout or stderr may be the closed pipe that failed the command.
    use std::io::Write;
    let code = exit_code(e);
    let message = format!("{e:#}");
    if json != Some(JsonStream::Stderr) {
        let _ = writeln!(std::io::stderr(), "synergy-craft: {message}");
    }
    if let Some(stream) = json {
        let v = crate::output::json_event(
            "error",
            serde_json::json!({ "message": message, "exit_code": code }),
        );
        let _ = match stream {
            JsonStream::Stdout => writeln!(std::io::stdout(), "{v}"),
            JsonStream::Stderr => writeln!(std::io::stderr(), "{v}"),
        };
    }
    code
}

/// Sets up env_logger on stderr: `RUST_LOG` if set, else warn (info for the daemon, whose
/// routine lines are its record of who punched what), raised by each `-v`. When stderr is a
/// command's JSON stream, every log record is a `log` event on it.
pub fn init_logging(cli: &Cli, json: Option<JsonStream>) {
    let daemon = matches!(cli.command, Command::Daemon(_));
    let level = match cli.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    b.format_timestamp_millis();
    if json == Some(JsonStream::Stderr) {
        b.format(|buf, record| {
            use std::io::Write;
            let v = crate::output::json_event(
                "log",
                serde_json::json!({
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "message": record.args().to_string(),
                }),
            );
            writeln!(buf, "{v}")
        });
    }
    b.init();
}

/// Runs a command; a failure for want of privilege comes back naming every capability the
/// command needs and the one `setcap` line that grants them all.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    use crate::config::{SessionMode, session_config};
    use crate::wire::Proto;
    const RAW: &[Cap] = &[privilege::NET_RAW];
    // TCP sessions also fix sequence numbers and bind in repair mode.
    const RAW_ADMIN: &[Cap] = &[privilege::NET_RAW, privilege::NET_ADMIN];
    let session = |a: &crate::cli::SessionArgs, mode| -> anyhow::Result<()> {
        let cfg = session_config(a, mode)?;
        pcap_of_probes(cfg.pcap.as_deref())?;
        let needs = if cfg.proto == Proto::Tcp {
            RAW_ADMIN
        } else {
            RAW
        };
        needing(needs, || crate::session::run(&cfg))
    };
    if matches!(
        cli.command,
        Command::Hops(_) | Command::Listen(_) | Command::Connect(_)
    ) {
        let json = json_stream(&cli);
        stop::exit_on_signal(move |sig| {
            report_error(&anyhow::Error::from(stop::Interrupted(sig)), json);
        })?;
    }
    match cli.command {
        Command::Probe(args) if args.dry_run => probe::run(&args),
        Command::Probe(args) => needing(RAW, || probe::run(&args)),
        Command::Hops(args) => needing(RAW, || hops::run(&args)),
        Command::Daemon(args) => daemon(&args),
        Command::Listen(args) => session(&args, SessionMode::Listen),
        Command::Connect(args) => session(&args, SessionMode::Connect),
        Command::Routes(args) => report::routes(&args),
        Command::Status(args) => report::status(&args),
        Command::Generate(what) => generate(&what),
    }
}

/// With `--pcap FILE` (hops, listen, connect): every probe this process sends from now on is
/// written to FILE as it goes out (a probe sent for it by the daemon is the daemon's).
pub(crate) fn pcap_of_probes(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(p) = path {
        let file = crate::output::PcapFile::create(p)?;
        crate::net::raw::set_tap(Box::new(move |packet| file.write(packet)));
    }
    Ok(())
}

/// A capability as `privilege` names it: the capability, its name, its setcap spelling.
type Cap = (caps::Capability, &'static str, &'static str);

/// Runs `f`, which needs `needs`; what the process lacks of them is read before `f` can drop
/// anything, and a failure that missing privilege caused gets the hint in front.
/// `generate`: the man pages into a directory, or a completion script on stdout, both from the
/// clap definitions in `cli`.
fn generate(what: &crate::cli::Generated) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    match what {
        crate::cli::Generated::Man { dir } => {
            if !dir.is_dir() {
                return Err(crate::config::ConfigError::Invalid {
                    flag: "DIR",
                    value: dir.display().to_string(),
                    rule: "not a directory (make it first, e.g. /usr/local/share/man/man1)",
                }
                .into());
            }
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
        }
        crate::cli::Generated::Completions { shell } => {
            use std::io::Write;
            let name = cmd.get_name().to_string();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, &name, &mut script);
            let mut script = String::from_utf8(script).context("the completion script")?;
            if *shell == clap_complete::Shell::Bash {
                // clap_complete's bash script spells the state of a hyphenated program's
                // subcommands two ways, so no subcommand's options complete (clap-rs/clap#6421):
                // the dispatch's spelling is put where the loop's is.
                let loop_spelling = name.replace('-', "__");
                let dispatch_spelling = name.replace('-', "__subcmd__");
                script = script.replace(
                    &format!("{dispatch_spelling}__subcmd__"),
                    &format!("{loop_spelling}__subcmd__"),
                );
            }
            std::io::stdout()
                .write_all(script.as_bytes())
                .context("writing the completion script")?;
        }
    }
    Ok(())
}

fn needing(needs: &[Cap], f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|c| !privilege::has(c.0))
        .map(|c| c.1)
        .collect();
    f().map_err(|e| {
        if !missing.is_empty() && e.chain().any(is_privilege_refusal) {
            e.context(privilege_hint(needs, &missing))
        } else {
            e
        }
    })
}

/// Whether an error is what a missing privilege causes: a capability check, EPERM or EACCES from
/// the kernel, or no daemon to fall back on.
fn is_privilege_refusal(c: &(dyn std::error::Error + 'static)) -> bool {
    use crate::api::SynergyError;
    use crate::daemon::client::DaemonError;
    let denied = |n: i32| n == libc::EPERM || n == libc::EACCES;
    if let Some(e) = c.downcast_ref::<SynergyError>() {
        return matches!(e, SynergyError::Daemon(DaemonError::Unavailable { .. }))
            || denied(e.errno());
    }
    if let Some(e) = c.downcast_ref::<NetError>() {
        return denied(e.errno());
    }
    c.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
        .is_some_and(denied)
}

/// Missing privilege, said as one line's first part (the error it caused follows).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrivilegeHint(String);

fn privilege_hint(needs: &[Cap], missing: &[&str]) -> PrivilegeHint {
    let names: Vec<&str> = needs.iter().map(|c| c.1).collect();
    let setcap: Vec<&str> = needs.iter().map(|c| c.2).collect();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "synergy-craft".to_string());
    PrivilegeHint(format!(
        "this command needs {} ({} missing): run as root, or grant them to the binary once with `sudo setcap {}+ep {exe}`",
        names.join(" and "),
        missing.join(", "),
        setcap.join(",")
    ))
}

fn daemon(a: &crate::cli::DaemonArgs) -> anyhow::Result<()> {
    crate::daemon::serve(&crate::config::daemon_config(a)?)
}

/// clap's message for bad arguments as one line that keeps what names the problem: the missing
/// arguments, the possible values, the suggestion. Usage and help pointers are dropped; "see
/// --help" ends the line.
pub fn usage_line(rendered: &str) -> String {
    let mut out = String::new();
    for line in rendered.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("Usage:") || l.starts_with("For more information") {
            continue;
        }
        let item = line.starts_with([' ', '\t']) && !l.starts_with("tip:");
        let l = l.trim_start_matches("error: ");
        let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
        if !out.is_empty() {
            out.push_str(match (out.ends_with(':'), item) {
                (true, _) => " ",
                (false, true) => ", ",
                (false, false) => "; ",
            });
        }
        out.push_str(&l);
    }
    if out.is_empty() {
        out.push_str("invalid arguments");
    }
    format!("{out} (see --help)")
}

/// The exit code for an error: bad input, missing privilege, or any other failure.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(stop::Interrupted(sig)) = e.downcast_ref::<stop::Interrupted>() {
        return u8::try_from(128 + sig).unwrap_or(EXIT_FAILURE);
    }
    // A context is found by anyhow's downcast, not in the chain of sources.
    if e.downcast_ref::<PrivilegeHint>().is_some() {
        return EXIT_NOPERM;
    }
    for cause in e.chain() {
        if cause.is::<ConfigError>() || cause.is::<WireError>() {
            return EXIT_USAGE;
        }
        match cause.downcast_ref::<NetError>() {
            Some(NetError::MissingCapability { .. }) => return EXIT_NOPERM,
            Some(NetError::NoSuchInterface { .. }) | Some(NetError::LargerThanMtu { .. }) => {
                return EXIT_USAGE;
            }
            _ => {}
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::usage_line;

    #[test]
    fn one_usage_line_keeps_names_values_and_suggestions() {
        let missing = "error: the following required arguments were not provided:\n  --sport <SPORT>\n  --dport <DPORT>\n\nUsage: synergy-craft hops --proto <PROTO>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(missing),
            "the following required arguments were not provided: --sport <SPORT>, --dport <DPORT> (see --help)"
        );
        let value = "error: invalid value 'icmp' for '--proto <PROTO>'\n  [possible values: tcp, udp, sctp]\n\n  tip: a similar value exists: 'tcp'\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(value),
            "invalid value 'icmp' for '--proto <PROTO>', [possible values: tcp, udp, sctp]; tip: a similar value exists: 'tcp' (see --help)"
        );
        assert_eq!(usage_line(""), "invalid arguments (see --help)");
    }
}
