//! The application edge: runs a parsed command line, adds context to errors, and maps them to exit
//! codes (0 success, 1 failure, 2 bad input, 77 missing privilege). Does I/O.

mod hops;
mod probe;

use crate::cli::{Cli, Command};
use crate::config::ConfigError;
use crate::net::NetError;
use crate::wire::WireError;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NOPERM: u8 = 77;

/// Sets up env_logger on stderr: `RUST_LOG` if set, else warn (info for the daemon, whose
/// routine lines are its record of who punched what), raised by each `-v`.
pub fn init_logging(cli: &Cli) {
    let daemon = matches!(cli.command, Command::Daemon(_));
    let level = match cli.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Probe(args) => probe::run(&args),
        Command::Hops(args) => hops::run(&args),
        Command::Daemon(args) => daemon(&args),
        Command::Listen(args) => crate::session::run(&crate::config::session_config(
            &args,
            crate::config::SessionMode::Listen,
        )?),
        Command::Connect(args) => crate::session::run(&crate::config::session_config(
            &args,
            crate::config::SessionMode::Connect,
        )?),
    }
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
    for cause in e.chain() {
        if cause.is::<ConfigError>() || cause.is::<WireError>() {
            return EXIT_USAGE;
        }
        match cause.downcast_ref::<NetError>() {
            Some(NetError::MissingCapability { .. }) => return EXIT_NOPERM,
            Some(NetError::NoSuchInterface(_)) | Some(NetError::LargerThanMtu { .. }) => {
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
