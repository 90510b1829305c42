//! What every client command shares: `--broker` and `--output`, printing text tables or JSON
//! lines, and turning errors into a message and a hint on stderr.

use crate::client::{self, Channel, ClientError, DEFAULT_BROKER};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::{
    fmt::Write as _,
    future::Future,
    io::{self, BufWriter, StdoutLock, Write},
    process::ExitCode,
};
use tonic::Code;

/// Options of every command that talks to a broker. Its `Debug` never shows the token.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// The broker's gRPC URL; several brokers of a cluster, comma-separated, to spread calls
    /// over those that answer (so a command rides out the death of any one).
    #[arg(long, env = "STRATA_BROKER", default_value = DEFAULT_BROKER, global = true)]
    pub broker: String,
    /// How to print results: aligned text for people, or one JSON object per line for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// The bearer token of a principal, for a broker with a principals file (`strata auth add`
    /// prints one).
    #[arg(
        long,
        env = "STRATA_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM CA certificates the broker's certificate must chain to (TLS: the broker URL is then
    /// https://; without it an https:// URL is checked against the system's roots).
    #[arg(long, env = "STRATA_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for a broker that requires one (mutual TLS).
    #[arg(
        long,
        env = "STRATA_TLS_CERT",
        value_name = "FILE",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "STRATA_TLS_KEY",
        value_name = "FILE",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Send --token over plain http:// to a broker that is not on loopback (refused otherwise,
    /// since anyone on the path could read it): for a network you trust, such as a
    /// TLS-terminating proxy beside the broker.
    #[arg(long, env = "STRATA_PLAINTEXT_TOKEN", global = true)]
    pub plaintext_token: bool,
}

impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("broker", &self.broker)
            .field("output", &self.output)
            // The token, the TLS files and --plaintext-token, the token redacted.
            .field("connect", &self.connect_options())
            .finish_non_exhaustive()
    }
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables and sentences.
    Text,
    /// One JSON object per line.
    Json,
}

/// A failed command: what went wrong and, when we can tell, what to do about it.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    hint: Option<String>,
    /// stdout was closed by its reader (`| head`): stop quietly, successfully.
    quiet: bool,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            hint: None,
            quiet: false,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// A client error, with a hint for the common causes. `topic` is the topic the command is
    /// about, if any, for hints that name it.
    pub(crate) fn client(err: &ClientError, broker: &str, topic: Option<&str>) -> Failure {
        let failure = Failure::new(crate::errors::error_chain(err));
        if err.is_unreachable() {
            return failure.hint(format!(
                "is `strata serve` running at {broker}? Start it, or point --broker (or \
                 STRATA_BROKER) at the broker"
            ));
        }
        match (err.code(), topic) {
            (Some(Code::NotFound), Some(t)) if err.to_string().contains("topic") => {
                failure.hint(format!(
                    "`strata topic list` shows the topics; `strata topic create {t}` makes this one"
                ))
            }
            (Some(Code::AlreadyExists), Some(t)) => {
                failure.hint(format!("`strata topic describe {t}` shows it"))
            }
            (Some(Code::OutOfRange), Some(t)) => failure.hint(format!(
                "`strata topic describe {t}` shows each partition's earliest and next offsets"
            )),
            (Some(Code::Unavailable), _) => {
                failure.hint("the broker may be shutting down or overloaded; retry shortly")
            }
            (Some(Code::Unauthenticated), _) => failure.hint(
                "the broker checks principals: give a token with --token or STRATA_TOKEN \
                 (`strata auth add` makes one), or a client certificate",
            ),
            _ => failure,
        }
    }

    fn io(err: &io::Error, what: &str) -> Failure {
        if err.kind() == io::ErrorKind::BrokenPipe {
            return Failure {
                message: String::new(),
                hint: None,
                quiet: true,
            };
        }
        Failure::new(format!("{what}: {err}"))
    }

    /// Prints the failure to stderr and returns the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        if self.quiet {
            return ExitCode::SUCCESS;
        }
        let mut stderr = io::stderr().lock();
        let _ = writeln!(stderr, "error: {}", self.message);
        if let Some(hint) = &self.hint {
            let _ = writeln!(stderr, "hint: {hint}");
        }
        ExitCode::FAILURE
    }
}

/// Runs a client command on a small runtime and reports its failure.
pub(crate) fn run<F>(command: F) -> ExitCode
where
    F: Future<Output = Result<(), Failure>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::new(format!("could not start the async runtime: {e}")).report(),
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

impl ClientArgs {
    /// Connects to the broker, with the "is it running?" hint on failure.
    pub(crate) async fn connect(&self) -> Result<Channel, Failure> {
        client::connect_with(&self.broker, &self.connect_options())
            .await
            .map_err(|e| Failure::client(&e, &self.broker, None))
    }

