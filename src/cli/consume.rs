//! `strata consume`: print a topic's records, from a position or where a group left off.

use super::common::{ClientArgs, Failure, Output};
use crate::client::{Consumer, ConsumerConfig, ConsumerRecord, Seek};
use clap::Args;
use std::collections::BTreeMap;

/// Options of `strata consume`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --follow it stops once it has printed every record that was in \
    the topic when it started. With -g it joins the group as a member: members share the \
    topic's partitions, each starts where the group left off (the earliest offset if the group \
    has committed nothing) and commits what it printed, so the next run continues from there. \
    Run it twice with -f to share the work between two consumers.\n\n\
    Examples:\n  strata consume orders\n  strata consume orders -n 10 --from 100\n  \
    strata consume orders -g billing -f\n  strata consume orders --from @1767225600000 --output json\n  \
    strata consume orders --from 2026-12-04T10:00:00Z\n  strata consume orders --from -1h\n  \
    strata consume orders -p 0 -p 2 --from latest -f\n  \
    strata consume orders --print key,partition,offset,value"
)]
pub struct ConsumeArgs {
    /// The topic to read.
    pub topic: String,
    /// Read as a member of this consumer group: the group's members share the topic's
    /// partitions (the broker assigns them), each starts at the group's committed offsets and
    /// commits as records are printed. With -p, read those partitions without membership.
    #[arg(short, long)]
    pub group: Option<String>,
    /// Join as a static member with this instance id: a restart within the session timeout
    /// gets the same partitions back, and no other member's partitions move.
    #[arg(long, requires = "group")]
    pub instance_id: Option<String>,
    /// The group's assignor, if this member is its first: uniform (default) or range.
    #[arg(long, requires = "group", value_parser = ["uniform", "range"])]
    pub assignor: Option<String>,
    /// Where to start: earliest, latest, an OFFSET, or a time (the first record at or after
    /// it): @UNIX_MS, RFC 3339 (2026-12-04T10:00:00Z) or ago (-1h, -30m). With -g, only where the group has committed nothing, unless given explicitly.
    #[arg(long, value_name = "POSITION", value_parser = parse_from, allow_hyphen_values = true)]
    pub from: Option<Seek>,
    /// Read only this partition; repeat for several (default: all).
    #[arg(short, long = "partition", value_name = "PARTITION")]
    pub partitions: Vec<u32>,
    /// Stop after this many records.
    #[arg(short = 'n', long = "max", value_name = "MAX")]
    pub max: Option<u64>,
    /// Keep waiting for new records until Ctrl-C (committing what was printed before exiting).
    #[arg(short, long)]
    pub follow: bool,
    /// Text output: which fields to print, in this order, tab-separated, from key, partition,
    /// offset, timestamp and value (default: value alone). A record without a key prints an
    /// empty key. JSON output always has them all.
    #[arg(
        long = "print",
        value_name = "FIELDS",
        value_delimiter = ',',
        default_value = "value"
    )]
    pub print: Vec<Field>,
    /// Broker and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A field of a record that text output can print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Field {
    /// The key (empty if it has none).
    Key,
    /// The partition.
    Partition,
    /// The offset.
    Offset,
    /// The timestamp, ms since the Unix epoch.
    Timestamp,
    /// The value.
    Value,
}

/// A record as `--output json` prints it. A key, value or header value that is UTF-8 is a
/// string under its name; one that is not is base64 (standard alphabet, padded) under the name
/// with `_base64` added (`value_base64`), and the plain name is left out.
fn json_record(r: &ConsumerRecord) -> serde_json::Value {
    let mut record = serde_json::Map::new();
    record.insert("partition".into(), r.partition.into());
    record.insert("offset".into(), r.offset.into());
    record.insert("timestamp".into(), r.timestamp_ms.into());
    match r.key.as_deref() {
        None => {
            record.insert("key".into(), serde_json::Value::Null);
        }
        Some(key) => put_bytes(&mut record, "key", key),
    }
    put_bytes(&mut record, "value", &r.value);
    let headers = r
        .headers
        .iter()
        .map(|(name, value)| {
            let mut header = serde_json::Map::new();
            header.insert("name".into(), name.as_str().into());
            put_bytes(&mut header, "value", value);
            serde_json::Value::Object(header)
        })
        .collect();
    record.insert("headers".into(), serde_json::Value::Array(headers));
    serde_json::Value::Object(record)
}

/// `bytes` as a string under `name` if they are UTF-8, else as base64 under `name_base64`.
fn put_bytes(object: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.into(), text.into()),
        Err(_) => object.insert(format!("{name}_base64"), base64(bytes).into()),
    };
}

/// Standard base64 (RFC 4648, `+/`, padded).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn parse_from(text: &str) -> Result<Seek, String> {
    match text {
        "earliest" | "beginning" | "start" => Ok(Seek::Earliest),
        "latest" | "end" => Ok(Seek::Latest),
        t => {
            if let Some(ms) = t.strip_prefix('@') {
                ms.parse().map(Seek::Timestamp).map_err(|_| {
                    format!("'{t}': @ must be followed by milliseconds since the Unix epoch")
                })
            } else if let Some(ago) = t.strip_prefix('-') {
                let ago = humantime::parse_duration(ago)
                    .map_err(|e| format!("'{t}': not a time ago such as -1h or -30m: {e}"))?;
                let at = std::time::SystemTime::now()
                    .checked_sub(ago)
                    .ok_or_else(|| format!("'{t}' is before the Unix epoch"))?;
                Ok(Seek::Timestamp(unix_ms(at, t)?))
            } else if t.contains(['T', 't', ' ']) && t.contains(':') {
                let at = humantime::parse_rfc3339_weak(t).map_err(|e| {
                    format!("'{t}': not an RFC 3339 time such as 2026-12-04T10:00:00Z: {e}")
                })?;
                Ok(Seek::Timestamp(unix_ms(at, t)?))
            } else {
                t.parse().map(Seek::Offset).map_err(|_| {
                    format!(
                        "'{t}' is not a position (earliest, latest, an offset, @UNIX_MS, an RFC \
                         3339 time such as 2026-12-04T10:00:00Z, or a time ago such as -1h)"
                    )
                })
            }
        }
    }
}

