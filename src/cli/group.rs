//! `strata group list | describe`.

use super::common::{ClientArgs, Failure, Output};
use crate::client::{Admin, GroupLag};
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
    /// List the consumer groups that have committed offsets.
    #[command(after_help = "Example:\n  strata group list --output json")]
    List,
    /// Show a group's committed offset, the next offset and the lag in each partition.
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
            let lags = admin.describe_group(&group).await.map_err(|e| {
                let f = client.fail(&e, None);
                if e.code() == Some(tonic::Code::NotFound) {
                    f.hint("`strata group list` shows the groups that have committed offsets")
                } else {
                    f
                }
            })?;
            match out.output {
                Output::Json => {
                    for lag in &lags {
                        out.json(&GroupRow { group: &group, lag })?;
                    }
                }
                Output::Text => {
                    let rows: Vec<Vec<String>> = lags
                        .iter()
                        .map(|l| {
                            vec![
                                l.topic.clone(),
                                l.partition.to_string(),
                                l.committed_offset.to_string(),
                                l.next_offset.to_string(),
                                l.lag.to_string(),
                            ]
                        })
                        .collect();
                    out.table(&["TOPIC", "PARTITION", "COMMITTED", "NEXT", "LAG"], &rows)?;
                }
            }
        }
    }
    out.flush()
}
