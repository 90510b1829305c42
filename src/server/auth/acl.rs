//! Authorization rules: an operation on a resource pattern (Kafka's ACL model, allow rules only).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Fetch, Subscribe; a group's offsets and membership.
    Read,
    /// Produce.
    Write,
    /// CreateTopic.
    Create,
    /// DeleteTopic, DeleteGroup.
    Delete,
    /// AlterTopicConfig; resetting a group's offsets.
    Alter,
    /// Describe and list (implied by every other operation, as in Kafka).
    Describe,
    /// Every operation.
    All,
}

impl Operation {
    /// Every operation a rule can name, as written.
    pub const NAMES: [&'static str; 7] = [
        "read", "write", "create", "delete", "alter", "describe", "all",
    ];

    /// Parses a name from [`Operation::NAMES`].
    pub fn parse(name: &str) -> Option<Operation> {
        Some(match name {
            "read" => Operation::Read,
            "write" => Operation::Write,
            "create" => Operation::Create,
            "delete" => Operation::Delete,
            "alter" => Operation::Alter,
            "describe" => Operation::Describe,
            "all" => Operation::All,
            _ => return None,
        })
    }

    /// Whether a rule for `self` allows `wanted`.
    pub fn covers(self, wanted: Operation) -> bool {
        self == Operation::All || self == wanted || wanted == Operation::Describe
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::All => "all",
        };
        f.write_str(name)
    }
}

/// The kinds of resources rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

/// The resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// Topic or group.
    pub kind: Kind,
    /// Its name.
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    /// A topic.
    pub fn topic(name: &'a str) -> Self {
        Resource {
            kind: Kind::Topic,
            name,
        }
    }

    /// A group.
    pub fn group(name: &'a str) -> Self {
        Resource {
            kind: Kind::Group,
            name,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Topic => write!(f, "topic:{}", self.name),
            Kind::Group => write!(f, "group:{}", self.name),
        }
    }
}

/// An allow rule as stored: an operation on `topic:NAME`, `topic:PREFIX*`, `group:NAME`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The operation allowed.
    pub operation: Operation,
    /// The resource pattern.
    pub resource: String,
}

/// A parsed resource pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    kind: Kind,
    name: String,
    prefix: bool,
}

impl Pattern {
    /// Parses `topic:orders`, `topic:orders.*` (every topic starting `orders.`), `topic:*`,
    /// `group:billing`, ...
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (kind, name) = match text.split_once(':') {
            Some(("topic", name)) => (Kind::Topic, name),
            Some(("group", name)) => (Kind::Group, name),
            _ => {
                return Err(format!(
                    "'{text}' is not a resource: write topic:NAME, topic:PREFIX*, group:NAME or \
                     group:PREFIX*"
                ));
            }
        };
        let (name, prefix) = match name.strip_suffix('*') {
            Some(p) => (p, true),
            None => (name, false),
        };
        if name.is_empty() && !prefix {
            return Err(format!("'{text}' names no {kind:?}").to_lowercase());
        }
        if name.contains('*') {
            return Err(format!("'{text}': '*' may only end a pattern"));
        }
        Ok(Pattern {
            kind,
            name: name.to_string(),
            prefix,
        })
    }

    /// Whether the pattern covers `resource`.
    pub fn matches(&self, resource: &Resource<'_>) -> bool {
        self.kind == resource.kind
            && if self.prefix {
                resource.name.starts_with(&self.name)
            } else {
                resource.name == self.name
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_prefixes_of_their_kind() {
        let exact = Pattern::parse("topic:orders").unwrap();
        assert!(exact.matches(&Resource::topic("orders")));
        assert!(!exact.matches(&Resource::topic("orders2")));
        assert!(!exact.matches(&Resource::group("orders")));
        let prefix = Pattern::parse("topic:orders.*").unwrap();
        assert!(prefix.matches(&Resource::topic("orders.eu")));
        assert!(!prefix.matches(&Resource::topic("orders")));
        assert!(
            Pattern::parse("group:*")
                .unwrap()
                .matches(&Resource::group("any"))
        );
        assert!(Pattern::parse("cluster:x").is_err());
        assert!(Pattern::parse("topic:").is_err());
        assert!(Pattern::parse("topic:a*b").is_err());
        assert!(Operation::Read.covers(Operation::Describe));
        assert!(!Operation::Read.covers(Operation::Write));
        assert!(Operation::All.covers(Operation::Delete));
    }
}
