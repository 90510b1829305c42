//! `strata produce`: one record per input line, batched by the client's producer.

use super::common::{ClientArgs, Failure, Output};
use crate::client::{Delivery, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use std::{collections::BTreeMap, path::PathBuf};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

/// Deliveries awaited at most at once; older ones are awaited before more are read.
const MAX_PENDING: usize = 100_000;

/// Options of `strata produce`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each input line is one record (a trailing \\r is dropped).\n\n\
    Examples:\n  echo 'hello' | strata produce orders\n  \
    printf 'user-1:signed up\\nuser-2:signed up\\n' | strata produce signups --key-separator :\n  \
    strata produce orders --file orders.txt -k customer-42 -H source=import\n  \
    strata produce orders -p 2 --output json < events.jsonl\n\n\
    Records are sent with a producer id and sequence numbers: a batch whose answer was lost (the\n\
    broker restarted, the connection dropped) is sent again until --delivery-timeout, and the\n\
    broker stores it once."
)]
pub struct ProduceArgs {
    /// The topic to produce to.
    pub topic: String,
    /// The key of every record (records with one key go to one partition).
    #[arg(short, long, conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Send every record to this partition.
    #[arg(short, long)]
    pub partition: Option<u32>,
    /// A header for every record, NAME=VALUE; repeat for several.
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Read records from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Each line is KEY SEP VALUE, split at the first SEP.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// How long a record may take to be acknowledged, retries across broker restarts and
    /// dropped connections included (retried records are stored once: the producer is
    /// idempotent).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub delivery_timeout: std::time::Duration,
    /// Send without a producer id: no retries, each record sent at most once.
    #[arg(long)]
    pub no_idempotence: bool,
    /// Broker and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Where a partition's records went.
#[derive(Debug, Serialize)]
struct Landed {
    topic: String,
    partition: u32,
    records: u64,
    first_offset: u64,
    last_offset: u64,
}

pub(crate) async fn run(args: ProduceArgs) -> Result<(), Failure> {
    let headers = args
        .headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((name, value)) => Ok((name.to_string(), Bytes::from(value.to_string()))),
            None => Err(Failure::new(format!("header '{h}' is not NAME=VALUE"))
                .hint("e.g. -H source=import")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let input: Box<dyn AsyncBufRead + Unpin + Send> = match &args.file {
        Some(path) => {
            Box::new(BufReader::new(tokio::fs::File::open(path).await.map_err(
                |e| Failure::new(format!("cannot open {}: {e}", path.display())),
            )?))
        }
        None => Box::new(BufReader::new(tokio::io::stdin())),
    };
    let client = &args.client;
    let channel = client.connect().await?;
    let config = ProducerConfig {
        idempotent: !args.no_idempotence,
        delivery_timeout: args.delivery_timeout,
        connect: client.connect_options(),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(channel, &args.topic, config)
        .await
        .map_err(|e| client.fail(&e, Some(&args.topic)))?;

    let mut landed: BTreeMap<u32, Landed> = BTreeMap::new();
    let mut pending = std::collections::VecDeque::new();
    let read = read_lines(&args, &headers, input, &producer, &mut pending, &mut landed).await;
    producer.flush().await;
    let mut failed = read.err();
    for delivery in pending {
        if let Err(e) = settle(delivery, &args.topic, &mut landed).await {
            failed.get_or_insert(client.fail(&e, Some(&args.topic)));
        }
    }

    let mut out = client.printer();
    let total: u64 = landed.values().map(|l| l.records).sum();
    match out.output {
        Output::Json => {
            for l in landed.values() {
                out.json(l)?;
            }
        }
        Output::Text => {
            out.line(&format!(
                "produced {total} record{} to topic '{}'",
                if total == 1 { "" } else { "s" },
                args.topic
            ))?;
            if !landed.is_empty() {
                let rows: Vec<Vec<String>> = landed
                    .values()
                    .map(|l| {
                        vec![
                            l.partition.to_string(),
                            l.records.to_string(),
                            format!("{}..={}", l.first_offset, l.last_offset),
                        ]
                    })
                    .collect();
                out.table(&["PARTITION", "RECORDS", "OFFSETS"], &rows)?;
            }
        }
    }
    out.flush()?;
    failed.map_or(Ok(()), Err)
}

/// Sends a record per line until the input ends or a record fails.
async fn read_lines(
    args: &ProduceArgs,
    headers: &[(String, Bytes)],
    mut input: Box<dyn AsyncBufRead + Unpin + Send>,
    producer: &Producer,
    pending: &mut std::collections::VecDeque<Delivery>,
    landed: &mut BTreeMap<u32, Landed>,
) -> Result<(), Failure> {
    let client = &args.client;
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Failure::new(format!("reading the input: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let mut record = match &args.key_separator {
            Some(sep) => {
                let Some(at) = find(&line, sep.as_bytes()) else {
                    return Err(Failure::new(format!(
                        "line {number} has no key separator '{sep}'"
                    ))
                    .hint("every line must be KEY SEP VALUE with --key-separator"));
                };
                ProducerRecord::new(line[at + sep.len()..].to_vec()).key(line[..at].to_vec())
            }
            None => ProducerRecord::new(line.clone()),
        };
        if let Some(key) = &args.key {
            record = record.key(key.clone());
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        record.headers = headers.to_vec();
        let delivery = producer
            .send(record)
            .await
            .map_err(|e| client.fail(&e, Some(&args.topic)))?;
        pending.push_back(delivery);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending.pop_front()
        {
            settle(oldest, &args.topic, landed)
                .await
                .map_err(|e| client.fail(&e, Some(&args.topic)))?;
        }
    }
}

async fn settle(
    delivery: Delivery,
    topic: &str,
    landed: &mut BTreeMap<u32, Landed>,
) -> Result<(), crate::client::ClientError> {
    let at = delivery.await?;
    let l = landed.entry(at.partition).or_insert(Landed {
        topic: topic.to_string(),
        partition: at.partition,
        records: 0,
        first_offset: at.offset,
        last_offset: at.offset,
    });
    l.records += 1;
    l.first_offset = l.first_offset.min(at.offset);
    l.last_offset = l.last_offset.max(at.offset);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
