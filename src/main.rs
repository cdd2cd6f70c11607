use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match turnd::cli::run(turnd::cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("turnd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
