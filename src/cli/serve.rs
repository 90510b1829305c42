//! `strata serve`: open the broker, serve gRPC, shut down cleanly on SIGINT or SIGTERM.

use crate::broker::{Broker, BrokerConfig, ClusterConfig, GroupTimings, RaftTimings};
use crate::errors::error_chain;
use crate::server::{self, ServerConfig};
use crate::storage::DEFAULT_CACHED_TAIL_BYTES;
use clap::{ArgMatches, Args, parser::ValueSource};
use serde::Deserialize;
use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};
use tracing_subscriber::EnvFilter;

/// Options of `strata serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where topics and consumer-group offsets are stored.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The address to serve gRPC on (port 0: any free port; the bound address is printed).
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// The most partitions a topic may have.
    #[arg(long, default_value_t = 1024)]
    pub max_partitions_per_topic: u32,
    /// The largest request the server accepts, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// The most bytes one fetch or pushed message carries.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_fetch_bytes: usize,
    /// The most client connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A connection that has not sent the HTTP/2 preface this long after it is accepted is
    /// closed (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// The newest bytes of each partition kept in the page cache; older bytes are written back
    /// and dropped from it, so that new writes reuse their memory, and consumers further behind
    /// read from disk (with read-ahead). A value larger than any partition leaves it to the
    /// kernel.
    #[arg(long, default_value_t = DEFAULT_CACHED_TAIL_BYTES)]
    pub cached_tail_bytes: u64,
    /// How often consumer-group members heartbeat (told to them by the broker).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub group_heartbeat_interval: Duration,
    /// A group member silent this long is presumed dead and its partitions move to the others.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub group_session_timeout: Duration,
    /// Serve TLS with this PEM certificate chain (with --tls-key); clients then connect to
    /// https://. SIGHUP reloads the files without dropping connections.
    #[arg(
        long,
        env = "STRATA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "STRATA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates chaining to these PEM CA certificates (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Authenticate every request (a bearer token, or the client certificate's common name
    /// under mutual TLS) and check it against this principals file's rules (`strata auth` manages
    /// it; SIGHUP reloads it). Without it every client may do everything, and the broker listens
    /// only on loopback addresses unless --allow-anonymous.
    #[arg(long, env = "STRATA_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Serve without a principals file on a non-loopback address (anyone who can reach the
    /// port may then delete every topic).
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics (host:port; off by default). Plain HTTP
    /// and no authentication: bind it where only the scraper can reach it.
    #[arg(long, env = "STRATA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// How to write logs (to stderr): `text` for people (coloured only on a terminal), `json`
    /// for log collectors (one object per line, with the request's span: rpc, peer, principal,
    /// resource).
    #[arg(long, env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which logs to write: a level (`error`, `warn`, `info`, `debug`, `trace`) or per-module
    /// directives as RUST_LOG takes them (`info,strata::server=debug`: every answered request).
    /// Without it, RUST_LOG decides, else `info,openraft=error`.
    #[arg(long, env = "STRATA_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// This broker's node id in a cluster (with --peers), 1 to 255. Without it the broker is
    /// a cluster of one and its topics are not replicated.
    #[arg(
        long,
        env = "STRATA_NODE_ID",
        requires = "peers",
        value_parser = clap::value_parser!(u64).range(1..=255)
    )]
    pub node_id: Option<u64>,
    /// Every broker of the cluster, this one included, as ID=HOST:PORT of its Raft port,
    /// comma-separated: `1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003`. The Raft port is
    /// the brokers' own (no TLS or tokens yet): bind it where only the brokers reach it.
    #[arg(
        long,
        env = "STRATA_PEERS",
        value_delimiter = ',',
        value_parser = parse_peer,
        requires = "node_id"
    )]
    pub peers: Vec<(u64, String)>,
    /// Where to serve the brokers' Raft port (default: this broker's entry in --peers).
    #[arg(long, env = "STRATA_RAFT_LISTEN", value_name = "ADDR")]
    pub raft_listen: Option<String>,
    /// The address clients are told to reach this broker at, in leader hints and metadata
    /// (default: the bound --listen address).
    #[arg(long, env = "STRATA_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,
    /// How often a partition's Raft leader heartbeats its followers.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub raft_heartbeat_interval: Duration,
    /// A follower that hears nothing from its leader for this long (up to twice it, at
    /// random) stands for election.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub raft_election_timeout: Duration,
    /// A TOML file with any of these settings (keys as the flags: `data-dir = "..."`); flags
    /// and environment variables win over it.
    #[arg(long, value_name = "FILE", env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
}

