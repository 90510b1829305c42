//! Who may do what at the edge. With a principals file (`--auth-file`, `file.rs`) every request
//! but health and reflection names its principal: a bearer token in the `authorization` header
//! (`Bearer strata_...`), or under mutual TLS the client certificate's common name; and every
//! request is checked against the principal's allow rules (`acl.rs`) before the broker sees it.
//! Without a file every client is anonymous and may do everything (`strata serve` then listens
//! only on loopback unless told otherwise).
//!
//! The file is read again on SIGHUP; open subscriptions are checked again then, and end if their
//! principal may no longer read the topic.

pub mod acl;
pub mod file;
mod throttle;

pub use acl::{Kind, Operation, Pattern, Resource, Rule};
pub use file::{
    AuthFile, AuthFileError, Decision, PrincipalEntry, Principals, TOKEN_PREFIX, new_token,
    token_digest, token_hash,
};

use super::{ConnInfo, RequestError};
use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};
use tokio::sync::watch;
use tonic::metadata::MetadataMap;

/// The longest `authorization` header looked at; a longer one is refused unread.
const MAX_AUTHORIZATION_BYTES: usize = 256;
/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No principals file: everyone may do everything.
    Anonymous,
    /// A principal of the file.
    Named(String),
}

impl Principal {
    /// Its name for logs and errors.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Named(n) => n,
        }
    }
}

/// The edge's authentication and authorization.
pub(crate) struct Auth {
    file: Option<PathBuf>,
    current: watch::Sender<Arc<Principals>>,
    /// Wrong tokens per client address.
    failures: Mutex<throttle::Throttle>,
}

impl Auth {
    /// Everyone is anonymous and allowed everything.
    pub(crate) fn disabled() -> Auth {
        Auth {
            file: None,
            current: watch::Sender::new(Arc::new(Principals::default())),
            failures: Mutex::default(),
        }
    }

    /// Checks against the principals in `path`.
    pub(crate) fn load(path: PathBuf) -> Result<Auth, AuthFileError> {
        let file = AuthFile::load(&path, false)?;
        Ok(Auth {
            file: Some(path),
            current: watch::Sender::new(Arc::new(Principals::new(&file))),
            failures: Mutex::default(),
        })
    }

