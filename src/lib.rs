//! synergy-craft: punches holes in stateful IPv6 firewalls the SocketSynergy way, with exact,
//! hand-built TCP SYN, UDP and SCTP INIT probes whose hop limit ends just past the local firewalls.
//!
//! Layout: `wire` (the `synergy-wire` crate: pure packet views and builders, depending on nothing
//! here), `param` and `config` (validated input, pure), `reply` (which probe a reply answers,
//! pure), `trace` (the hop-limit trace, and in `trace::hops` what it found; sockets only
//! through `net`'s two traits), `net` (sockets and privilege, the reply sockets and the traits
//! `PacketSender` and `ReplySource`, I/O), `punch` (what a caller may punch for, and punching
//! it), `api` and `capi` (the synergy() call and the TCP sequences for Rust and C), `daemon`
//! (client and protocol; its server runs as `synergy-craft daemon`), `session`
//! (`listen`/`connect`), `output` (reports, I/O), `cli` (raw arguments and the table of sweepable
//! fields) and `app` (the command runners and exit codes). The command line (`app`, `cli`,
//! `config`, `output`, `session`, `trace`, the daemon's server) is the default feature `cli`; the
//! library path (`api`, `capi`, `punch`, `net`, the daemon's client) never uses its types and
//! builds without it.

// Without the command (`--no-default-features`), the machinery only it uses (sweeps, the reply
// sockets, the link-layer sender, ...) is still compiled, and unused.
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]

// What programs use: the synergy() call, the values it takes, the packet builder and reply
// matcher, and the daemon's client side and wire protocol.
pub mod api;
pub mod daemon;
pub mod param;
pub mod reply;
pub mod routes;
/// The packet layer, its own crate (`crates/synergy-wire`), depending on nothing of the rest.
pub use synergy_wire as wire;

// The command line (feature `cli`), the C ABI (its symbols are exported from the cdylib by
// name) and the machinery below the API: not library API.
#[cfg(feature = "cli")]
mod app;
mod capi;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod config;
#[cfg(test)]
mod fixtures;
mod keep;
mod net;
#[cfg(feature = "cli")]
mod output;
mod punch;
#[cfg(feature = "cli")]
mod session;
#[cfg(feature = "cli")]
mod trace;

/// The `synergy-craft` command: parses the command line, runs it, and maps errors to exit codes
/// (0 success, 1 failure, 2 bad input, 77 missing privilege, 130/143 ended by SIGINT/SIGTERM).
/// The binary's entry point; not for programs.
#[doc(hidden)]
#[cfg(feature = "cli")]
pub fn cli_main() -> std::process::ExitCode {
    use clap::Parser;
    use std::process::ExitCode;
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!(
                "synergy-craft: {}",
                app::usage_line(&e.render().to_string())
            );
            return ExitCode::from(app::EXIT_USAGE);
        }
        Err(e) => e.exit(),
    };
    let json = app::json_stream(&cli);
    app::init_logging(&cli, json);
    let result = match (app::run(cli), app::stop::signalled()) {
        // A signal came (and may have made a system call fail): the run was interrupted.
        (_, Some(sig)) => Err(anyhow::Error::from(app::stop::Interrupted(sig))),
        (r, None) => r,
    };
    if !app::stop::claim_report() {
        // The signal thread reports and exits the process; should it not, end as interrupted.
        std::thread::sleep(std::time::Duration::from_secs(5));
        return ExitCode::from(
            app::stop::signalled()
                .map_or(app::EXIT_FAILURE, |s| u8::try_from(128 + s).unwrap_or(1)),
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(app::report_error(&e, json)),
    }
}

/// An error and every cause under it, as one line ("what: why: the OS's words"), for a reply:
/// the caller sees why, not only what.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
