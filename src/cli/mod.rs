//! The `strata` command line. `strata serve` runs the broker; the `topic`, `produce`, `consume`,
//! `group` and `bench` commands come with the client.

mod serve;

pub use serve::ServeArgs;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Strata: a durable append-only log broker.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: serve gRPC on --listen, storing in --data-dir, until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(&args),
    }
}
