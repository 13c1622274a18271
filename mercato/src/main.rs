//! The `mercato` binary: parse the command line, run, report errors.
#![forbid(unsafe_code)]

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = mercato::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mercato: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
