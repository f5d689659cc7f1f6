//! The `quiver` binary: the broker (`quiver serve`) and the operator's command line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = quiver::cli::Cli::parse();
    match quiver::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", quiver::cli::error_report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
