//! `strata group list | describe`.

use super::common::{ClientArgs, Failure, Output};
use crate::client::{Admin, GroupLag, GroupMember};
use clap::{Args, Subcommand};
use serde::Serialize;

/// Options of `strata group`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  strata group list\n  strata group describe billing")]
pub struct GroupArgs {
    /// Broker and output options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do with consumer groups.
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// The group subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups that have committed offsets or live members.
    #[command(after_help = "Example:\n  strata group list --output json")]
    List,
    /// Show a group's members (id, instance, host, epoch, partitions) and, per partition, its
    /// committed offset, the next offset, the lag and the owning member.
    #[command(after_help = "Example:\n  strata group describe billing")]
    Describe {
        /// The consumer group.
        group: String,
    },
}

#[derive(Debug, Serialize)]
struct GroupRow<'a> {
    group: &'a str,
    #[serde(flatten)]
    lag: &'a GroupLag,
}

#[derive(Debug, Serialize)]
struct MemberRow<'a> {
    group: &'a str,
    #[serde(flatten)]
    member: &'a GroupMember,
}

/// `orders:0-3,7 payments:1`.
fn partitions_text(m: &GroupMember) -> String {
    let mut parts = Vec::new();
    for (topic, ps) in &m.assignment {
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < ps.len() {
            let mut j = i;
            while j + 1 < ps.len() && ps[j + 1] == ps[j] + 1 {
                j += 1;
            }
            ranges.push(if i == j {
                ps[i].to_string()
            } else {
                format!("{}-{}", ps[i], ps[j])
            });
            i = j + 1;
        }
        parts.push(format!("{topic}:{}", ranges.join(",")));
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

pub(crate) async fn run(args: GroupArgs) -> Result<(), Failure> {
    let client = &args.client;
    let admin = Admin::new(client.connect().await?);
    let mut out = client.printer();
    match args.command {
        GroupCommand::List => {
            let groups = admin
                .list_groups()
                .await
                .map_err(|e| client.fail(&e, None))?;
            match out.output {
                Output::Json => {
                    for g in &groups {
                        out.json(&serde_json::json!({ "group": g }))?;
                    }
                }
                Output::Text if groups.is_empty() => {
                    out.line("no consumer groups yet; `strata consume TOPIC -g GROUP` makes one")?;
                }
                Output::Text => {
                    for g in &groups {
                        out.line(g)?;
                    }
                }
            }
        }
        GroupCommand::Describe { group } => {
            let described = admin.describe_group(&group).await.map_err(|e| {
                let f = client.fail(&e, None);
                if e.code() == Some(tonic::Code::NotFound) {
                    f.hint("`strata group list` shows the groups that have committed offsets")
                } else {
                    f
                }
            })?;
            let has_members = !described.members.is_empty();
            match out.output {
                Output::Json => {
                    for member in &described.members {
                        out.json(&MemberRow {
                            group: &group,
                            member,
                        })?;
                    }
                    for lag in &described.partitions {
                        out.json(&GroupRow { group: &group, lag })?;
                    }
                }
                Output::Text => {
                    if has_members {
                        out.line(&format!(
                            "group {group}: {}, epoch {}, assignor {}, {} member(s)",
                            described.state,
                            described.epoch,
                            described.assignor,
                            described.members.len()
                        ))?;
                        let rows: Vec<Vec<String>> = described
                            .members
                            .iter()
                            .map(|m| {
                                vec![
                                    m.member_id.clone(),
                                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                                    m.client_host.clone(),
                                    m.member_epoch.to_string(),
                                    if m.away {
                                        "(away)".to_string()
                                    } else {
                                        partitions_text(m)
                                    },
                                ]
                            })
                            .collect();
                        out.table(
                            &["MEMBER", "INSTANCE", "HOST", "EPOCH", "PARTITIONS"],
                            &rows,
                        )?;
                        out.line("")?;
                    }
                    let rows: Vec<Vec<String>> = described
                        .partitions
                        .iter()
                        .map(|l| {
                            let mut row = vec![
                                l.topic.clone(),
                                l.partition.to_string(),
                                l.committed_offset
                                    .map_or_else(|| "-".into(), |o| o.to_string()),
                                l.next_offset.to_string(),
                                l.lag.to_string(),
                            ];
                            if has_members {
                                row.push(l.owner.clone().unwrap_or_else(|| "-".into()));
                            }
                            row
                        })
                        .collect();
                    if has_members {
                        out.table(
                            &["TOPIC", "PARTITION", "COMMITTED", "NEXT", "LAG", "OWNER"],
                            &rows,
                        )?;
                    } else {
                        out.table(&["TOPIC", "PARTITION", "COMMITTED", "NEXT", "LAG"], &rows)?;
                    }
                }
            }
        }
    }
    out.flush()
}