    /// The TLS material given on the command line.
    pub(crate) fn connect_options(&self) -> client::ConnectOptions {
        client::ConnectOptions {
            token: self.token.clone(),
            plaintext_token: self.plaintext_token,
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }

    /// A client error of this command, with hints naming `topic`.
    pub(crate) fn fail(&self, err: &ClientError, topic: Option<&str>) -> Failure {
        Failure::client(err, &self.broker, topic)
    }

    pub(crate) fn printer(&self) -> Printer {
        Printer {
            out: BufWriter::new(io::stdout().lock()),
            output: self.output,
        }
    }
}

/// Buffered stdout in the chosen format.
pub(crate) struct Printer {
    out: BufWriter<StdoutLock<'static>>,
    pub(crate) output: Output,
}

impl Printer {
    /// A line of text.
    pub(crate) fn line(&mut self, text: &str) -> Result<(), Failure> {
        writeln!(self.out, "{text}").map_err(|e| Failure::io(&e, "writing to stdout"))
    }

    /// Raw bytes and a newline (record values are not always UTF-8).
    pub(crate) fn bytes_line(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| Failure::io(&e, "writing to stdout"))
    }

    /// One JSON object on its own line.
    pub(crate) fn json(&mut self, value: &impl Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string(value)
            .map_err(|e| Failure::new(format!("encoding JSON: {e}")))?;
        self.line(&text)
    }

    /// An aligned table: a header row, then the rows.
    pub(crate) fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate() {
                if i + 1 < widths.len() {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                } else {
                    line.push_str(cell);
                }
            }
            line
        };
        self.line(&render(&mut header.iter().copied()))?;
        for row in rows {
            self.line(&render(&mut row.iter().map(String::as_str)))?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), Failure> {
        self.out
            .flush()
            .map_err(|e| Failure::io(&e, "writing to stdout"))
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// Parses a byte size: `1048576`, `64KiB`, `512MiB`, `1GiB` (binary, also `K`, `M`, `G`, `T`),
/// or `KB`, `MB`, `GB`, `TB` (decimal: `1MB` is 1,000,000 bytes). The one parser of every size
/// flag (`serve`'s limits, `bench`'s sizes).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 1048576, 64KiB, 1GiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use KiB, MiB, GiB, or KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a duration in milliseconds: `500`, `500ms`, `30s`, `15m`, `12h`, `7d`.
pub(crate) fn parse_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 30s, 7d)"))?;
    let scale: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m, h, d)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A byte size the way it is typed, [`parse_bytes`]'s inverse: the largest binary unit that
/// divides it exactly (`256MiB`, `1GiB`, `1536KiB`), else plain bytes (`1000`).
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    match UNITS
        .iter()
        .find(|(scale, _)| bytes != 0 && bytes.is_multiple_of(*scale))
    {
        Some((scale, unit)) => format!("{}{unit}", bytes / scale),
        None => bytes.to_string(),
    }
}

/// A duration the way it is typed, [`parse_ms`]'s inverse: the largest unit that divides it
/// exactly (`7d`, `12h`, `15m`, `30s`), else milliseconds (`1500ms`).
pub(crate) fn format_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    match UNITS
        .iter()
        .find(|(scale, _)| ms != 0 && ms.is_multiple_of(*scale))
    {
        Some((scale, unit)) => format!("{}{unit}", ms / scale),
        None => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_print_the_way_they_are_typed_and_parse_back() {
        assert_eq!(format_bytes(256 << 20), "256MiB");
        assert_eq!(format_bytes(1 << 30), "1GiB");
        assert_eq!(format_bytes(1536 << 10), "1536KiB");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_ms(7 * 86_400_000), "7d");
        assert_eq!(format_ms(90 * 60_000), "90m");
        assert_eq!(format_ms(1500), "1500ms");
        assert_eq!(format_ms(0), "0ms");
        let mut x: u64 = 1;
        for i in 0..2000u64 {
            for n in [i, i << 10, i << 20, i * 1000, i * 60_000, i * 86_400_000, x] {
                assert_eq!(parse_bytes(&format_bytes(n)), Ok(n), "{n}");
                assert_eq!(parse_ms(&format_ms(n)), Ok(n), "{n}");
            }
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        assert_eq!(parse_bytes(&format_bytes(u64::MAX)), Ok(u64::MAX));
        assert_eq!(parse_ms(&format_ms(u64::MAX)), Ok(u64::MAX));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-1").is_err());
        // What `strata bench` accepted before it shared this parser.
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("2kb"), Ok(2000));
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("").is_err());
        // Decimal and binary units are told apart.
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_ms("250"), Ok(250));
        assert_eq!(parse_ms("30s"), Ok(30_000));
        assert_eq!(parse_ms("7d"), Ok(7 * 86_400_000));
        assert!(parse_ms("soon").is_err());
    }
}
