//! The principals file (`--auth-file`): each principal's name, the SHA-256 of its token (never
//! the token), whether it is a superuser, and its allow rules. JSON, written atomically by the
//! `strata auth` commands; the broker reads it at start and on SIGHUP.

use super::acl::{Operation, Pattern, Resource, Rule};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

const FILE_VERSION: u32 = 1;
/// Tokens start with this, so that one found in a log or a repository is recognisable.
pub const TOKEN_PREFIX: &str = "strata_";

/// Why the principals file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// It could not be read or written.
    #[error("{op} {path}: {reason}")]
    Io {
        /// "read" or "write".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Its contents are not a principals file.
    #[error("{path} is not a valid principals file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The file as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFile {
    /// 1.
    pub version: u32,
    /// Every principal.
    pub principals: Vec<PrincipalEntry>,
}

/// One principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalEntry {
    /// Its name: what rules and logs call it, and the common name of its client certificate
    /// under mutual TLS.
    pub name: String,
    /// Lowercase hex SHA-256 of its bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Allowed everything.
    #[serde(default)]
    pub superuser: bool,
    /// What it is allowed.
    #[serde(default)]
    pub allow: Vec<Rule>,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            version: FILE_VERSION,
            principals: Vec::new(),
        }
    }
}

impl AuthFile {
    /// Reads `path`; a missing file is an empty one when `missing_ok`.
    pub fn load(path: &Path, missing_ok: bool) -> Result<AuthFile, AuthFileError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AuthFile::default());
            }
            Err(e) => {
                return Err(AuthFileError::Io {
                    op: "read",
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        let invalid = |reason: String| AuthFileError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(invalid(format!("unknown version {}", file.version)));
        }
        let mut names = std::collections::HashSet::new();
        for p in &file.principals {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(invalid(format!(
                    "principal name '{}' is empty or repeated",
                    p.name
                )));
            }
            if let Some(h) = &p.token_sha256
                && decode_hash(h).is_none()
            {
                return Err(invalid(format!(
                    "principal '{}': token_sha256 is not 64 hex digits",
                    p.name
                )));
            }
            for rule in &p.allow {
                Pattern::parse(&rule.resource)
                    .map_err(|e| invalid(format!("principal '{}': {e}", p.name)))?;
            }
        }
        Ok(file)
    }

    /// Writes the file atomically, readable and writable by its owner only (mode 0600): a
    /// temporary file of a name of its own in the same directory (made new, never through a
    /// symlink), fsync, rename over `path`, directory fsync. Concurrent writers each write whole
    /// files; `lock` keeps their read-modify-writes from losing each other's changes.
    pub fn save(&self, path: &Path) -> Result<(), AuthFileError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| AuthFileError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        write_private(path, &json).map_err(|e| AuthFileError::Io {
            op: "write",
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Takes an exclusive lock (flock) on `FILE.lock` next to `path`, held until the returned
    /// file is dropped: for the whole of a read-modify-write of the file.
    pub fn lock(path: &Path) -> Result<std::fs::File, AuthFileError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let name = PathBuf::from(name);
        let io = |e: std::io::Error| AuthFileError::Io {
            op: "lock",
            path: name.clone(),
            reason: e.to_string(),
        };
        let file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&name)
            .map_err(io)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        Ok(file)
    }

    /// The principal called `name`.
    pub fn principal_mut(&mut self, name: &str) -> Option<&mut PrincipalEntry> {
        self.principals.iter_mut().find(|p| p.name == name)
    }
}

/// Options that make a file of mode 0600 and never follow a symlink at its name.
fn private_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    options
}

/// Writes `bytes` to `path` as `AuthFile::save` says.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file's name")
    })?;
    let (tmp, mut file) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(tmp_name);
        match private_options().write(true).create_new(true).open(&tmp) {
            Ok(file) => break (tmp, file),
            // One left by a writer of the same process id that crashed: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// A fresh token: the prefix and 32 random bytes (from the OS) in hex.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Lowercase hex SHA-256 of `token`, as the file stores it.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Exactly 64 lowercase hex digits, as `token_hash` writes them (no sign, no uppercase).
fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

/// SHA-256 of `token`: what a subscription remembers of the token it authenticated with.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What decided a question of access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, by this (a rule as written, or "superuser").
    Allowed(String),
    /// No rule allows it.
    Denied,
}

/// The file compiled for checks.
#[derive(Debug, Default)]
pub struct Principals {
    entries: Vec<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    name: String,
    hash: Option<[u8; 32]>,
    superuser: bool,
    rules: Vec<(Operation, Pattern, String)>,
}

impl Principals {
    /// Compiles a loaded file (which `AuthFile::load` checked).
    pub fn new(file: &AuthFile) -> Principals {
        let entries = file
            .principals
            .iter()
            .map(|p| Compiled {
                name: p.name.clone(),
                hash: p.token_sha256.as_deref().and_then(decode_hash),
                superuser: p.superuser,
                rules: p
                    .allow
                    .iter()
                    .filter_map(|r| {
                        let pattern = Pattern::parse(&r.resource).ok()?;
                        Some((
                            r.operation,
                            pattern,
                            format!("allow {} {}", r.operation, r.resource),
                        ))
                    })
                    .collect(),
            })
            .collect();
        Principals { entries }
    }

