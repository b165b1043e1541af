//! The aggregator's TOML configuration file.
//!
//! Every key is optional except `[[agents]]` (an aggregator nobody may write
//! to is useless, so [`Config::validate`] wants at least one). Unknown keys
//! are an error, so a typo never silently falls back to a default.
//! `deploy/aggregator.toml` is the commented example of every key.
//!
//! Credentials are resolved once, by [`Config::validate`]: a `token_file` is
//! read and hashed there, TLS files are read there, so `validate` (systemd's
//! `ExecStartPre`) catches a missing file before the service starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::{self, ResolvedAgent, TokenDigest};

/// Why a configuration is unusable. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or does not match the schema.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The config file (`<inline>` for strings).
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {reason}")]
    Invalid {
        /// The offending key, e.g. `agents[2].id`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file named by the config cannot be read.
    #[error("{key}: reading {path}: {source}")]
    File {
        /// The key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Default gRPC listen address: loopback, so that exposing the port is a
/// deliberate act.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
/// Default metrics/HTTP listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default store directory.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/callkpi/aggregator";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC (Ingest, health, reflection) listen address.
    pub listen: SocketAddr,
    /// HTTP listen address for `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
    /// Directory of the sled store. A sibling `<dir>.lock` file guards it
    /// against a second aggregator.
    pub store_path: PathBuf,
    /// sled page cache, bytes. The aggregator usually runs on a server, so
    /// the default (64 MiB) is larger than an agent's.
    pub store_cache_bytes: u64,
    /// gRPC `max_decoding_message_size` and `max_encoding_message_size`:
    /// a larger message ends the stream with OUT_OF_RANGE (RESOURCE_EXHAUSTED
    /// when compressed) before it is buffered. Must be above `max_batch_bytes`.
    pub max_message_bytes: usize,
    /// `Welcome.max_batch_bytes`: most bytes one encoded `AgentMessage`
    /// carrying a Batch may have; above it the stream is rejected with
    /// `REJECT_CODE_BATCH_TOO_LARGE`.
    pub max_batch_bytes: u32,
    /// `Welcome.max_batch_events`: most events one Batch may carry.
    pub max_batch_events: u32,
    /// `Welcome.max_in_flight_batches`: Batches an agent may send before it
    /// sees them acked.
    pub max_in_flight_batches: u32,
    /// `Welcome.heartbeat_interval_ms`. A stream that sends nothing for
    /// three intervals is considered dead and closed.
    pub heartbeat_interval_ms: u32,
    /// HTTP/2 PING interval on idle connections, seconds; 0 disables.
    pub http2_keepalive_interval_secs: u64,
    /// How long to wait for a PING answer before closing the connection, seconds.
    pub http2_keepalive_timeout_secs: u64,
    /// TLS for the gRPC port; absent means plaintext (use only on a trusted network).
    pub tls: Option<TlsConfig>,
    /// Agents allowed to deliver events. The agent id is also a metric label,
    /// so only configured agents ever appear in metrics.
    pub agents: Vec<AgentConfig>,
    /// Clients allowed to read reports (the `Reports` service: `callkpi
    /// report`, dashboards). Separate from agents: an agent token cannot
    /// read, a reader token cannot deliver. Without any, `Reports` refuses
    /// every call.
    pub readers: Vec<ReaderConfig>,
    /// `[live]`: what "today" and the service-level thresholds mean for the
    /// live views (the wallboard and the per-queue gauges of `/metrics`).
    pub live: LiveConfig,
    /// `[kpi]`: how the KPI engine seals what can no longer change.
    pub kpi: KpiConfig,
    /// `[retention]`: how long raw events and the call index are kept.
    pub retention: RetentionConfig,
    /// `[wallboard]`: the wallboard page on the HTTP port.
    pub wallboard: WallboardConfig,
}

/// `[live]`: parameters of the live per-queue figures shown on the
/// wallboard and exported as `callkpi_queue_*` gauges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// IANA time zone whose midnight starts "today" (`UTC`, `Europe/Paris`,
    /// or `local` for the server's zone). The wallboard's `?tz=` overrides it
    /// per screen.
    pub time_zone: String,
    /// Service-level thresholds, seconds (1 to 3600, distinct). The first
    /// one is the big, coloured figure of the wallboard; every one is a
    /// `threshold` label of `callkpi_queue_service_level_today_ratio`.
    pub sl_thresholds_s: Vec<u32>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self { time_zone: "UTC".to_owned(), sl_thresholds_s: vec![20] }
    }
}

