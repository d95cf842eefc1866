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