/// One `--peers` entry: `ID=HOST:PORT`.
fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("{s:?}: node id {id:?}: {e}"))?;
    let addr = addr.trim();
    if addr
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!("{s:?}: {addr:?} is not HOST:PORT"));
    }
    Ok((id, addr.to_owned()))
}

/// The settings a `--config` file may hold: the flags' names, kebab- or snake-case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServeFile {
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    #[serde(alias = "max_partitions_per_topic")]
    max_partitions_per_topic: Option<u32>,
    #[serde(alias = "max_request_bytes")]
    max_request_bytes: Option<usize>,
    #[serde(alias = "max_fetch_bytes")]
    max_fetch_bytes: Option<usize>,
    #[serde(alias = "cached_tail_bytes")]
    cached_tail_bytes: Option<u64>,
    #[serde(alias = "auth_file")]
    auth_file: Option<PathBuf>,
    #[serde(alias = "allow_anonymous")]
    allow_anonymous: Option<bool>,
    #[serde(alias = "tls_cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls_key")]
    tls_key: Option<PathBuf>,
    #[serde(alias = "tls_client_ca")]
    tls_client_ca: Option<PathBuf>,
    #[serde(alias = "max_connections")]
    max_connections: Option<u32>,
    #[serde(alias = "handshake_timeout")]
    handshake_timeout: Option<String>,
    #[serde(alias = "group_heartbeat_interval")]
    group_heartbeat_interval: Option<String>,
    #[serde(alias = "group_session_timeout")]
    group_session_timeout: Option<String>,
    #[serde(alias = "metrics_listen")]
    metrics_listen: Option<String>,
    #[serde(alias = "log_format")]
    log_format: Option<LogFormat>,
    #[serde(alias = "log_level")]
    log_level: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

