//! `strata topic create | list | describe | delete | alter`.

use super::common::{
    ClientArgs, Failure, Output, Printer, format_bytes, format_ms, parse_bytes, parse_ms,
};
use crate::client::{Admin, FsyncPolicy, TopicInfo, TopicSettings};
use clap::{Args, Subcommand};

/// Options of `strata topic`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata topic create orders -p 3\n  strata topic list\n  \
    strata topic describe orders\n  strata topic alter orders --set retention.ms=7d\n  \
    strata topic delete orders"
)]
pub struct TopicArgs {
    /// Broker and output options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do with topics.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// The topic subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "Examples:\n  strata topic create orders\n  \
        strata topic create clicks -p 6 --retention-ms 7d --segment-bytes 256MiB\n  \
        strata topic create metrics -p 3 --fsync interval:1000")]
    Create(CreateArgs),
    /// List every topic with its partitions and settings.
    #[command(after_help = "Examples:\n  strata topic list\n  strata topic list --output json")]
    List,
    /// Show a topic's settings and each partition's offsets, size and segments.
    #[command(after_help = "Example:\n  strata topic describe orders")]
    Describe {
        /// The topic.
        name: String,
    },
    /// Delete a topic and all its records.
    #[command(after_help = "Example:\n  strata topic delete orders")]
    Delete {
        /// The topic.
        name: String,
    },
    /// Change a topic's settings.
    #[command(
        after_help = "Keys: retention.ms (-1: forever), retention.bytes (-1: no limit), \
        segment.bytes, segment.ms (-1: never by age), fsync (always, never, interval:MS), \
        fsync.interval.ms, max.record.bytes. Sizes take KiB/MiB/GiB, durations ms/s/m/h/d.\n\n\
        Examples:\n  strata topic alter orders --set retention.ms=7d\n  \
        strata topic alter orders --set fsync=never --set segment.bytes=64MiB"
    )]
    Alter {
        /// The topic.
        name: String,
        /// A setting to change, KEY=VALUE; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
}

/// Options of `strata topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The topic's name: 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'.
    pub name: String,
    /// Number of partitions.
    #[arg(short, long, default_value_t = 1)]
    pub partitions: u32,
    /// Copies of each partition, on as many brokers of a cluster (1: not replicated).
    #[arg(short, long, default_value_t = 1)]
    pub replication_factor: u32,
    /// Delete sealed segments whose newest record is older than this (ms, or 30s, 7d; -1: forever).
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    pub retention_ms: Option<String>,
    /// Delete the oldest segments while a partition is larger than this (-1: no limit).
    #[arg(long, value_name = "B", allow_hyphen_values = true)]
    pub retention_bytes: Option<String>,
    /// Roll to a new segment before one grows past this size (e.g. 1GiB).
    #[arg(long, value_name = "B")]
    pub segment_bytes: Option<String>,
    /// When acknowledged records reach the disk: always, never, or interval:MS.
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<String>,
}