/// Milliseconds since the Unix epoch of `at`.
fn unix_ms(at: std::time::SystemTime, text: &str) -> Result<i64, String> {
    at.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| format!("'{text}' is outside the Unix epoch's range"))
}

pub(crate) async fn run(args: ConsumeArgs) -> Result<(), Failure> {
    let client = &args.client;
    let topic = args.topic.as_str();
    let channel = client.connect().await?;
    let mut config = match &args.group {
        Some(g) => ConsumerConfig::group(g.clone()),
        None => ConsumerConfig::default(),
    }
    .partitions(args.partitions.clone())
    .start(args.from.unwrap_or(Seek::Earliest));
    config.instance_id.clone_from(&args.instance_id);
    config.assignor.clone_from(&args.assignor);
    let mut consumer = Consumer::new(channel, topic, config)
        .await
        .map_err(|e| client.fail(&e, Some(topic)))?;
    if let (Some(_), Some(from)) = (&args.group, args.from) {
        consumer
            .seek_all(from)
            .await
            .map_err(|e| client.fail(&e, Some(topic)))?;
    }
    // Without --follow, stop at what the topic held when we started.
    let ends: BTreeMap<u32, u64> = consumer
        .positions()
        .keys()
        .map(|&p| (p, consumer.high_watermark(p).unwrap_or(0)))
        .collect();

    if !args.follow {
        for (&p, &pos) in &consumer.positions().clone() {
            if pos >= ends.get(&p).copied().unwrap_or(0) {
                consumer.pause(p);
            }
        }
    }

    let mut out = client.printer();
    let mut printed = 0u64;
    let stop = interrupted();
    tokio::pin!(stop);
    let result = loop {
        if args.max.is_some_and(|max| printed >= max) {
            break Ok(());
        }
        if !args.follow
            && consumer
                .positions()
                .iter()
                .all(|(p, pos)| *pos >= ends.get(p).copied().unwrap_or(0))
        {
            break Ok(());
        }
        let peeked = tokio::select! {
            peeked = consumer.peek() => peeked.map(|r| r.map(|r| (r.partition, r.offset))),
            () = &mut stop => break Ok(()),
        };
        match peeked {
            Ok(Some((partition, offset))) => {
                if !args.follow && offset >= ends.get(&partition).copied().unwrap_or(0) {
                    // Appended after we started: it is the next run's.
                    consumer.pause(partition);
                    continue;
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(client.fail(&e, Some(topic))),
        }
        match consumer.next().await {
            Ok(Some(record)) => {
                print(&mut out, args.client.output, &args.print, &record)?;
                printed += 1;
                if !consumer.has_buffered() {
                    out.flush()?;
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(client.fail(&e, Some(topic))),
        }
    };
    out.flush()?;
    // Commits what was printed and leaves the group.
    consumer
        .close()
        .await
        .map_err(|e| client.fail(&e, Some(topic)))?;
    result
}

fn print(
    out: &mut super::common::Printer,
    output: Output,
    fields: &[Field],
    r: &ConsumerRecord,
) -> Result<(), Failure> {
    match output {
        Output::Text => out.bytes_line(&text_line(fields, r)),
        Output::Json => out.json(&json_record(r)),
    }
}

/// The fields of `r`, tab-separated, as `--print` names them.
fn text_line(fields: &[Field], r: &ConsumerRecord) -> Vec<u8> {
    let mut line = Vec::with_capacity(r.value.len() + 32);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(b'\t');
        }
        match field {
            Field::Key => line.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Field::Partition => line.extend_from_slice(r.partition.to_string().as_bytes()),
            Field::Offset => line.extend_from_slice(r.offset.to_string().as_bytes()),
            Field::Timestamp => line.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
            Field::Value => line.extend_from_slice(&r.value),
        }
    }
    line
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_rfc_3339_and_relative_times() {
        assert_eq!(
            parse_from("2026-12-04T10:00:00Z"),
            Ok(Seek::Timestamp(1_796_378_400_000))
        );
        assert_eq!(
            parse_from("1970-01-01T00:00:02.5Z"),
            Ok(Seek::Timestamp(2_500))
        );
        let now = unix_ms(std::time::SystemTime::now(), "now").unwrap();
        let Ok(Seek::Timestamp(ago)) = parse_from("-1h") else {
            panic!("-1h is a time")
        };
        assert!((now - 3_600_000 - ago).abs() < 60_000, "{now} {ago}");
        let Ok(Seek::Timestamp(ago)) = parse_from("-30m") else {
            panic!("-30m is a time")
        };
        assert!((now - 1_800_000 - ago).abs() < 60_000, "{now} {ago}");
        // What it took before.
        assert_eq!(parse_from("42"), Ok(Seek::Offset(42)));
        assert_eq!(parse_from("@2500"), Ok(Seek::Timestamp(2500)));
        assert_eq!(parse_from("latest"), Ok(Seek::Latest));
        assert!(parse_from("-1parsec").is_err());
        assert!(parse_from("2026-13-04T10:00:00Z").is_err());
        assert!(parse_from("soon").is_err());
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[0xff, 0xfe, 0x00], "//4A"),
        ] {
            assert_eq!(base64(plain), encoded, "{plain:?}");
        }
    }
}