impl ServeArgs {
    /// Reads `--config`, if given, into every setting not given as a flag or environment
    /// variable. `matches` are the `serve` subcommand's, which tell where each value came from.
    pub fn apply_config_file(&mut self, matches: &ArgMatches) -> Result<(), String> {
        let Some(path) = &self.config else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        let file: ServeFile =
            toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        let defaulted = |id: &str| {
            matches!(
                matches.value_source(id),
                None | Some(ValueSource::DefaultValue)
            )
        };
        if let Some(v) = file.data_dir.filter(|_| defaulted("data_dir")) {
            self.data_dir = v;
        }
        if let Some(v) = file.listen.filter(|_| defaulted("listen")) {
            self.listen = v;
        }
        if let Some(v) = file
            .max_partitions_per_topic
            .filter(|_| defaulted("max_partitions_per_topic"))
        {
            self.max_partitions_per_topic = v;
        }
        if let Some(v) = file
            .max_request_bytes
            .filter(|_| defaulted("max_request_bytes"))
        {
            self.max_request_bytes = v;
        }
        if let Some(v) = file
            .max_fetch_bytes
            .filter(|_| defaulted("max_fetch_bytes"))
        {
            self.max_fetch_bytes = v;
        }
        if let Some(v) = file
            .cached_tail_bytes
            .filter(|_| defaulted("cached_tail_bytes"))
        {
            self.cached_tail_bytes = v;
        }
        if let Some(v) = file.auth_file.filter(|_| defaulted("auth_file")) {
            self.auth_file = Some(v);
        }
        if let Some(v) = file
            .allow_anonymous
            .filter(|_| defaulted("allow_anonymous"))
        {
            self.allow_anonymous = v;
        }
        if let Some(v) = file.metrics_listen.filter(|_| defaulted("metrics_listen")) {
            self.metrics_listen = Some(v);
        }
        if let Some(v) = file.log_format.filter(|_| defaulted("log_format")) {
            self.log_format = v;
        }
        if let Some(v) = file.log_level.filter(|_| defaulted("log_level")) {
            self.log_level = Some(v);
        }
        if let Some(v) = file.tls_cert.filter(|_| defaulted("tls_cert")) {
            self.tls_cert = Some(v);
        }
        if let Some(v) = file.tls_key.filter(|_| defaulted("tls_key")) {
            self.tls_key = Some(v);
        }
        if let Some(v) = file.tls_client_ca.filter(|_| defaulted("tls_client_ca")) {
            self.tls_client_ca = Some(v);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("TLS needs both a certificate and its key (tls-cert and tls-key)".into());
        }
        if let Some(v) = file
            .max_connections
            .filter(|_| defaulted("max_connections"))
        {
            self.max_connections = v;
        }
        if let Some(v) = file
            .handshake_timeout
            .filter(|_| defaulted("handshake_timeout"))
        {
            self.handshake_timeout = humantime::parse_duration(&v)
                .map_err(|e| format!("config file {}: handshake-timeout: {e}", path.display()))?;
        }
        if let Some(v) = file
            .group_heartbeat_interval
            .filter(|_| defaulted("group_heartbeat_interval"))
        {
            self.group_heartbeat_interval = humantime::parse_duration(&v).map_err(|e| {
                format!(
                    "config file {}: group-heartbeat-interval: {e}",
                    path.display()
                )
            })?;
        }
        if let Some(v) = file
            .group_session_timeout
            .filter(|_| defaulted("group_session_timeout"))
        {
            self.group_session_timeout = humantime::parse_duration(&v).map_err(|e| {
                format!("config file {}: group-session-timeout: {e}", path.display())
            })?;
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The broker's settings: data and topics.
    fn broker_config(&self) -> BrokerConfig {
        let mut config = BrokerConfig::new(&self.data_dir);
        config.max_partitions_per_topic = self.max_partitions_per_topic;
        // A record larger than a request could never arrive.
        config.max_record_bytes = self.max_request_bytes;
        config.cached_tail_bytes = Some(self.cached_tail_bytes);
        config.group_timings = GroupTimings {
            heartbeat_interval: self.group_heartbeat_interval,
            session_timeout: self.group_session_timeout,
        };
        config
    }

    /// The network edge's settings.
    fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::default();
        config.listen.clone_from(&self.listen);
        config.max_request_bytes = self.max_request_bytes;
        config.max_fetch_bytes = self.max_fetch_bytes;
        config.max_connections = self.max_connections as usize;
        config.handshake_timeout = self.handshake_timeout;
        config.auth_file.clone_from(&self.auth_file);
        config.metrics_listen.clone_from(&self.metrics_listen);
        config.raft_listen.clone_from(&self.raft_listen);
        config.advertise.clone_from(&self.advertise);
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        config
    }
}

/// What the logs show without --log-level or RUST_LOG: Strata's own at `info`, openraft's
/// errors only (it logs every election, replication stream and unreachable peer of every
/// partition group at `info` and `warn`: with thousands of groups, more log than work).
const DEFAULT_LOG_FILTER: &str = "info,openraft=error";

/// Starts the logs: to stderr, in `args.log_format`, filtered by --log-level, else RUST_LOG,
/// else [`DEFAULT_LOG_FILTER`]; ANSI colours only on a terminal.
fn init_logs(args: &ServeArgs) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter = match &args.log_level {
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|e| format!("--log-level {directives:?}: {e}"))?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// Runs the broker until SIGINT or SIGTERM. Prints `listening on ADDR` on stdout once it accepts
/// connections (and `metrics on http://ADDR/metrics` with --metrics-listen, in the log); logs go
/// to stderr.
pub fn run(args: &ServeArgs) -> ExitCode {
    if let Err(reason) = init_logs(args) {
        eprintln!("error: {reason}");
        return ExitCode::from(2);
    }

    raise_open_file_limit();
    let (config, server_config) = (args.broker_config(), args.server_config());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    if let Err(reason) = anonymous_only_on_loopback(args) {
        tracing::error!("{reason}");
        return ExitCode::FAILURE;
    }
    if args.auth_file.is_none() {
        tracing::warn!(
            "no --auth-file: every client is anonymous and may do everything (create, delete, \
             read, write)"
        );
    }
    if let Some(tls) = &server_config.tls
        && let Err(e) = tls.check()
    {
        tracing::error!(error = %error_chain(&e), "cannot serve TLS");
        return ExitCode::FAILURE;
    }
    let mut config = config;
    match cluster_config(args, runtime.handle()) {
        Ok(cluster) => config.cluster = cluster,
        Err(reason) => {
            tracing::error!("{reason}");
            return ExitCode::FAILURE;
        }
    }
    let broker = match Broker::open(config) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "could not open the broker");
            return ExitCode::FAILURE;
        }
    };

    let served = runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&server_config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %server_config.listen, error = %e, "could not listen");
                return false;
            }
        };
        let shutdown = shutdown_signal();
        match listener.local_addr() {
            Ok(addr) => {
                tracing::info!(
                    %addr,
                    data_dir = %args.data_dir.display(),
                    tls = server_config.tls.is_some(),
                    mutual_tls = server_config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
                    "serving"
                );
                let mut stdout = std::io::stdout().lock();
                // The one line scripts and tests wait for.
                let _ = writeln!(stdout, "listening on {addr}").and_then(|()| stdout.flush());
            }
            Err(e) => tracing::warn!(error = %e, "could not read the bound address"),
        }
        match server::serve(listener, broker.clone(), server_config, shutdown).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "the server failed");
                false
            }
        }
    });
    // The partitions' Raft groups run on the runtime: stop them while it still runs.
    broker.stop_replication();
    // Blocking tasks still finishing (a long fsync) get a moment; the logs are closed after.
    runtime.shutdown_timeout(Duration::from_secs(10));
    let closed = match broker.close() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "flushing the logs failed");
            false
        }
    };
    if served && closed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The cluster settings of --node-id and --peers, if given.
