//! `strata auth`: manage the broker's principals file (`strata serve --auth-file FILE`). The file
//! holds token hashes only: `add` prints a principal's fresh token once. After a change, send the
//! running broker SIGHUP to apply it.

use super::common::Failure;
use crate::server::auth::{
    AuthFile, Decision, Kind, Operation, Pattern, PrincipalEntry, Principals, Resource, Rule,
    new_token, token_hash,
};
use clap::{Args, Subcommand};
use std::{io::Write, path::PathBuf, process::ExitCode};

/// Options of `strata auth`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata auth add billing --file principals.json\n  \
    strata auth allow billing read topic:orders --file principals.json\n  \
    strata auth check billing read topic:orders --file principals.json\n  \
    strata auth revoke billing --file principals.json\n  strata auth list --file principals.json"
)]
pub struct AuthArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// The `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Add a principal and print its new token (shown this once; the file keeps its hash).
    #[command(
        after_help = "Examples:\n  strata auth add billing --file principals.json\n  \
        strata auth add admin --superuser --file principals.json\n\n\
        Then: kill -HUP <broker pid>, and give the token to the client (--token or STRATA_TOKEN)."
    )]
    Add {
        /// Its name (under mutual TLS: its client certificate's common name).
        name: String,
        /// Allowed everything.
        #[arg(long)]
        superuser: bool,
        /// Replace the token of an existing principal instead of refusing.
        #[arg(long)]
        rotate: bool,
        /// The principals file.
        #[arg(long, env = "STRATA_AUTH_FILE")]
        file: PathBuf,
    },
    /// Allow a principal an operation on a resource.
    #[command(
        after_help = "Operations: read, write, create, delete, alter, describe, all \
        (every one implies describe).\nResources: topic:NAME, topic:PREFIX*, group:NAME, \
        group:PREFIX*.\n\nExamples:\n  strata auth allow billing read topic:orders --file principals.json\n  \
        strata auth allow billing read group:billing --file principals.json\n  \
        strata auth allow ingest write 'topic:events.*' --file principals.json"
    )]
    Allow {
        /// The principal.
        name: String,
        /// The operation.
        operation: String,
        /// The resource pattern.
        resource: String,
        /// The principals file.
        #[arg(long, env = "STRATA_AUTH_FILE")]
        file: PathBuf,
    },
    /// Remove a principal: its token stops working at the broker's next reload (SIGHUP), and its
    /// open subscriptions end.
    #[command(after_help = "Example:\n  strata auth revoke billing --file principals.json")]
    Revoke {
        /// The principal.
        name: String,
        /// The principals file.
        #[arg(long, env = "STRATA_AUTH_FILE")]
        file: PathBuf,
    },
    /// Say whether a principal may do an operation on a resource, and which rule decides.
    #[command(
        after_help = "Example:\n  strata auth check billing read topic:orders --file principals.json"
    )]
    Check {
        /// The principal.
        name: String,
        /// The operation.
        operation: String,
        /// The resource (topic:NAME or group:NAME).
        resource: String,
        /// The principals file.
        #[arg(long, env = "STRATA_AUTH_FILE")]
        file: PathBuf,
    },
    /// List the principals and their rules (never tokens).
    #[command(after_help = "Example:\n  strata auth list --file principals.json")]
    List {
        /// The principals file.
        #[arg(long, env = "STRATA_AUTH_FILE")]
        file: PathBuf,
    },
}

fn operation(name: &str) -> Result<Operation, Failure> {
    Operation::parse(name).ok_or_else(|| {
        Failure::new(format!("'{name}' is not an operation"))
            .hint(format!("one of: {}", Operation::NAMES.join(", ")))
    })
}

fn load(file: &std::path::Path, missing_ok: bool) -> Result<AuthFile, Failure> {
    AuthFile::load(file, missing_ok).map_err(|e| Failure::new(e.to_string()))
}

/// Holds the file's lock (`FILE.lock`) until dropped: every change is a read-modify-write under
/// it, so that concurrent `strata auth` runs do not lose each other's changes.
fn lock(file: &std::path::Path) -> Result<std::fs::File, Failure> {
    AuthFile::lock(file).map_err(|e| Failure::new(e.to_string()))
}

fn save(auth: &AuthFile, file: &std::path::Path) -> Result<(), Failure> {
    auth.save(file).map_err(|e| Failure::new(e.to_string()))
}

