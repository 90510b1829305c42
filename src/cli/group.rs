//! `strata group list | describe`.

use super::common::{ClientArgs, Failure, Output};
use crate::client::{Admin, GroupLag, GroupMember, Seek};
use clap::{Args, Subcommand};
use serde::Serialize;

/// Options of `strata group`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata group list\n  strata group describe billing\n  \
    strata group reset billing --topic orders --to earliest --dry-run\n  \
    strata group delete billing"
)]
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
    /// Move a group's committed offsets in a topic (only while the group has no live members).
    #[command(
        after_help = "TARGET is earliest, latest, an OFFSET, @UNIX_MS (the first record at or \
        after that time), or -N (N records back from the committed offset). Offsets are clamped \
        to what the partition still stores.\n\nExamples:\n  \
        strata group reset billing --topic orders --to earliest --dry-run\n  \
        strata group reset billing --topic orders --to -100 -p 2\n  \
        strata group reset billing --topic orders --to @1767225600000"
    )]
    Reset {
        /// The consumer group.
        group: String,
        /// The topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// Where to: earliest, latest, OFFSET, @UNIX_MS or -N.
        #[arg(long, allow_hyphen_values = true, value_parser = parse_target)]
        to: Target,
        /// Only this partition; repeat for several (default: all).
        #[arg(short, long = "partition", value_name = "PARTITION")]
        partitions: Vec<u32>,
        /// Print the plan without committing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group's committed offsets (only while it has no live members).
    #[command(after_help = "Example:\n  strata group delete billing")]
    Delete {
        /// The consumer group.
        group: String,
    },
}

/// Where `group reset` moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A position the broker resolves.
    At(Seek),
    /// This many records back from the committed offset (from the earliest without one).
    Back(u64),
}

fn parse_target(text: &str) -> Result<Target, String> {
    if let Some(n) = text.strip_prefix('-') {
        return n
            .parse()
            .map(Target::Back)
            .map_err(|_| format!("'{text}': - must be followed by a number of records"));
    }
    super::consume::parse_from(text)
        .map(Target::At)
        .map_err(|e| e.replace("or @UNIX_MS)", "@UNIX_MS, or -N)"))
}

/// A refusal because the group has live members says what to do.
fn with_members_hint(e: &crate::client::ClientError, failure: Failure) -> Failure {
    if e.code() == Some(tonic::Code::FailedPrecondition) {
        failure.hint("stop the group's consumers first (`strata group describe` lists them)")
    } else {
        failure
    }
}

/// One partition of a reset's plan.
#[derive(Debug, Serialize)]
struct ResetRow {
    group: String,
    topic: String,
    partition: u32,
    from: Option<u64>,
    to: u64,
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
        GroupCommand::Reset {
            group,
            topic,
            to,
            partitions,
            dry_run,
        } => {
            let fail = |e: &crate::client::ClientError| client.fail(e, Some(&topic));
            // An offset is clamped to what is stored rather than refused, as Kafka's tool does.
            let at = match to {
                Target::At(Seek::Offset(_)) | Target::Back(_) => Seek::Latest,
                Target::At(seek) => seek,
            };
            let listed = admin
                .list_offsets(&topic, &partitions, at)
                .await
                .map_err(|e| fail(&e))?;
            let committed = admin
                .committed_offsets(&group, &topic)
                .await
                .map_err(|e| fail(&e))?;
            let plan: Vec<ResetRow> = listed
                .iter()
                .map(|p| {
                    let from = committed.get(&p.partition).copied();
                    let to = match to {
                        Target::At(Seek::Offset(o)) => o,
                        Target::At(_) => p.offset,
                        Target::Back(n) => from.unwrap_or(p.earliest_offset).saturating_sub(n),
                    }
                    .clamp(p.earliest_offset, p.next_offset);
                    ResetRow {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: p.partition,
                        from,
                        to,
                    }
                })
                .collect();
            if !dry_run {
                let offsets = plan.iter().map(|r| (r.partition, r.to)).collect();
                admin
                    .commit_offsets(&group, &topic, &offsets)
                    .await
                    .map_err(|e| with_members_hint(&e, fail(&e)))?;
            }
            match out.output {
                Output::Json => {
                    for row in &plan {
                        out.json(row)?;
                    }
                }
                Output::Text => {
                    let rows: Vec<Vec<String>> = plan
                        .iter()
                        .map(|r| {
                            vec![
                                r.topic.clone(),
                                r.partition.to_string(),
                                r.from.map_or_else(|| "-".into(), |o| o.to_string()),
                                r.to.to_string(),
                            ]
                        })
                        .collect();
                    out.table(&["TOPIC", "PARTITION", "FROM", "TO"], &rows)?;
                    if dry_run {
                        out.line("(dry run: nothing committed)")?;
                    }
                }
            }
        }
        GroupCommand::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .map_err(|e| with_members_hint(&e, client.fail(&e, None)))?;
            match out.output {
                Output::Json => out.json(&serde_json::json!({ "deleted": group }))?,
                Output::Text => out.line(&format!("deleted consumer group '{group}'"))?,
            }
        }
    }
    out.flush()
}