fn cluster_config(
    args: &ServeArgs,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<ClusterConfig>, String> {
    let Some(node_id) = args.node_id else {
        return Ok(None);
    };
    let mut peers = std::collections::BTreeMap::new();
    for (id, addr) in &args.peers {
        if !(1..=255).contains(id) {
            return Err(format!("--peers: node id {id} is outside 1..=255"));
        }
        if peers.insert(*id, addr.clone()).is_some() {
            return Err(format!("--peers names node {id} twice"));
        }
    }
    if !peers.contains_key(&node_id) {
        return Err(format!(
            "--node-id {node_id} is not among --peers ({:?}): list every broker, this one too",
            peers.keys().collect::<Vec<_>>()
        ));
    }
    if args.raft_election_timeout <= args.raft_heartbeat_interval {
        return Err(format!(
            "--raft-election-timeout ({:?}) must be longer than --raft-heartbeat-interval ({:?})",
            args.raft_election_timeout, args.raft_heartbeat_interval
        ));
    }
    let timings = RaftTimings {
        heartbeat: args.raft_heartbeat_interval,
        election_min: args.raft_election_timeout,
        election_max: args.raft_election_timeout * 2,
    };
    Ok(Some(ClusterConfig::new(
        node_id,
        peers,
        runtime.clone(),
        timings,
    )))
}

/// Without a principals file, only loopback listen addresses (unless --allow-anonymous).
fn anonymous_only_on_loopback(args: &ServeArgs) -> Result<(), String> {
    if args.auth_file.is_some() || args.allow_anonymous {
        return Ok(());
    }
    let host = args
        .listen
        .rsplit_once(':')
        .map_or(args.listen.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "refusing to serve anonymously on {}: without --auth-file anyone who can reach it may \
             delete every topic; give --auth-file FILE (see `strata auth add --help`), or \
             --allow-anonymous to serve anyway",
            args.listen
        ))
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed when this is called
/// (inside the runtime), not when the future is first polled: a signal sent as soon as
/// `listening on` is printed must already stop the broker cleanly.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for {name}");
            None
        }
    };
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(interrupt) => tracing::info!("SIGINT received"),
            () = wait(terminate) => tracing::info!("SIGTERM received"),
        }
    }
}

