//! Naming rules for topics and consumer groups: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not
//! `.` or `..` (a topic name is a directory name).

use super::BrokerError;

/// The longest topic or group name.
pub const MAX_NAME_LEN: usize = 249;

/// Checks a topic name.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    validate("topic", name)
}

/// Checks a consumer group name.
pub fn validate_group_name(name: &str) -> Result<(), BrokerError> {
    validate("group", name)
}

fn validate(kind: &'static str, name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(BrokerError::InvalidName {
            kind,
            name: name.chars().take(300).collect(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for name in ["a", "orders", "Orders.v2_eu-west", &"x".repeat(249), "..."] {
            assert!(validate_topic_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_names_fail() {
        for name in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250), "a\0"] {
            assert!(validate_group_name(name).is_err(), "{name:?}");
        }
    }
}
