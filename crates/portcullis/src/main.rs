//! The `portcullis` binary: command line, configuration loading, logging, wiring, signals.
//! Everything with behaviour lives in the library crates; this stays thin.
#![forbid(unsafe_code)]

mod check;
mod cli;
mod dev;
mod explain;
mod live;
mod logging;
mod probe;
mod reload;
mod serve;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc in every build. musl's allocator serializes threads on one lock and doubled
/// the CPU per large response of the static binary; glibc's kept the memory a burst of
/// connections had used (about 70 MiB after 1,000 connections, for good), where mimalloc
/// returns it and costs the same CPU or less (bench/README.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for every TLS user in the process, installed before any is
    // built (two providers in one process make rustls refuse to choose).
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("portcullis: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(cli::Command::Serve(cli.serve)) {
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::Check(args) => check::run(args).await,
            cli::Command::Dev(args) => dev::run(args).await,
            cli::Command::DevIdp(args) => dev::run_idp(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(2)
        }
    }
}
