//! The `synergy-craft` binary: parse the command line, run it, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use synergy_craft::{app, cli::Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
    match app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(app::report_error(&e, json)),
    }
}
