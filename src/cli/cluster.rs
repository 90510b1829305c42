//! `strata cluster status`: every broker, and each partition's leader, replicas and their lag.

use super::common::{ClientArgs, Failure, Output};
use crate::client::{self, Admin, ClusterMetadata};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;

/// Options of `strata cluster`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  strata cluster status --broker 127.0.0.1:9001")]
pub struct ClusterArgs {
    /// Broker and output options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to show.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show each broker and, per partition, its leader and every replica's offsets and lag
    /// (asking each broker for its own replicas).
    Status {
        /// Only these topics (default: every topic).
        topics: Vec<String>,
    },
}

/// One replica's row: what its own broker says.
#[derive(Debug, serde::Serialize)]
struct ReplicaRow {
    topic: String,
    partition: u32,
    node_id: u64,
    leader: Option<u64>,
    term: u64,
    high_watermark: u64,
    log_end_offset: u64,
    /// Records behind the leader's log end (as the leader reports it); unknown if the leader
    /// or this replica did not answer.
    lag: Option<u64>,
}

pub(crate) async fn run(args: ClusterArgs) -> Result<(), Failure> {
    let ClusterCommand::Status { topics } = args.command;
    let client = &args.client;
    let admin = Admin::new(client.connect().await?);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let first = admin
        .metadata(&names)
        .await
        .map_err(|e| client.fail(&e, None))?;
    // Each broker's own view of its replicas.
    let mut views: BTreeMap<u64, Result<ClusterMetadata, String>> = BTreeMap::new();
    for b in &first.brokers {
        if b.node_id == first.node_id {
            views.insert(b.node_id, Ok(first.clone()));
            continue;
        }
        if b.address.is_empty() {
            views.insert(b.node_id, Err("address not known yet".into()));
            continue;
        }
        let view = match client::connect_with(&b.address, &client.connect_options()).await {
            Ok(channel) => Admin::new(channel)
                .metadata(&names)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        views.insert(b.node_id, view);
    }
    let mut rows = Vec::new();
    for topic in &first.topics {
        for p in &topic.partitions {
            let nodes = if p.replicas.is_empty() {
                vec![first.node_id]
            } else {
                p.replicas.clone()
            };
            let own = |node: u64| match views.get(&node) {
                Some(Ok(view)) => view.partition(&topic.name, p.partition).cloned(),
                _ => None,
            };
            // A partition that is not replicated is led by the one broker that has it.
            let leader = if p.replicas.is_empty() {
                Some(first.node_id)
            } else {
                p.leader
            };
            let leader_end = leader.and_then(own).map(|l| l.log_end_offset);
            for node in nodes {
                let mine = own(node);
                rows.push(ReplicaRow {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    node_id: node,
                    leader: mine.as_ref().and_then(|m| m.leader).or(leader),
                    term: mine.as_ref().map_or(0, |m| m.term),
                    high_watermark: mine.as_ref().map_or(0, |m| m.high_watermark),
                    log_end_offset: mine.as_ref().map_or(0, |m| m.log_end_offset),
                    lag: leader_end
                        .zip(mine.as_ref())
                        .map(|(end, m)| end.saturating_sub(m.log_end_offset)),
                });
            }
        }
    }
    let mut out = client.printer();
    match out.output {
        Output::Json => {
            out.json(&serde_json::json!({
                "brokers": first.brokers,
                "group_coordinator": first.group_coordinator,
                "replicas": rows,
            }))?;
        }
        Output::Text => {
            let brokers: Vec<Vec<String>> = first
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.node_id.to_string(),
                        if b.address.is_empty() {
                            "?".into()
                        } else {
                            b.address.clone()
                        },
                        b.raft_address.clone(),
                        match views.get(&b.node_id) {
                            Some(Ok(_)) => "up".into(),
                            Some(Err(e)) => format!("unreachable: {e}"),
                            None => "?".into(),
                        },
                    ]
                })
                .collect();
            out.table(&["NODE", "ADDRESS", "RAFT", "STATE"], &brokers)?;
            out.line("")?;
            out.line(&match first.group_coordinator {
                Some(n) => format!("group coordinator: node {n}"),
                None => "group coordinator: none yet (an election is under way)".to_owned(),
            })?;
            out.line("")?;
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        r.node_id.to_string(),
                        if r.leader == Some(r.node_id) {
                            "leader".into()
                        } else {
                            "follower".into()
                        },
                        opt(r.leader),
                        r.term.to_string(),
                        r.high_watermark.to_string(),
                        r.log_end_offset.to_string(),
                        opt(r.lag),
                    ]
                })
                .collect();
            out.table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "NODE",
                    "ROLE",
                    "LEADER",
                    "TERM",
                    "HW",
                    "LOG END",
                    "LAG",
                ],
                &table,
            )?;
        }
    }
    out.flush()
}