    /// Whether requests are checked.
    pub(crate) fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Reads the file again; on failure the old principals stay. Returns how many there are.
    pub(crate) fn reload(&self) -> Result<usize, AuthFileError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let file = AuthFile::load(path, false)?;
        let count = file.principals.len();
        self.current.send_replace(Arc::new(Principals::new(&file)));
        Ok(count)
    }

    /// The principals now, and every change to come (a reload).
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<Principals>> {
        self.current.subscribe()
    }

    /// Who sent a request with `metadata` over `conn`.
    pub(crate) fn authenticate(
        &self,
        metadata: &MetadataMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Principal, RequestError> {
        if !self.enabled() {
            return Ok(Principal::Anonymous);
        }
        let addr = conn.and_then(|c| c.remote_addr).map(|a| a.ip());
        if let Some(ip) = addr
            && !self.may_try(ip)
        {
            return Err(RequestError::unauthenticated(
                "too many failed authentications from this address; wait a few seconds",
            ));
        }
        let principals = self.current.borrow().clone();
        let result = identify(&principals, metadata, conn);
        // A wrong token is a guess; no credentials at all is not.
        if result.is_err()
            && metadata.contains_key("authorization")
            && let Some(ip) = addr
        {
            self.failed(ip);
        }
        if let Err(e) = &result {
            // The token itself is never logged.
            tracing::info!(peer = ?addr, error = %e, "authentication failed");
        }
        result.map(Principal::Named)
    }

    /// Refuses unless `who` may do `operation` on `resource`.
    pub(crate) fn authorize(
        &self,
        who: &Principal,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> Result<(), RequestError> {
        if self.allows(who, operation, resource) {
            return Ok(());
        }
        tracing::info!(principal = who.name(), %operation, %resource, "permission denied");
        Err(RequestError::PermissionDenied {
            principal: who.name().to_string(),
            operation,
            resource: resource.to_string(),
        })
    }

    /// Whether `who` may do `operation` on `resource`.
    pub(crate) fn allows(
        &self,
        who: &Principal,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> bool {
        match who {
            Principal::Anonymous => !self.enabled(),
            Principal::Named(name) => matches!(
                self.current.borrow().decide(name, operation, resource),
                Decision::Allowed(_)
            ),
        }
    }

    fn may_try(&self, ip: IpAddr) -> bool {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .may_try(throttle::Client::of(ip), Instant::now())
    }

    fn failed(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .failed(throttle::Client::of(ip), Instant::now());
    }
}

/// The principal a request names: its bearer token's, else its client certificate's.
fn identify(
    principals: &Principals,
    metadata: &MetadataMap,
    conn: Option<&ConnInfo>,
) -> Result<String, RequestError> {
    if let Some(value) = metadata.get("authorization") {
        let token = bearer(value.as_bytes())?;
        return principals
            .by_token(token)
            .map(str::to_string)
            .ok_or_else(|| {
                RequestError::unauthenticated("the token is not valid (wrong, or revoked)")
            });
    }
    if let Some(chain) = conn.and_then(|c| c.peer_certs.as_ref())
        && let Some(cert) = chain.first()
    {
        let name = common_name(cert).ok_or_else(|| {
            RequestError::unauthenticated("the client certificate's subject has no common name")
        })?;
        if principals.exists(&name) {
            return Ok(name);
        }
        return Err(RequestError::unauthenticated(format!(
            "the client certificate's common name '{name}' is not a principal"
        )));
    }
    Err(RequestError::unauthenticated(
        "no credentials: give a token (--token or STRATA_TOKEN; the 'authorization: Bearer \
         TOKEN' header) or a client certificate",
    ))
}

/// The token of an `authorization` header: `Bearer TOKEN`, the scheme in any case (RFC 7235).
fn bearer(value: &[u8]) -> Result<&str, RequestError> {
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(RequestError::unauthenticated(format!(
            "the authorization header is {} bytes, more than any token",
            value.len()
        )));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            RequestError::unauthenticated("the authorization header is not 'Bearer TOKEN'")
        })
}

/// What a request with `metadata` authenticated with, for a subscription to remember: the
/// `token_digest` of its bearer token, `None` without one (a client certificate, or anonymous).
/// A subscription holding it ends when a reload no longer maps it to its principal (the token
/// was rotated or the principal revoked).
pub fn credential(metadata: &MetadataMap) -> Option<[u8; 32]> {
    let value = metadata.get("authorization")?;
    bearer(value.as_bytes()).ok().map(token_digest)
}

fn common_name(der: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in [
            "Bearer strata_t",
            "bearer strata_t",
            "BEARER strata_t",
            "bEaReR  strata_t ",
        ] {
            assert_eq!(bearer(header.as_bytes()).ok(), Some("strata_t"), "{header}");
        }
        for header in ["Basic strata_t", "Bearerstrata_t", "strata_t", "Bearer"] {
            assert!(bearer(header.as_bytes()).is_err(), "{header}");
        }
        assert!(bearer("x".repeat(MAX_AUTHORIZATION_BYTES + 1).as_bytes()).is_err());
    }

    #[test]
    fn a_credential_is_the_digest_of_the_bearer_token() {
        let mut metadata = MetadataMap::new();
        assert_eq!(credential(&metadata), None);
        metadata.insert("authorization", "bearer strata_t".parse().unwrap());
        assert_eq!(credential(&metadata), Some(token_digest("strata_t")));
        metadata.insert("authorization", "Basic strata_t".parse().unwrap());
        assert_eq!(credential(&metadata), None);
    }

    #[test]
    fn principals_know_a_token_in_any_scheme_case() {
        let token = new_token().unwrap();
        let file = AuthFile {
            version: 1,
            principals: vec![PrincipalEntry {
                name: "alice".into(),
                token_sha256: Some(token_hash(&token)),
                superuser: false,
                allow: Vec::new(),
            }],
        };
        let principals = Principals::new(&file);
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", format!("bearer {token}").parse().unwrap());
        assert_eq!(
            identify(&principals, &metadata, None).ok().as_deref(),
            Some("alice")
        );
    }
}