pub(crate) async fn run(args: TopicArgs) -> Result<(), Failure> {
    let client = &args.client;
    let admin = Admin::new(client.connect().await?);
    let mut out = client.printer();
    match args.command {
        TopicCommand::Create(create) => {
            let mut settings = TopicSettings::default();
            let pairs = [
                ("retention.ms", &create.retention_ms),
                ("retention.bytes", &create.retention_bytes),
                ("segment.bytes", &create.segment_bytes),
                ("fsync", &create.fsync),
            ];
            for (key, value) in pairs {
                if let Some(value) = value {
                    apply(&mut settings, key, value).map_err(Failure::new)?;
                }
            }
            let topic = admin
                .create_replicated_topic(
                    &create.name,
                    create.partitions,
                    create.replication_factor,
                    &settings,
                )
                .await
                .map_err(|e| client.fail(&e, Some(&create.name)))?;
            match out.output {
                Output::Json => out.json(&topic)?,
                Output::Text => out.line(&format!(
                    "created topic '{}' with {} partition{}{}",
                    topic.name,
                    topic.partitions,
                    plural(topic.partitions),
                    if topic.replication_factor > 1 {
                        format!(", {} replicas each", topic.replication_factor)
                    } else {
                        String::new()
                    }
                ))?,
            }
        }
        TopicCommand::List => {
            let topics = admin
                .list_topics()
                .await
                .map_err(|e| client.fail(&e, None))?;
            match out.output {
                Output::Json => {
                    for t in &topics {
                        out.json(t)?;
                    }
                }
                Output::Text if topics.is_empty() => {
                    out.line("no topics yet; `strata topic create NAME` makes one")?;
                }
                Output::Text => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.partitions.to_string(),
                                retention_ms(&t.config),
                                limit(t.config.retention_bytes, format_bytes),
                                t.config
                                    .segment_max_bytes
                                    .map_or_else(String::new, format_bytes),
                                fsync(&t.config),
                            ]
                        })
                        .collect();
                    out.table(
                        &[
                            "NAME",
                            "PARTITIONS",
                            "RETENTION_MS",
                            "RETENTION_BYTES",
                            "SEGMENT_BYTES",
                            "FSYNC",
                        ],
                        &rows,
                    )?;
                }
            }
        }
        TopicCommand::Describe { name } => {
            let d = admin
                .describe_topic(&name)
                .await
                .map_err(|e| client.fail(&e, Some(&name)))?;
            match out.output {
                Output::Json => out.json(&d)?,
                Output::Text => {
                    out.line(&format!("topic:              {}", d.topic.name))?;
                    out.line(&format!("partitions:         {}", d.topic.partitions))?;
                    print_settings(&mut out, &d.topic.config)?;
                    out.line("")?;
                    let rows: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.earliest_offset.to_string(),
                                p.next_offset.to_string(),
                                (p.next_offset - p.earliest_offset.min(p.next_offset)).to_string(),
                                p.bytes.to_string(),
                                p.segments.to_string(),
                            ]
                        })
                        .collect();
                    out.table(
                        &[
                            "PARTITION",
                            "EARLIEST",
                            "NEXT",
                            "RECORDS",
                            "BYTES",
                            "SEGMENTS",
                        ],
                        &rows,
                    )?;
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin
                .delete_topic(&name)
                .await
                .map_err(|e| client.fail(&e, Some(&name)))?;
            match out.output {
                Output::Json => out.json(&serde_json::json!({ "deleted": name }))?,
                Output::Text => out.line(&format!("deleted topic '{name}'"))?,
            }
        }
        TopicCommand::Alter { name, set } => {
            let mut settings = TopicSettings::default();
            for pair in &set {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(Failure::new(format!("--set '{pair}' is not KEY=VALUE"))
                        .hint("e.g. --set retention.ms=7d; `strata topic alter --help` lists the keys"));
                };
                apply(&mut settings, key.trim(), value.trim()).map_err(|e| {
                    Failure::new(e).hint("`strata topic alter --help` lists the keys")
                })?;
            }
            let topic = admin
                .alter_topic(&name, &settings)
                .await
                .map_err(|e| client.fail(&e, Some(&name)))?;
            print_altered(&mut out, &topic)?;
        }
    }
    out.flush()
}

fn print_altered(out: &mut Printer, topic: &TopicInfo) -> Result<(), Failure> {
    match out.output {
        Output::Json => out.json(topic),
        Output::Text => {
            out.line(&format!(
                "altered topic '{}'; its settings now:",
                topic.name
            ))?;
            print_settings(out, &topic.config)
        }
    }
}

fn print_settings(out: &mut Printer, c: &TopicSettings) -> Result<(), Failure> {
    let size = |v: Option<u64>| v.map_or_else(String::new, format_bytes);
    out.line(&format!("retention.ms:       {}", retention_ms(c)))?;
    out.line(&format!(
        "retention.bytes:    {}",
        limit(c.retention_bytes, format_bytes)
    ))?;
    out.line(&format!(
        "segment.bytes:      {}",
        size(c.segment_max_bytes)
    ))?;
    out.line(&format!(
        "segment.ms:         {}",
        limit(c.segment_max_ms, format_ms)
    ))?;
    out.line(&format!("fsync:              {}", fsync(c)))?;
    out.line(&format!(
        "max.record.bytes:   {}",
        size(c.max_record_bytes.map(u64::from))
    ))
}