    /// The principal whose token this is. Compares against every principal's hash in constant
    /// time, so the time taken says nothing of how close a guess came.
    pub fn by_token(&self, token: &str) -> Option<&str> {
        let presented = token_digest(token);
        let mut found = None;
        for e in &self.entries {
            if let Some(h) = &e.hash
                && bool::from(h.ct_eq(&presented))
            {
                found = Some(e.name.as_str());
            }
        }
        found
    }

    /// Whether `digest` (`token_digest` of a token) is the token of the principal called `name`
    /// now: false once the principal is gone or its token was rotated. Constant time.
    pub fn token_is(&self, name: &str, digest: &[u8; 32]) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == name && e.hash.is_some_and(|h| bool::from(h.ct_eq(digest))))
    }

    /// Whether a principal called `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Whether `name` may do `operation` on `resource`, and which rule says so.
    pub fn decide(&self, name: &str, operation: Operation, resource: &Resource<'_>) -> Decision {
        let Some(e) = self.entries.iter().find(|e| e.name == name) else {
            return Decision::Denied;
        };
        if e.superuser {
            return Decision::Allowed("superuser".into());
        }
        e.rules
            .iter()
            .find(|(op, pattern, _)| op.covers(operation) && pattern.matches(resource))
            .map_or(Decision::Denied, |(_, _, text)| {
                Decision::Allowed(text.clone())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_their_hash_and_rules_decide() {
        let token = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        let file = AuthFile {
            version: 1,
            principals: vec![
                PrincipalEntry {
                    name: "alice".into(),
                    token_sha256: Some(token_hash(&token)),
                    superuser: false,
                    allow: vec![Rule {
                        operation: Operation::Write,
                        resource: "topic:orders.*".into(),
                    }],
                },
                PrincipalEntry {
                    name: "root".into(),
                    token_sha256: None,
                    superuser: true,
                    allow: Vec::new(),
                },
            ],
        };
        let p = Principals::new(&file);
        assert_eq!(p.by_token(&token), Some("alice"));
        assert_eq!(p.by_token("strata_wrong"), None);
        assert_eq!(
            p.decide("alice", Operation::Write, &Resource::topic("orders.eu")),
            Decision::Allowed("allow write topic:orders.*".into())
        );
        assert_eq!(
            p.decide("alice", Operation::Describe, &Resource::topic("orders.eu")),
            Decision::Allowed("allow write topic:orders.*".into()),
            "write implies describe"
        );
        assert_eq!(
            p.decide("alice", Operation::Read, &Resource::topic("orders.eu")),
            Decision::Denied
        );
        assert_eq!(
            p.decide("root", Operation::Delete, &Resource::group("g")),
            Decision::Allowed("superuser".into())
        );
        assert_eq!(
            p.decide("nobody", Operation::Describe, &Resource::topic("t")),
            Decision::Denied
        );
    }

    #[test]
    fn token_is_follows_rotation() {
        let old = new_token().unwrap();
        let new = new_token().unwrap();
        let file = |token: &str| AuthFile {
            version: 1,
            principals: vec![PrincipalEntry {
                name: "alice".into(),
                token_sha256: Some(token_hash(token)),
                superuser: false,
                allow: Vec::new(),
            }],
        };
        let before = Principals::new(&file(&old));
        assert!(before.token_is("alice", &token_digest(&old)));
        assert!(!before.token_is("alice", &token_digest(&new)));
        assert!(!before.token_is("bob", &token_digest(&old)));
        let after = Principals::new(&file(&new));
        assert!(!after.token_is("alice", &token_digest(&old)), "rotated");
        assert!(after.token_is("alice", &token_digest(&new)));
        assert!(!Principals::default().token_is("alice", &token_digest(&new)));
    }

    #[test]
    fn hashes_are_exactly_64_lowercase_hex_digits() {
        let good = token_hash("strata_x");
        assert_eq!(decode_hash(&good), Some(token_digest("strata_x")));
        assert_eq!(decode_hash(&good.to_uppercase()), None, "uppercase");
        assert_eq!(decode_hash(&"+f".repeat(32)), None, "a sign");
        assert_eq!(decode_hash(&"-0".repeat(32)), None, "a sign");
        assert_eq!(decode_hash(&" f".repeat(32)), None, "a space");
        assert_eq!(decode_hash(&good[..62]), None, "short");
        assert_eq!(decode_hash(&format!("{good}0")), None, "long");
        assert_eq!(decode_hash(&"é".repeat(32)), None, "not ascii");
        assert_eq!(decode_hash(&"0".repeat(64)), Some([0; 32]));
    }
}
