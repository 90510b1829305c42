//! `strata dev cluster`: several local brokers forming one cluster, for trying replication out.

use clap::{Args, Subcommand};
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
};

/// Options of `strata dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// What to start.
    #[command(subcommand)]
    pub command: DevCommand,
}

/// The dev subcommands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start brokers on 127.0.0.1 as one cluster, each in its own data directory, until Ctrl-C
    /// or SIGTERM (which stops them cleanly).
    #[command(after_help = "Example:\n  strata dev cluster\n  \
        STRATA_BROKER=127.0.0.1:9001 strata topic create orders -p 3 -r 3\n  \
        STRATA_BROKER=127.0.0.1:9001 strata cluster status")]
    Cluster {
        /// How many brokers.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
        brokers: u16,
        /// Broker N stores in DIR/N.
        #[arg(long, default_value = "data/dev")]
        data_dir: PathBuf,
        /// Broker 1's client port; broker N listens on PORT + N - 1.
        #[arg(long, default_value_t = 9001)]
        port: u16,
        /// Broker 1's Raft port; broker N's is RAFT_PORT + N - 1.
        #[arg(long, default_value_t = 7001)]
        raft_port: u16,
    },
}

/// Runs `strata dev`.
pub fn run(args: &DevArgs) -> ExitCode {
    let DevCommand::Cluster {
        brokers,
        data_dir,
        port,
        raft_port,
    } = &args.command;
    match cluster(*brokers, data_dir, *port, *raft_port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn port_of(base: u16, node: u16) -> Result<u16, String> {
    base.checked_add(node - 1)
        .ok_or_else(|| format!("port {base} + {} is past 65535", node - 1))
}

fn cluster(
    brokers: u16,
    data_dir: &std::path::Path,
    port: u16,
    raft_port: u16,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut peers = Vec::new();
    for node in 1..=brokers {
        peers.push(format!("{node}=127.0.0.1:{}", port_of(raft_port, node)?));
    }
    let peers = peers.join(",");
    let mut children: Vec<Child> = Vec::new();
    let stop = |children: &mut Vec<Child>| {
        for child in children.iter() {
            if let Ok(pid) = i32::try_from(child.id())
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        for child in children.iter_mut() {
            let _ = child.wait();
        }
    };
    for node in 1..=brokers {
        let dir = data_dir.join(node.to_string());
        let listen = format!("127.0.0.1:{}", port_of(port, node)?);
        let spawned = Command::new(&exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--listen",
                &listen,
                "--node-id",
                &node.to_string(),
                "--peers",
                &peers,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                stop(&mut children);
                return Err(format!("cannot start broker {node}: {e}"));
            }
        };
        // Each broker prints `listening on ADDR` once it serves; its logs go to our stderr.
        let listening = child.stdout.take().and_then(|out| {
            let mut lines = BufReader::new(out).lines();
            let found = lines
                .by_ref()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned));
            std::thread::spawn(move || for _ in lines {});
            found
        });
        children.push(child);
        let Some(addr) = listening else {
            stop(&mut children);
            return Err(format!(
                "broker {node} exited before it listened (its log is above)"
            ));
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "broker {node}: {addr} (data in {})", dir.display());
        let _ = out.flush();
    }
    println!(
        "try: STRATA_BROKER=127.0.0.1:{port} strata topic create orders -p 3 -r {brokers}; \
         STRATA_BROKER=127.0.0.1:{port} strata cluster status. Ctrl-C stops the brokers."
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // The signal handlers are made inside the runtime, which they need.
    runtime.block_on(async { super::serve::shutdown_signal().await });
    stop(&mut children);
    Ok(())
}
