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

/// Sets up env_logger on stderr: `RUST_LOG` if set, else warn, raised by each `-v`.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
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
    let bad = |rule: &'static str, value: String| ConfigError::Invalid {
        flag: "daemon",
        value,
        rule,
    };
    let mode = u32::from_str_radix(a.mode.trim_start_matches("0o"), 8)
        .map_err(|_| bad("--mode is octal, e.g. 660", a.mode.clone()))?;
    if a.min_hop == 0 || a.min_hop > a.max_hop {
        return Err(bad(
            "--min-hop must be at least 1 and at most --max-hop",
            format!("{}-{}", a.min_hop, a.max_hop),
        )
        .into());
    }
    let policy = crate::daemon::Policy {
        allow_uids: a.allow_uid.clone(),
        allow_gids: a.allow_gid.clone(),
        min_hop: a.min_hop,
        max_hop: a.max_hop,
        rate: a.rate.max(1),
    };
    crate::daemon::serve(
        a.socket.as_deref().unwrap_or(crate::daemon::DEFAULT_SOCKET),
        &policy,
        mode,
    )
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
