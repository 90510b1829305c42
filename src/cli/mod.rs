//! The `strata` command line, `noun verb`: `serve` runs the broker; `topic`, `produce`, `consume`
//! and `group` are clients of a running broker (`--broker`, `--output text|json`); `completions`
//! prints a shell completion script.

mod auth;
mod bench;
mod cluster;
mod common;
mod consume;
mod dev;
mod group;
mod produce;
mod serve;
mod topic;

pub use auth::{AuthArgs, AuthCommand};
pub use bench::{BenchArgs, BenchMode, LoadArgs};
pub use common::{ClientArgs, Output};
pub use consume::ConsumeArgs;
pub use group::{GroupArgs, GroupCommand};
pub use produce::ProduceArgs;
pub use serve::ServeArgs;
pub use topic::{CreateArgs, TopicArgs, TopicCommand};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// Strata: a durable append-only log broker.
#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:\n  strata serve\n  strata topic create orders -p 3\n  \
        echo 'hello' | strata produce orders\n  strata consume orders -g billing\n  \
        strata group describe billing"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: serve gRPC on --listen, storing in --data-dir, until SIGINT or SIGTERM.
    #[command(after_help = "Examples:\n  strata serve\n  \
        strata serve --data-dir /var/lib/strata --listen 0.0.0.0:50051\n  \
        strata serve --config strata.toml\n\n\
        A --config file holds the same settings as the flags (flags and their environment \
        variables win), e.g.:\n  data-dir = \"/var/lib/strata\"\n  listen = \"127.0.0.1:50051\"\n  \
        max-partitions-per-topic = 1024")]
    Serve(ServeArgs),
    /// Create, list, describe, alter and delete topics.
    Topic(TopicArgs),
    /// Produce records to a topic, one per input line.
    Produce(ProduceArgs),
    /// Print a topic's records, optionally as a consumer group.
    Consume(ConsumeArgs),
    /// List consumer groups and show their lag.
    Group(GroupArgs),
    /// Show a cluster's brokers and each partition's leader, replicas and their lag.
    Cluster(cluster::ClusterArgs),
    /// Start local brokers as one cluster, for trying replication out.
    Dev(dev::DevArgs),
    /// Load-test a running broker: produce, consume (replay) or end-to-end latency.
    Bench(BenchArgs),
    /// Manage the principals file of `strata serve --auth-file`: tokens and allow rules.
    Auth(AuthArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  strata completions bash > ~/.local/share/bash-completion/completions/strata\n  \
        strata completions zsh > ~/.zfunc/_strata\n  \
        strata completions fish > ~/.config/fish/completions/strata.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve(mut args) => {
            if let Some(serve) = matches.subcommand_matches("serve")
                && let Err(message) = args.apply_config_file(serve)
            {
                let _ = writeln_stderr(&format!("error: {message}"));
                return ExitCode::from(2);
            }
            serve::run(&args)
        }
        Command::Topic(args) => common::run(topic::run(args)),
        Command::Produce(args) => common::run(produce::run(args)),
        Command::Consume(args) => common::run(consume::run(args)),
        Command::Group(args) => common::run(group::run(args)),
        Command::Cluster(args) => common::run(cluster::run(args)),
        Command::Dev(args) => dev::run(&args),
        Command::Bench(args) => bench::run(args),
        Command::Auth(args) => auth::run(args),
        Command::Completions { shell } => completions(shell),
    }
}

/// Prints the completion script. clap_complete panics on a failed write, so the script is made
/// in memory first; a reader that closes the pipe early (`| head -1`) ends it quietly.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "strata", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln_stderr(&format!("error: writing to stdout: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr().lock(), "{text}")
}