/// `[kpi]`: the KPI engine keeps in memory only what can still change
/// (the open window); the rest is sealed into rollups and a call index in
/// the store, so memory and restart time do not grow with history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    /// A finished call is sealed once every office that delivered its
    /// events has data this many seconds past its last event. Events that
    /// arrive later than this behind their office's own data still count
    /// exactly: the call is reopened from its stored events. Default 4 h.
    pub seal_horizon_s: u64,
    /// The longest FCR window (`fcr_window_s`) a report may ask for,
    /// seconds: callers' contacts are kept in memory this long. Default 7 days.
    pub fcr_max_window_s: u64,
    /// A finished call stays open this long without events before it is
    /// closed as "unknown end", seconds. Default 4 h.
    pub unknown_end_timeout_s: u64,
    /// Longest time between checkpoints of the engine (rollups, call
    /// index and open window, written atomically), milliseconds. A restart
    /// re-reads at most what was stored since. Default 10 000.
    pub checkpoint_interval_ms: u64,
}

impl Default for KpiConfig {
    fn default() -> Self {
        Self {
            seal_horizon_s: 4 * 3600,
            fcr_max_window_s: 7 * 24 * 3600,
            unknown_end_timeout_s: 4 * 3600,
            checkpoint_interval_ms: 10_000,
        }
    }
}

/// `[retention]`: raw events (what `GetCall` shows and a late event
/// reopens a call from) and the sealed-call index (what `ListCalls` lists)
/// are deleted once older than this; the rollups every report reads are
/// small and kept forever, so KPIs over any period stay available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days raw events are kept (by the time they happened); 0 keeps them
    /// forever. Default 400 (13 months). Must exceed the sealing horizon,
    /// the unknown-end timeout and the largest FCR window together.
    pub raw_events_days: u32,
    /// Days sealed calls stay in the call index; 0 keeps them forever. Default 400.
    pub calls_days: u32,
    /// How often the deletion runs, seconds. Default 3 600.
    pub interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { raw_events_days: 400, calls_days: 400, interval_s: 3600 }
    }
}

/// `[wallboard]`: the page at `/wallboard/` and its colour thresholds.
///
/// Access: when `[[readers]]` are configured, the page, its JSON and its
/// event stream need a reader token (`?token=` or `Authorization: Bearer`);
/// without readers they are open to whoever reaches `metrics_listen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WallboardConfig {
    /// Serve the wallboard (`/wallboard/`, its JSON and its event stream).
    pub enabled: bool,
    /// Heading of the page (at most 100 characters).
    pub title: String,
    /// Today's service level at or above this is green, percent.
    pub sl_green_pct: u8,
    /// At or above this (and below green) amber, below it red, percent.
    pub sl_amber_pct: u8,
    /// Today's abandonment at or above this is amber, percent.
    pub abandon_amber_pct: u8,
    /// At or above this red (below amber it is green), percent.
    pub abandon_red_pct: u8,
    /// How often the server recomputes the figures it pushes, ms (200 to
    /// 60000); it also recomputes after every ingested batch, and pushes only
    /// what changed (at least every 15 s, so a screen can tell it is live).
    pub push_interval_ms: u32,
}

impl Default for WallboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            title: "Contact centre".to_owned(),
            sl_green_pct: 80,
            sl_amber_pct: 70,
            abandon_amber_pct: 5,
            abandon_red_pct: 10,
            push_interval_ms: 1_000,
        }
    }
}

/// `[[readers]]`: one report reader and its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// A name for logs (who read what).
    pub name: String,
    /// Hex SHA-256 of the reader's bearer token (`callkpi-aggregator hash-token`).
    pub token_sha256: String,
}

/// `[tls]`: server certificate, and optionally client certificate checks (mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the aggregator.
    pub cert: PathBuf,
    /// PEM private key of the aggregator.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates. When set, every client must
    /// present a certificate signed by it, whose subject CN or one of whose
    /// SAN DNS names is the agent id it sends in Hello.
    pub client_ca: Option<PathBuf>,
}

