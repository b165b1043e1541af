//! Who is on the other end of a stream: bearer tokens and mTLS client
//! certificates, bound to configured agent ids.
//!
//! - **Token**: metadata `authorization: Bearer <token>`. The aggregator
//!   keeps only SHA-256 digests; the presented token is hashed and compared
//!   with every configured digest in constant time (no early exit), so
//!   timing tells nothing about which digest, or how much of one, matched.
//! - **Certificate** (only with `tls.client_ca`): the TLS layer has already
//!   verified the chain; the subject CN and the SAN DNS names are the
//!   identities it vouches for.
//!
//! Rules (`Authenticator::authenticate`):
//! - a token that matches no agent, a malformed `authorization` value, or no
//!   credential at all: UNAUTHENTICATED;
//! - token and certificate both present: the certificate must name the
//!   token's agent, else UNAUTHENTICATED;
//! - certificate alone: accepted only for configured agents that have no
//!   token (an agent configured with a token must present it);
//! - the result is the set of agent ids the stream may speak for (usually
//!   one); `Hello.agent_id` outside it is PERMISSION_DENIED (see `ingest`).

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::Status;

/// One agent allowed to connect, after the config was validated: the
/// identity a token or certificate is bound to.
#[derive(Clone)]
pub(crate) struct ResolvedAgent {
    pub(crate) id: String,
    pub(crate) site: Option<String>,
    pub(crate) token: Option<TokenDigest>,
}

/// SHA-256 of a bearer token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    /// Parses 64 hex digits.
    pub(crate) fn from_hex(hex: &str) -> Result<Self, String> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(format!("expected 64 hex digits (a SHA-256), got {} characters", hex.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16).ok_or_else(|| format!("{:?} is not a hex digit", b as char));
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Self(out))
    }
}

/// The digest of `token`.
pub(crate) fn digest(token: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(token.as_bytes()).into())
}

/// Lowercase hex SHA-256 of `token`: the value of `agents[].token_sha256`.
pub fn token_sha256_hex(token: &str) -> String {
    use std::fmt::Write as _;
    digest(token).0.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The agent ids an authenticated stream may speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Never empty.
    pub(crate) agent_ids: Vec<String>,
}

impl Identity {
    /// Whether `agent_id` is one of them.
    pub(crate) fn allows(&self, agent_id: &str) -> bool {
        self.agent_ids.iter().any(|a| a == agent_id)
    }
}

/// Checks credentials against the configured agents.
#[derive(Clone)]
pub(crate) struct Authenticator {
    agents: Vec<ResolvedAgent>,
    mtls: bool,
}

impl Authenticator {
    pub(crate) fn new(agents: Vec<ResolvedAgent>, mtls: bool) -> Self {
        Self { agents, mtls }
    }

    /// The identity of a request from its `authorization` metadata value and
    /// the DER of its client certificate chain (leaf first), if any.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer_cert: Option<&[u8]>,
    ) -> Result<Identity, Status> {
        let token_agent = match authorization {
            None => None,
            Some(value) => {
                let token = bearer(value).ok_or_else(|| {
                    Status::unauthenticated("malformed authorization metadata: expected \"Bearer <token>\"")
                })?;
                Some(self.agent_for_token(token).ok_or_else(|| Status::unauthenticated("unknown bearer token"))?)
            }
        };
        let cert_names = match (self.mtls, peer_cert) {
            (true, Some(der)) => Some(
                cert_names(der)
                    .map_err(|e| Status::unauthenticated(format!("client certificate cannot be read: {e}")))?,
            ),
            (true, None) => return Err(Status::unauthenticated("a client certificate is required")),
            (false, _) => None,
        };
        match (token_agent, cert_names) {
            (Some(agent), Some(names)) => {
                if names.contains(&agent.id) {
                    Ok(Identity { agent_ids: vec![agent.id.clone()] })
                } else {
                    Err(Status::unauthenticated(format!(
                        "the client certificate (names {names:?}) is not issued to the token's agent {:?}",
                        agent.id
                    )))
                }
            }
            (Some(agent), None) => Ok(Identity { agent_ids: vec![agent.id.clone()] }),
            (None, Some(names)) => {
                let agent_ids: Vec<String> = self
                    .agents
                    .iter()
                    .filter(|a| a.token.is_none() && names.contains(&a.id))
                    .map(|a| a.id.clone())
                    .collect();
                if agent_ids.is_empty() {
                    Err(Status::unauthenticated(format!(
                        "the client certificate (names {names:?}) names no agent configured without a token"
                    )))
                } else {
                    Ok(Identity { agent_ids })
                }
            }
            (None, None) => Err(Status::unauthenticated("missing authorization metadata (\"Bearer <token>\")")),
        }
    }

    /// The agent whose digest matches, comparing with every one in constant time.
    fn agent_for_token(&self, token: &str) -> Option<&ResolvedAgent> {
        let presented = digest(token);
        let mut found = None;
        for agent in &self.agents {
            if let Some(expected) = &agent.token
                && bool::from(expected.0.ct_eq(&presented.0))
            {
                // Configured digests are distinct (validated), so at most one matches;
                // no break, so every digest is compared.
                found = Some(agent);
            }
        }
        found
    }
}