/// Sets one setting from its key (`retention.ms`, `retention_ms` and `retention-ms` are one key)
/// and text value.
pub(crate) fn apply(s: &mut TopicSettings, key: &str, value: &str) -> Result<(), String> {
    let key = key.replace(['_', '-'], ".").to_ascii_lowercase();
    let bytes = |v: &str| parse_bytes(v).map_err(|e| format!("{key}: {e}"));
    let signed = |v: &str, parse: &dyn Fn(&str) -> Result<u64, String>| -> Result<i64, String> {
        match v {
            "-1" | "none" | "forever" | "unlimited" => Ok(-1),
            v => parse(v)
                .and_then(|n| i64::try_from(n).map_err(|_| format!("{key}: '{v}' is too large"))),
        }
    };
    match key.as_str() {
        "retention.ms" => s.retention_ms = Some(signed(value, &parse_ms)?),
        "retention.bytes" => s.retention_bytes = Some(signed(value, &parse_bytes)?),
        "segment.bytes" | "segment.max.bytes" => s.segment_max_bytes = Some(bytes(value)?),
        "segment.ms" | "segment.max.ms" => s.segment_max_ms = Some(signed(value, &parse_ms)?),
        "fsync" | "fsync.policy" => {
            let (policy, interval) = parse_fsync(value)?;
            s.fsync = Some(policy);
            if interval.is_some() {
                s.fsync_interval_ms = interval;
            }
        }
        "fsync.interval.ms" => {
            s.fsync_interval_ms = Some(parse_ms(value).map_err(|e| format!("{key}: {e}"))?);
        }
        "max.record.bytes" => {
            let n = bytes(value)?;
            s.max_record_bytes =
                Some(u32::try_from(n).map_err(|_| format!("{key}: '{value}' is too large"))?);
        }
        _ => {
            return Err(format!(
                "unknown setting '{key}' (known: retention.ms, retention.bytes, segment.bytes, \
                 segment.ms, fsync, fsync.interval.ms, max.record.bytes)"
            ));
        }
    }
    Ok(())
}

/// `always`, `never`, `interval` or `interval:MS`.
pub(super) fn parse_fsync(value: &str) -> Result<(FsyncPolicy, Option<u64>), String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "always" => Ok((FsyncPolicy::Always, None)),
        "never" => Ok((FsyncPolicy::Never, None)),
        "interval" => Ok((FsyncPolicy::Interval, None)),
        v => match v.strip_prefix("interval:") {
            Some(ms) => Ok((FsyncPolicy::Interval, Some(parse_ms(ms)?))),
            None => Err(format!(
                "fsync: '{value}' is not a policy (use always, never or interval:MS)"
            )),
        },
    }
}

fn retention_ms(c: &TopicSettings) -> String {
    limit(c.retention_ms, format_ms).replace("unlimited", "forever")
}

/// A setting where -1 means no limit, printed the way it is typed.
fn limit(v: Option<i64>, format: fn(u64) -> String) -> String {
    match v.map(u64::try_from) {
        None => String::new(),
        Some(Err(_)) => "unlimited".into(),
        Some(Ok(v)) => format(v),
    }
}

fn fsync(c: &TopicSettings) -> String {
    match c.fsync {
        None => String::new(),
        Some(FsyncPolicy::Always) => "always".into(),
        Some(FsyncPolicy::Never) => "never".into(),
        Some(FsyncPolicy::Interval) => match c.fsync_interval_ms {
            Some(ms) => format!("interval:{}", format_ms(ms)),
            None => "interval".into(),
        },
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_any_key_spelling() {
        let mut s = TopicSettings::default();
        apply(&mut s, "retention.ms", "7d").unwrap();
        apply(&mut s, "retention_bytes", "-1").unwrap();
        apply(&mut s, "segment-bytes", "64MiB").unwrap();
        apply(&mut s, "fsync", "interval:250").unwrap();
        assert_eq!(s.retention_ms, Some(7 * 86_400_000));
        assert_eq!(s.retention_bytes, Some(-1));
        assert_eq!(s.segment_max_bytes, Some(64 << 20));
        assert_eq!(s.fsync, Some(FsyncPolicy::Interval));
        assert_eq!(s.fsync_interval_ms, Some(250));
        assert!(apply(&mut s, "colour", "blue").is_err());
        assert!(apply(&mut s, "fsync", "sometimes").is_err());
    }
}