/// `[[agents]]`: one agent and its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent id, as the agent sends it in `Hello.agent_id`: 1 to 128 of
    /// `A-Z a-z 0-9 . _ -` (it is a store key prefix and a metric label).
    pub id: String,
    /// The agent's site; when set it wins over `Hello.site` (a mismatch is
    /// logged).
    pub site: Option<String>,
    /// Lowercase or uppercase hex SHA-256 of the agent's bearer token
    /// (`callkpi-aggregator hash-token` prints it). The token itself is
    /// never stored.
    pub token_sha256: Option<String>,
    /// File holding the bearer token itself (surrounding whitespace
    /// ignored), e.g. a systemd credential; hashed at load. Exclusive with
    /// `token_sha256`.
    pub token_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().expect("valid default address"),
            store_path: PathBuf::from(DEFAULT_STORE_PATH),
            store_cache_bytes: 64 * 1024 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            max_batch_events: 5_000,
            max_in_flight_batches: 4,
            heartbeat_interval_ms: 15_000,
            http2_keepalive_interval_secs: 30,
            http2_keepalive_timeout_secs: 10,
            tls: None,
            agents: Vec::new(),
            readers: Vec::new(),
            live: LiveConfig::default(),
            kpi: KpiConfig::default(),
            retention: RetentionConfig::default(),
            wallboard: WallboardConfig::default(),
        }
    }
}

