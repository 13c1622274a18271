//! The `mercato` binary: parse the command line, run, report errors.
#![forbid(unsafe_code)]

use clap::Parser as _;

/// mimalloc rather than the system's malloc: a request through the gateway allocates and frees
/// dozens of small blocks (hyper's and axum's messages, futures), which cost glibc's allocator
/// about a fifth of the gateway's instructions (README, "Gateway against nginx").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