/// Each partition keeps its active segment open: raise the soft limit on open files to the hard
/// limit, so that thousands of partitions do not run into a default soft limit of 1,024.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            data_dir: "/srv/strata".into(),
            listen: "0.0.0.0:7000".into(),
            max_partitions_per_topic: 8,
            max_request_bytes: 2_000_000,
            max_fetch_bytes: 500_000,
            max_connections: 3,
            handshake_timeout: Duration::from_millis(250),
            cached_tail_bytes: 4096,
            group_heartbeat_interval: Duration::from_millis(300),
            group_session_timeout: Duration::from_secs(4),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_file: None,
            allow_anonymous: false,
            metrics_listen: Some("127.0.0.1:9464".into()),
            log_format: LogFormat::Json,
            log_level: None,
            node_id: None,
            peers: Vec::new(),
            raft_listen: None,
            advertise: None,
            raft_heartbeat_interval: Duration::from_millis(250),
            raft_election_timeout: Duration::from_secs(1),
            config: None,
        }
    }

    #[test]
    fn peers_are_id_equals_host_port() {
        assert_eq!(
            parse_peer("2=127.0.0.1:7002"),
            Ok((2, "127.0.0.1:7002".to_owned()))
        );
        for bad in [
            "127.0.0.1:7002",
            "x=127.0.0.1:7002",
            "2=127.0.0.1",
            "2=:7002",
            "2=h:port",
        ] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn anonymous_serving_is_only_on_loopback_unless_allowed() {
        let mut a = args();
        assert!(
            anonymous_only_on_loopback(&a).is_err(),
            "0.0.0.0 without a principals file"
        );
        for listen in ["127.0.0.1:0", "[::1]:7000", "localhost:7000"] {
            a.listen = listen.into();
            assert!(anonymous_only_on_loopback(&a).is_ok(), "{listen}");
        }
        a.listen = "0.0.0.0:7000".into();
        a.allow_anonymous = true;
        assert!(anonymous_only_on_loopback(&a).is_ok());
        a.allow_anonymous = false;
        a.auth_file = Some("p.json".into());
        assert!(anonymous_only_on_loopback(&a).is_ok());
    }

    #[test]
    fn the_flags_go_to_the_broker_or_the_server() {
        let args = args();
        let broker = args.broker_config();
        assert_eq!(broker.data_dir, PathBuf::from("/srv/strata"));
        assert_eq!(
            broker.group_timings,
            GroupTimings {
                heartbeat_interval: Duration::from_millis(300),
                session_timeout: Duration::from_secs(4),
            }
        );
        assert_eq!(broker.max_partitions_per_topic, 8);
        assert_eq!(
            broker.max_record_bytes, 2_000_000,
            "bounded by the request limit"
        );
        assert_eq!(broker.cached_tail_bytes, Some(4096));
        let server = args.server_config();
        assert_eq!(server.listen, "0.0.0.0:7000");
        assert_eq!(server.max_request_bytes, 2_000_000);
        assert_eq!(server.max_fetch_bytes, 500_000);
        assert_eq!(server.max_connections, 3);
        assert_eq!(server.handshake_timeout, Duration::from_millis(250));
        assert_eq!(server.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(
            server.fetch_bytes(0).ok(),
            Some(500_000),
            "the default fetch is at most the maximum"
        );
    }
}