/// What [`Config::validate`] resolved: credentials hashed, TLS files read.
#[derive(Clone)]
pub struct Resolved {
    /// Per agent, in config order: id, configured site, token digest.
    pub(crate) agents: Vec<ResolvedAgent>,
    /// PEM contents of the TLS files.
    pub(crate) tls: Option<ResolvedTls>,
    /// Report readers: name and token digest.
    pub(crate) readers: Vec<(String, TokenDigest)>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print digests or keys.
        f.debug_struct("Resolved")
            .field("agents", &self.agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// TLS material after validation.
#[derive(Clone)]
pub(crate) struct ResolvedTls {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
    pub(crate) client_ca_pem: Option<Vec<u8>>,
}

impl Config {
    /// Reads and parses `path` (not yet validated).
    ///
    /// # Errors
    /// When the file cannot be read or does not match the schema.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.into(), source },
            other => other,
        })
    }

    /// Parses TOML text (not yet validated).
    ///
    /// # Errors
    /// When the text does not match the schema.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse { path: "<inline>".into(), source: Box::new(source) })
    }

    /// Checks every value and resolves credentials (reads `token_file`s and
    /// TLS files).
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<Resolved, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid { key: key.into(), reason };
        if self.max_message_bytes == 0 || self.max_message_bytes > u32::MAX as usize {
            return Err(invalid("max_message_bytes", format!("{} is not in 1..=4294967295", self.max_message_bytes)));
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes as usize >= self.max_message_bytes {
            return Err(invalid(
                "max_batch_bytes",
                format!(
                    "{} must be above 0 and below max_message_bytes ({}), which caps the whole message",
                    self.max_batch_bytes, self.max_message_bytes
                ),
            ));
        }
        if self.max_batch_events == 0 {
            return Err(invalid("max_batch_events", "must be at least 1".into()));
        }
        if self.max_in_flight_batches == 0 {
            return Err(invalid("max_in_flight_batches", "must be at least 1".into()));
        }
        let open_s = self
            .kpi
            .seal_horizon_s
            .saturating_add(self.kpi.unknown_end_timeout_s)
            .saturating_add(self.kpi.fcr_max_window_s);
        if self.retention.raw_events_days > 0 && u64::from(self.retention.raw_events_days) * 86_400 <= open_s {
            return Err(invalid(
                "retention.raw_events_days",
                format!(
                    "{} days is not longer than [kpi] seal_horizon_s + unknown_end_timeout_s + fcr_max_window_s ({open_s} s): \
                     a late event could no longer reopen its call",
                    self.retention.raw_events_days
                ),
            ));
        }
        if self.retention.interval_s == 0 {
            return Err(invalid("retention.interval_s", "must be at least 1".into()));
        }
        if self.heartbeat_interval_ms < 100 {
            return Err(invalid("heartbeat_interval_ms", format!("{} is below 100 ms", self.heartbeat_interval_ms)));
        }
        if self.http2_keepalive_interval_secs > 0 && self.http2_keepalive_timeout_secs == 0 {
            return Err(invalid("http2_keepalive_timeout_secs", "must be at least 1 when keepalive is on".into()));
        }
        if self.store_path.as_os_str().is_empty() {
            return Err(invalid("store_path", "is empty".into()));
        }
        if self.agents.is_empty() {
            return Err(invalid("agents", "no [[agents]] entry: no agent could deliver events".into()));
        }

        let tls = match &self.tls {
            None => None,
            Some(tls) => {
                let read = |key: &str, path: &Path| {
                    std::fs::read(path).map_err(|source| ConfigError::File {
                        key: key.into(),
                        path: path.into(),
                        source,
                    })
                };
                Some(ResolvedTls {
                    cert_pem: read("tls.cert", &tls.cert)?,
                    key_pem: read("tls.key", &tls.key)?,
                    client_ca_pem: tls.client_ca.as_deref().map(|p| read("tls.client_ca", p)).transpose()?,
                })
            }
        };
        let mtls = tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());

        let mut agents: Vec<ResolvedAgent> = Vec::with_capacity(self.agents.len());
        for (i, agent) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("agents[{i}].{field}");
            if let Err(reason) = check_agent_id(&agent.id) {
                return Err(invalid(&key("id"), reason));
            }
            if agents.iter().any(|a| a.id == agent.id) {
                return Err(invalid(&key("id"), format!("agent {:?} is configured twice", agent.id)));
            }
            let token = match (&agent.token_sha256, &agent.token_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(&key("token_file"), "set token_sha256 or token_file, not both".into()));
                }
                (Some(hex), None) => {
                    Some(TokenDigest::from_hex(hex).map_err(|reason| invalid(&key("token_sha256"), reason))?)
                }
                (None, Some(path)) => {
                    let token = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                        key: key("token_file"),
                        path: path.clone(),
                        source,
                    })?;
                    let token = token.trim();
                    if token.is_empty() {
                        return Err(invalid(&key("token_file"), format!("{} holds no token", path.display())));
                    }
                    Some(auth::digest(token))
                }
                (None, None) if mtls => None,
                (None, None) => {
                    return Err(invalid(
                        &key("token_sha256"),
                        format!(
                            "agent {:?} has no credential: set token_sha256 or token_file, or tls.client_ca",
                            agent.id
                        ),
                    ));
                }
            };
            if let Some(t) = &token
                && let Some(other) = agents.iter().find(|a| a.token.as_ref() == Some(t))
            {
                return Err(invalid(&key("token_sha256"), format!("same token as agent {:?}", other.id)));
            }
            agents.push(ResolvedAgent { id: agent.id.clone(), site: agent.site.clone(), token });
        }
        let mut readers: Vec<(String, TokenDigest)> = Vec::with_capacity(self.readers.len());
        for (i, reader) in self.readers.iter().enumerate() {
            let digest = TokenDigest::from_hex(&reader.token_sha256)
                .map_err(|reason| invalid(&format!("readers[{i}].token_sha256"), reason))?;
            if agents.iter().any(|a| a.token.as_ref() == Some(&digest)) {
                return Err(invalid(
                    &format!("readers[{i}].token_sha256"),
                    "same token as an agent: readers and agents need their own".into(),
                ));
            }
            readers.push((reader.name.clone(), digest));
        }
        self.validate_live()?;
        Ok(Resolved { agents, tls, readers })
    }
}

/// Secrets of the shipped examples: a config that still holds one works,
/// and lets anyone who read the example in.
pub const PLACEHOLDER_SECRETS: &[&str] = &["change-me"];

impl Config {
    /// What `run` needs of this machine beyond a valid file, checked by the
    /// binary's `validate` and `run` before anything starts: a store
    /// directory it can create or write.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `store_path`.
    pub fn preflight(&self) -> Result<(), ConfigError> {
        callkpi_durable::check_writable_dir(&self.store_path)
            .map_err(|reason| ConfigError::Invalid { key: "store_path".into(), reason })
    }