/// Checks report readers' bearer tokens (the `Reports` service).
#[derive(Clone)]
pub(crate) struct ReaderAuth {
    readers: Vec<(String, TokenDigest)>,
}

impl ReaderAuth {
    pub(crate) fn new(readers: Vec<(String, TokenDigest)>) -> Self {
        Self { readers }
    }

    /// The reader's name, from its `authorization` metadata value.
    pub(crate) fn authenticate(&self, authorization: Option<&[u8]>) -> Result<String, Status> {
        if self.readers.is_empty() {
            return Err(Status::unauthenticated("no [[readers]] are configured: reports are closed"));
        }
        let value = authorization.ok_or_else(|| Status::unauthenticated("missing authorization metadata"))?;
        let token = bearer(value)
            .ok_or_else(|| Status::unauthenticated("malformed authorization metadata: expected \"Bearer <token>\""))?;
        let presented = digest(token);
        let mut found = None;
        for (name, expected) in &self.readers {
            if bool::from(expected.0.ct_eq(&presented.0)) {
                found = Some(name.clone());
            }
        }
        found.ok_or_else(|| Status::unauthenticated("unknown reader token"))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Subject common names and SAN DNS names of a DER certificate.
pub(crate) fn cert_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Vec<ResolvedAgent> {
        vec![
            ResolvedAgent { id: "paris".into(), site: None, token: Some(digest("secret-paris")) },
            ResolvedAgent { id: "lyon".into(), site: None, token: Some(digest("secret-lyon")) },
            ResolvedAgent { id: "certonly".into(), site: None, token: None },
        ]
    }

    #[test]
    fn hex_digest_matches_sha256() {
        // SHA-256("test"), a well-known vector.
        assert_eq!(token_sha256_hex("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        assert!(TokenDigest::from_hex(&token_sha256_hex("x").to_uppercase()).unwrap() == digest("x"));
        assert!(TokenDigest::from_hex("zz").is_err());
        assert!(TokenDigest::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn bearer_tokens_map_to_their_agent() {
        let auth = Authenticator::new(agents(), false);
        let id = auth.authenticate(Some(b"Bearer secret-lyon"), None).unwrap();
        assert_eq!(id.agent_ids, ["lyon"]);
        assert!(id.allows("lyon") && !id.allows("paris"));
        assert_eq!(auth.authenticate(Some(b"bearer  secret-paris "), None).unwrap().agent_ids, ["paris"]);
        for bad in [&b"Bearer nope"[..], b"Basic c2VjcmV0", b"Bearer", b"secret-paris", b"\xff"] {
            let err = auth.authenticate(Some(bad), None).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert_eq!(auth.authenticate(None, None).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn mtls_requires_a_certificate() {
        let auth = Authenticator::new(agents(), true);
        let err = auth.authenticate(Some(b"Bearer secret-lyon"), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = auth.authenticate(Some(b"Bearer secret-lyon"), Some(b"not a certificate")).unwrap_err();
        assert!(err.message().contains("cannot be read"), "{err}");
    }
}