fn print(line: &str) -> Result<(), Failure> {
    writeln!(std::io::stdout().lock(), "{line}")
        .map_err(|e| Failure::new(format!("cannot write to stdout: {e}")))
}

/// Runs an `auth` subcommand (it touches only the file, not a broker).
pub fn run(args: AuthArgs) -> ExitCode {
    match run_command(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

fn run_command(command: AuthCommand) -> Result<(), Failure> {
    match command {
        AuthCommand::Add {
            name,
            superuser,
            rotate,
            file,
        } => {
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(Failure::new(format!("'{name}' is not a principal name")));
            }
            let _lock = lock(&file)?;
            let mut auth = load(&file, true)?;
            let token = new_token()
                .map_err(|e| Failure::new(format!("cannot make a random token: {e}")))?;
            match auth.principal_mut(&name) {
                Some(p) if rotate => {
                    p.token_sha256 = Some(token_hash(&token));
                    p.superuser |= superuser;
                }
                Some(_) => {
                    return Err(Failure::new(format!("principal '{name}' already exists"))
                        .hint("--rotate gives it a new token; `strata auth revoke` removes it"));
                }
                None => auth.principals.push(PrincipalEntry {
                    name: name.clone(),
                    token_sha256: Some(token_hash(&token)),
                    superuser,
                    allow: Vec::new(),
                }),
            }
            save(&auth, &file)?;
            print(&token)?;
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "principal '{name}' {}; its token is above (shown only now). Send the broker \
                 SIGHUP to apply.",
                if rotate { "has a new token" } else { "added" }
            );
            Ok(())
        }
        AuthCommand::Allow {
            name,
            operation: op,
            resource,
            file,
        } => {
            let op = operation(&op)?;
            Pattern::parse(&resource).map_err(Failure::new)?;
            let _lock = lock(&file)?;
            let mut auth = load(&file, false)?;
            let Some(p) = auth.principal_mut(&name) else {
                return Err(
                    Failure::new(format!("no principal '{name}' in {}", file.display())).hint(
                        format!("`strata auth add {name} --file {}` adds it", file.display()),
                    ),
                );
            };
            let rule = Rule {
                operation: op,
                resource: resource.clone(),
            };
            if !p.allow.contains(&rule) {
                p.allow.push(rule);
            }
            save(&auth, &file)?;
            print(&format!("'{name}' may {op} {resource}"))
        }
        AuthCommand::Revoke { name, file } => {
            let _lock = lock(&file)?;
            let mut auth = load(&file, false)?;
            let before = auth.principals.len();
            auth.principals.retain(|p| p.name != name);
            if auth.principals.len() == before {
                return Err(Failure::new(format!(
                    "no principal '{name}' in {}",
                    file.display()
                )));
            }
            save(&auth, &file)?;
            print(&format!(
                "principal '{name}' removed; send the broker SIGHUP to apply"
            ))
        }
        AuthCommand::Check {
            name,
            operation: op,
            resource,
            file,
        } => {
            let op = operation(&op)?;
            let (kind, resource_name) = match resource.split_once(':') {
                Some(("topic", n)) if !n.is_empty() => (Kind::Topic, n),
                Some(("group", n)) if !n.is_empty() => (Kind::Group, n),
                _ => {
                    return Err(Failure::new(format!(
                        "'{resource}' is not a resource: write topic:NAME or group:NAME"
                    )));
                }
            };
            let auth = load(&file, false)?;
            let principals = Principals::new(&auth);
            let r = Resource {
                kind,
                name: resource_name,
            };
            if !principals.exists(&name) {
                return Err(Failure::new(format!(
                    "no principal '{name}' in {}",
                    file.display()
                )));
            }
            match principals.decide(&name, op, &r) {
                Decision::Allowed(by) => print(&format!("allowed: '{name}' may {op} {r} ({by})")),
                Decision::Denied => Err(Failure::new(format!(
                    "denied: no rule of '{name}' allows {op} on {r}"
                ))
                .hint(format!(
                    "`strata auth allow {name} {op} {r} --file {}` would",
                    file.display()
                ))),
            }
        }
        AuthCommand::List { file } => {
            let auth = load(&file, false)?;
            for p in &auth.principals {
                let mut line = p.name.clone();
                if p.superuser {
                    line.push_str(" (superuser)");
                }
                if p.token_sha256.is_none() {
                    line.push_str(" (no token: client certificate only)");
                }
                print(&line)?;
                for r in &p.allow {
                    print(&format!("  allow {} {}", r.operation, r.resource))?;
                }
            }
            Ok(())
        }
    }
}