    /// What is valid but almost certainly a mistake: secrets left from the
    /// examples. `validate` prints them and `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let placeholders: Vec<TokenDigest> = PLACEHOLDER_SECRETS.iter().map(|s| auth::digest(s)).collect();
        let is_placeholder = |hex: &str| TokenDigest::from_hex(hex).is_ok_and(|d| placeholders.contains(&d));
        let mut out = Vec::new();
        for (i, agent) in self.agents.iter().enumerate() {
            if agent.token_sha256.as_deref().is_some_and(is_placeholder) {
                out.push(format!(
                    "agents[{i}].token_sha256 is the example's digest of \"change-me\": anyone who read the example can deliver events as {:?}; give it a token of its own (callkpi-aggregator hash-token)",
                    agent.id
                ));
            }
        }
        for (i, reader) in self.readers.iter().enumerate() {
            if is_placeholder(&reader.token_sha256) {
                out.push(format!(
                    "readers[{i}].token_sha256 is the digest of \"change-me\": give {:?} a token of its own",
                    reader.name
                ));
            }
        }
        out
    }

    /// `[live]` and `[wallboard]`.
    fn validate_live(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid { key: key.into(), reason };
        callkpi_core::time::parse_tz(&self.live.time_zone).map_err(|reason| invalid("live.time_zone", reason))?;
        let thresholds = &self.live.sl_thresholds_s;
        if thresholds.is_empty() {
            return Err(invalid("live.sl_thresholds_s", "needs at least one threshold".into()));
        }
        for (i, t) in thresholds.iter().enumerate() {
            if !(1..=3600).contains(t) {
                return Err(invalid("live.sl_thresholds_s", format!("{t} is not in 1..=3600 seconds")));
            }
            if thresholds[..i].contains(t) {
                return Err(invalid("live.sl_thresholds_s", format!("{t} is listed twice")));
            }
        }
        let w = &self.wallboard;
        if w.title.chars().count() > 100 {
            return Err(invalid("wallboard.title", "is longer than 100 characters".into()));
        }
        if w.sl_green_pct > 100 {
            return Err(invalid("wallboard.sl_green_pct", format!("{} is above 100", w.sl_green_pct)));
        }
        if w.sl_amber_pct > w.sl_green_pct {
            return Err(invalid(
                "wallboard.sl_amber_pct",
                format!("{} is above sl_green_pct ({})", w.sl_amber_pct, w.sl_green_pct),
            ));
        }
        if w.abandon_red_pct > 100 {
            return Err(invalid("wallboard.abandon_red_pct", format!("{} is above 100", w.abandon_red_pct)));
        }
        if w.abandon_amber_pct > w.abandon_red_pct {
            return Err(invalid(
                "wallboard.abandon_amber_pct",
                format!("{} is above abandon_red_pct ({})", w.abandon_amber_pct, w.abandon_red_pct),
            ));
        }
        if !(200..=60_000).contains(&w.push_interval_ms) {
            return Err(invalid("wallboard.push_interval_ms", format!("{} is not in 200..=60000", w.push_interval_ms)));
        }
        Ok(())
    }
}

/// Agent ids are store key prefixes (no 0x00) and metric labels (short, plain).
fn check_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("{id:?} must have 1 to 128 characters"));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{id:?} contains {c:?}; allowed: A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = Config::default();
        let text = toml::to_string(&cfg).expect("serialises");
        assert_eq!(Config::parse(&text).expect("parses"), cfg);
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.max_message_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let cfg = Config::parse(&format!("[[agents]]\nid = \"paris-1\"\ntoken_sha256 = \"{HASH}\"\n")).unwrap();
        assert_eq!(cfg.listen, Config::default().listen);
        let resolved = cfg.validate().expect("valid");
        assert_eq!(resolved.agents.len(), 1);
        assert!(!format!("{resolved:?}").contains("9f86"), "debug output leaks the digest");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("listne = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
        let err = Config::parse("[[agents]]\nid = \"a\"\ntoken = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/aggregator.toml");
        let cfg = Config::load(&path).expect("deploy/aggregator.toml parses");
        cfg.validate().expect("deploy/aggregator.toml is valid");
    }

    fn invalid_key(text: &str) -> String {
        match Config::parse(text).unwrap().validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let agent = format!("[[agents]]\nid = \"a\"\ntoken_sha256 = \"{HASH}\"\n");
        assert_eq!(invalid_key(""), "agents");
        assert_eq!(invalid_key(&format!("max_batch_bytes = 16777216\n{agent}")), "max_batch_bytes");
        assert_eq!(invalid_key(&format!("max_batch_events = 0\n{agent}")), "max_batch_events");
        assert_eq!(invalid_key(&format!("heartbeat_interval_ms = 5\n{agent}")), "heartbeat_interval_ms");
        // Raw events must outlive the open window, or a late event could not reopen its call.
        assert_eq!(invalid_key(&format!("{agent}\n[retention]\nraw_events_days = 7\n")), "retention.raw_events_days");
        assert_eq!(invalid_key("[[agents]]\nid = \"a b\"\ntoken_sha256 = \"00\"\n"), "agents[0].id");
        assert_eq!(invalid_key("[[agents]]\nid = \"a\"\ntoken_sha256 = \"00\"\n"), "agents[0].token_sha256");
        assert_eq!(invalid_key("[[agents]]\nid = \"a\"\n"), "agents[0].token_sha256");
        assert_eq!(invalid_key(&format!("{agent}{agent}")), "agents[1].id");
        let same_token = format!("{agent}[[agents]]\nid = \"b\"\ntoken_sha256 = \"{}\"\n", HASH.to_uppercase());
        assert_eq!(invalid_key(&same_token), "agents[1].token_sha256");
    }

    #[test]
    fn live_and_wallboard_keys_are_checked() {
        let agent = format!("[[agents]]\nid = \"a\"\ntoken_sha256 = \"{HASH}\"\n");
        let ok = Config::parse(&format!(
            "[live]\ntime_zone = \"Europe/Paris\"\nsl_thresholds_s = [20, 60]\n\
             [wallboard]\nsl_green_pct = 90\nsl_amber_pct = 80\n{agent}"
        ))
        .unwrap();
        ok.validate().expect("valid");
        assert_eq!(ok.live.sl_thresholds_s, [20, 60]);
        assert_eq!(ok.wallboard.abandon_red_pct, WallboardConfig::default().abandon_red_pct);
        for (text, key) in [
            ("[live]\ntime_zone = \"Mars/Olympus\"\n", "live.time_zone"),
            ("[live]\nsl_thresholds_s = []\n", "live.sl_thresholds_s"),
            ("[live]\nsl_thresholds_s = [0]\n", "live.sl_thresholds_s"),
            ("[live]\nsl_thresholds_s = [20, 20]\n", "live.sl_thresholds_s"),
            ("[wallboard]\nsl_green_pct = 101\n", "wallboard.sl_green_pct"),
            ("[wallboard]\nsl_green_pct = 60\nsl_amber_pct = 70\n", "wallboard.sl_amber_pct"),
            ("[wallboard]\nabandon_amber_pct = 20\nabandon_red_pct = 10\n", "wallboard.abandon_amber_pct"),
            ("[wallboard]\npush_interval_ms = 10\n", "wallboard.push_interval_ms"),
        ] {
            assert_eq!(invalid_key(&format!("{text}{agent}")), key, "{text}");
        }
        let err = Config::parse("[wallboard]\ncolour = \"red\"\n").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn token_file_is_read_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "test\n").unwrap();
        let cfg = Config {
            agents: vec![AgentConfig { id: "a".into(), site: None, token_sha256: None, token_file: Some(path) }],
            ..Config::default()
        };
        let resolved = cfg.validate().unwrap();
        // SHA-256("test") is HASH.
        assert_eq!(resolved.agents[0].token, Some(TokenDigest::from_hex(HASH).unwrap()));

        let missing = Config {
            agents: vec![AgentConfig {
                id: "a".into(),
                site: None,
                token_sha256: None,
                token_file: Some(dir.path().join("nope")),
            }],
            ..Config::default()
        };
        assert!(matches!(missing.validate(), Err(ConfigError::File { .. })));
    }
}
