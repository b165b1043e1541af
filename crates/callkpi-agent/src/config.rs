//! The agent's configuration: one TOML file, every key documented in
//! `deploy/agent.toml`.
//!
//! Every table rejects unknown keys (a typo is an error, not a silent
//! default) and every key but `agent_id` and `site` has a default, given by
//! the [`Default`] impls below. [`Config::from_toml`] parses and
//! [`Config::validate`] checks what serde cannot (non-empty names, unique
//! source names, a URL, a socket address, a time zone, exactly one of
//! `token`/`token_file`...). Secrets given as files (`token_file`,
//! `secret_file`, `password_file`) are read by [`Config::validate`] too, so that
//! `callkpi-agent validate` catches an unreadable file before systemd starts
//! the service.
//!
//! Durations are integers with their unit in the key name (`_ms`), so a
//! value never needs a parser of its own.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callkpi_core::event::SurveyMetric;
use callkpi_feeds::ami::{AmiMapperConfig, SurveyEventConfig};
use callkpi_feeds::esl::EslMapperConfig;
use callkpi_feeds::queue_log::{AgentAliases, InputForm, QueueLogConfig};
use callkpi_feeds::sip::SipTrackerConfig;
use serde::Deserialize;

use crate::spool::SpoolConfig;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or does not fit the schema (unknown key, wrong type).
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of its domain.
    #[error("invalid config: {key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `sources.ami[0].name`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret file could not be read.
    #[error("invalid config: {key}: cannot read {path}: {source}")]
    SecretFile {
        /// Dotted path of the key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// A secret value (token, AMI secret): never printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads a secret file; surrounding whitespace (a trailing newline) is dropped.
fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    Ok(Secret(text.trim().to_owned()))
}

/// The whole agent configuration (the TOML file's root table).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity of this agent, bound by the aggregator to its credential;
    /// part of every event id. Required.
    pub agent_id: String,
    /// Site (branch office) of this agent, copied into every event. Required.
    pub site: String,
    /// Connection to the aggregator.
    pub uplink: UplinkConfig,
    /// The durable spool (see [`crate::spool`]).
    pub spool: SpoolConfig,
    /// Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// The PBX feeds to read.
    pub sources: SourcesConfig,
}

impl Config {
    /// Parses a TOML document (no validation beyond the schema).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] on invalid TOML, an unknown key or a wrong type.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a file, then [`validate`](Self::validate)s it.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config = Self::from_toml(&text)?;
        config.validate()?;
        Ok(config)
    }

    /// What `run` needs beyond a well-formed file, checked by the binary's
    /// `validate` and `run` before anything starts: a spool directory it can
    /// create or write, and a credential the aggregator can accept.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn preflight(&self) -> Result<(), ConfigError> {
        callkpi_durable::check_writable_dir(&self.spool.path).map_err(|reason| invalid("spool.path", reason))?;
        let client_cert = self.uplink.tls.as_ref().is_some_and(|t| t.cert.is_some());
        if self.uplink.token()?.is_none() && !client_cert {
            return Err(invalid(
                "uplink.token",
                "no credential: give token or token_file, or a client certificate ([uplink.tls] cert and key)",
            ));
        }
        Ok(())
    }

    /// What is valid but almost certainly a mistake: secrets left from the
    /// examples (`change-me`), which let anyone who read them in.
    pub fn warnings(&self) -> Vec<String> {
        let placeholder = |s: &Secret| s.expose() == "change-me";
        let mut out = Vec::new();
        if self.uplink.token.as_ref().is_some_and(placeholder) {
            out.push("uplink.token is the example's \"change-me\": give this agent a token of its own".to_owned());
        }
        for (i, ami) in self.sources.ami.iter().enumerate() {
            if ami.secret.as_ref().is_some_and(placeholder) {
                out.push(format!("sources.ami[{i}].secret is the example's \"change-me\": is it manager.conf's?"));
            }
        }
        out
    }

    /// Checks every value serde cannot check, and that secret files are readable.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("agent_id", &self.agent_id)?;
        check_name("site", &self.site)?;
        self.uplink.validate()?;
        if self.spool.path.as_os_str().is_empty() {
            return Err(invalid("spool.path", "must not be empty"));
        }
        self.metrics.listen_addr()?;
        let mut names = HashSet::new();
        for (i, ami) in self.sources.ami.iter().enumerate() {
            let key = format!("sources.ami[{i}]");
            ami.validate(&key)?;
            if !names.insert(ami.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("duplicate source name {:?}", ami.name)));
            }
        }
        for (i, ql) in self.sources.queue_log.iter().enumerate() {
            let key = format!("sources.queue_log[{i}]");
            ql.validate(&key)?;
            if !names.insert(ql.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("duplicate source name {:?}", ql.name)));
            }
        }
        let mut devices = HashSet::new();
        for (i, lm) in self.sources.linemon.iter().enumerate() {
            let key = LinemonSourceConfig::key(i, self.sources.linemon.len());
            lm.validate(&key)?;
            if !names.insert(lm.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("duplicate source name {:?}", lm.name)));
            }
            if !devices.insert(lm.device.as_path()) {
                return Err(invalid(
                    format!("{key}.device"),
                    format!("{} is read by another source", lm.device.display()),
                ));
            }
        }
        for (i, esl) in self.sources.esl.iter().enumerate() {
            let key = one_key("sources.esl", i, self.sources.esl.len());
            esl.validate(&key)?;
            if !names.insert(esl.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("duplicate source name {:?}", esl.name)));
            }
        }
        let mut listens = HashSet::new();
        for (i, hep) in self.sources.hep.iter().enumerate() {
            let key = one_key("sources.hep", i, self.sources.hep.len());
            hep.validate(&key)?;
            if !names.insert(hep.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("duplicate source name {:?}", hep.name)));
            }
            for (what, addr) in [("listen_udp", hep.udp_addr(&key)?), ("listen_tcp", hep.tcp_addr(&key)?)] {
                let proto = if what == "listen_udp" { "udp" } else { "tcp" };
                if let Some(addr) = addr.filter(|a| a.port() != 0)
                    && !listens.insert((proto, addr))
                {
                    return Err(invalid(format!("{key}.{what}"), format!("{addr} is used by another source")));
                }
            }
        }
        Ok(())
    }
}

/// Source names, agent ids and sites: 1 to 64 of `[A-Za-z0-9._-]`, so they
/// are safe as metric labels, checkpoint keys and log fields.
fn check_name(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(invalid(key, "is required"));
    }
    if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(invalid(key, format!("{value:?} must be 1 to 64 of A-Z a-z 0-9 . _ -")));
    }
    Ok(())
}

fn check_positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 { Err(invalid(key, "must be greater than 0")) } else { Ok(()) }
}

// === uplink ===

/// `[uplink]`: the gRPC connection to the aggregator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Aggregator URL, `http://` or `https://` (https needs `[uplink.tls]`).
    /// Default `http://127.0.0.1:7443`.
    pub url: String,
    /// Bearer token sent as `authorization: Bearer <token>`. At most one of
    /// `token` and `token_file`; neither means no token (mTLS only, or an
    /// aggregator without authentication).
    pub token: Option<Secret>,
    /// File holding the token (surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// TLS settings; absent means plaintext HTTP/2.
    pub tls: Option<TlsConfig>,
    /// Most events per Batch (the aggregator's Welcome may lower it). Default 1000.
    pub batch_max_events: usize,
    /// Most bytes per Batch message (the aggregator's Welcome may lower it). Default 1 MiB.
    pub batch_max_bytes: usize,
    /// TCP connect timeout, ms. Default 5000.
    pub connect_timeout_ms: u64,
    /// HTTP/2 PING interval, ms; the connection is dropped when a PING is
    /// not answered within `keepalive_timeout_ms`. Default 20000.
    pub keepalive_interval_ms: u64,
    /// HTTP/2 PING answer timeout, ms. Default 10000.
    pub keepalive_timeout_ms: u64,
    /// Heartbeat interval used when the Welcome gives none, ms. Default 10000.
    pub heartbeat_interval_ms: u64,
    /// First reconnect delay, ms; doubled on each failure, with jitter. Default 500.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms; also the retry period when an operator
    /// must act (bad credentials, agent disabled). Default 60000.
    pub backoff_max_ms: u64,
    /// Compress both directions with zstd. Default true.
    pub compression: bool,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:7443".to_owned(),
            token: None,
            token_file: None,
            tls: None,
            batch_max_events: 1000,
            batch_max_bytes: 1 << 20,
            connect_timeout_ms: 5_000,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 10_000,
            heartbeat_interval_ms: 10_000,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            compression: true,
        }
    }
}

impl UplinkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let https = if let Some(rest) = self.url.strip_prefix("https://") {
            !rest.is_empty()
        } else if self.url.strip_prefix("http://").is_some_and(|rest| !rest.is_empty()) {
            false
        } else {
            return Err(invalid("uplink.url", format!("{:?} is not an http:// or https:// URL", self.url)));
        };
        if self.url.parse::<tonic::transport::Uri>().is_err() {
            return Err(invalid("uplink.url", format!("{:?} is not a valid URL", self.url)));
        }
        match &self.tls {
            None if https => return Err(invalid("uplink.tls", "an https:// url needs [uplink.tls] with ca")),
            Some(_) if !https => return Err(invalid("uplink.tls", "TLS needs an https:// url")),
            Some(tls) => tls.validate()?,
            None => {}
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(invalid("uplink.token", "give token or token_file, not both"));
        }
        self.token()?;
        check_positive("uplink.batch_max_events", self.batch_max_events as u64)?;
        if self.batch_max_bytes < 1024 {
            return Err(invalid("uplink.batch_max_bytes", "must be at least 1024"));
        }
        check_positive("uplink.connect_timeout_ms", self.connect_timeout_ms)?;
        check_positive("uplink.keepalive_interval_ms", self.keepalive_interval_ms)?;
        check_positive("uplink.keepalive_timeout_ms", self.keepalive_timeout_ms)?;
        check_positive("uplink.heartbeat_interval_ms", self.heartbeat_interval_ms)?;
        check_positive("uplink.backoff_initial_ms", self.backoff_initial_ms)?;
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(invalid("uplink.backoff_max_ms", "must be at least backoff_initial_ms"));
        }
        Ok(())
    }

    /// The bearer token, read from `token_file` when given.
    ///
    /// # Errors
    /// [`ConfigError::SecretFile`] when the file cannot be read.
    pub fn token(&self) -> Result<Option<Secret>, ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => read_secret_file("uplink.token_file", path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// `backoff_initial_ms` .. `backoff_max_ms` as a [`crate::backoff::Backoff`].
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(
            Duration::from_millis(self.backoff_initial_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }
}

/// `[uplink.tls]`: server verification and the optional client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the aggregator's certificate. Required.
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mTLS (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name to verify in the server certificate when it differs from the
    /// URL's host.
    pub domain: Option<String>,
}

impl TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let Some(ca) = &self.ca else {
            return Err(invalid("uplink.tls.ca", "is required (no system roots are built in)"));
        };
        read_file("uplink.tls.ca", ca)?;
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                read_file("uplink.tls.cert", cert)?;
                read_file("uplink.tls.key", key)?;
            }
            (None, None) => {}
            _ => return Err(invalid("uplink.tls", "cert and key go together")),
        }
        Ok(())
    }
}

/// Reads a whole file for a key, naming the key on error.
pub(crate) fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::SecretFile { key: key.to_owned(), path: path.to_owned(), source })
}

// === metrics ===

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP server serving `/metrics`, or `"disabled"`.
    /// Port 0 picks a free port. Default `127.0.0.1:9465`.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9465".to_owned() }
    }
}

impl MetricsConfig {
    /// The address to listen on, `None` when disabled.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when `listen` is neither `disabled` nor an `ip:port`.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen == "disabled" {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| invalid("metrics.listen", format!("{:?} is not ip:port or \"disabled\"", self.listen)))
    }
}

// === sources ===

/// `[sources]`: arrays of tables, one entry per feed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// `[[sources.ami]]`: Asterisk Manager Interface connections.
    pub ami: Vec<AmiSourceConfig>,
    /// `[[sources.queue_log]]`: queue_log files to tail.
    pub queue_log: Vec<QueueLogSourceConfig>,
    /// `[sources.linemon]` (one board) or `[[sources.linemon]]` (several):
    /// analogue line monitors on serial ports.
    #[serde(deserialize_with = "one_or_many")]
    pub linemon: Vec<LinemonSourceConfig>,
    /// `[sources.esl]` (one switch) or `[[sources.esl]]` (several):
    /// FreeSWITCH event-socket connections.
    #[serde(deserialize_with = "one_or_many")]
    pub esl: Vec<EslSourceConfig>,
    /// `[sources.hep]` (one listener) or `[[sources.hep]]` (several): HEP
    /// capture listeners tracking SIP calls.
    #[serde(deserialize_with = "one_or_many")]
    pub hep: Vec<HepSourceConfig>,
}

/// `[[sources.ami]]`: one AMI connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmiSourceConfig {
    /// Source name: metric label and log field. Required, unique.
    pub name: String,
    /// `host:port` of the manager interface. Default `127.0.0.1:5038`.
    pub address: String,
    /// `manager.conf` user. Required.
    pub username: String,
    /// Its secret; exactly one of `secret` and `secret_file`.
    pub secret: Option<Secret>,
    /// File holding the secret.
    pub secret_file: Option<PathBuf>,
    /// Interval of `Action: Ping` keep-alives, ms; with no traffic for twice
    /// this, the connection is considered dead and reopened. Default 20000.
    pub ping_interval_ms: u64,
    /// TCP connect and login timeout, ms. Default 5000.
    pub connect_timeout_ms: u64,
    /// First reconnect delay, ms (doubled per failure, jittered). Default 1000.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms. Default 30000.
    pub backoff_max_ms: u64,
    /// Largest AMI message accepted, bytes; bigger ones are skipped and
    /// counted as malformed. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Send `Action: QueueStatus` after each login, so the state of static
    /// members arrives as `QueueMember` events. Default true.
    pub queue_status_on_connect: bool,
    /// Dialplan contexts that dial out to the PSTN. Default `["pstn", "outbound"]`.
    pub outbound_contexts: Vec<String>,
    /// Channel-name prefixes of trunks dialled directly. Default empty.
    pub outbound_trunks: Vec<String>,
    /// `UserEvent` names carrying a survey score. Default one, `SurveyResult`, CSAT 1-5.
    pub survey_events: Vec<SurveyEventToml>,
    /// `UserEvent` names carrying a disposition. Default `["Disposition"]`.
    pub disposition_events: Vec<String>,
    /// Most channels, calls and members tracked at once. Default 65536.
    pub max_tracked: usize,
}

impl Default for AmiSourceConfig {
    fn default() -> Self {
        let mapper = AmiMapperConfig::default();
        Self {
            name: String::new(),
            address: "127.0.0.1:5038".to_owned(),
            username: String::new(),
            secret: None,
            secret_file: None,
            ping_interval_ms: 20_000,
            connect_timeout_ms: 5_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            max_message_bytes: callkpi_feeds::ami::DEFAULT_MAX_MESSAGE_SIZE,
            queue_status_on_connect: true,
            outbound_contexts: mapper.outbound_contexts,
            outbound_trunks: mapper.outbound_trunks,
            survey_events: mapper.survey_events.into_iter().map(SurveyEventToml::from).collect(),
            disposition_events: mapper.disposition_events,
            max_tracked: mapper.max_tracked,
        }
    }
}

impl AmiSourceConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_name(&format!("{key}.name"), &self.name)?;
        if self.address.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
            return Err(invalid(format!("{key}.address"), format!("{:?} is not host:port", self.address)));
        }
        if self.username.is_empty() {
            return Err(invalid(format!("{key}.username"), "is required"));
        }
        if self.secret.is_some() == self.secret_file.is_some() {
            return Err(invalid(format!("{key}.secret"), "give exactly one of secret and secret_file"));
        }
        self.secret(key)?;
        check_positive(&format!("{key}.ping_interval_ms"), self.ping_interval_ms)?;
        check_positive(&format!("{key}.connect_timeout_ms"), self.connect_timeout_ms)?;
        check_positive(&format!("{key}.backoff_initial_ms"), self.backoff_initial_ms)?;
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(invalid(format!("{key}.backoff_max_ms"), "must be at least backoff_initial_ms"));
        }
        if self.max_message_bytes < 1024 {
            return Err(invalid(format!("{key}.max_message_bytes"), "must be at least 1024"));
        }
        check_positive(&format!("{key}.max_tracked"), self.max_tracked as u64)?;
        for (i, s) in self.survey_events.iter().enumerate() {
            if s.name.is_empty() || s.scale_min.partial_cmp(&s.scale_max) != Some(std::cmp::Ordering::Less) {
                return Err(invalid(format!("{key}.survey_events[{i}]"), "needs a name and scale_min < scale_max"));
            }
        }
        Ok(())
    }

    /// The AMI secret, read from `secret_file` when given.
    ///
    /// # Errors
    /// [`ConfigError::SecretFile`] when the file cannot be read.
    pub fn secret(&self, key: &str) -> Result<Secret, ConfigError> {
        match (&self.secret, &self.secret_file) {
            (Some(secret), _) => Ok(secret.clone()),
            (None, Some(path)) => read_secret_file(&format!("{key}.secret_file"), path),
            (None, None) => Err(invalid(format!("{key}.secret"), "is required")),
        }
    }

    /// The mapper settings of this source.
    pub fn mapper_config(&self) -> AmiMapperConfig {
        AmiMapperConfig {
            outbound_contexts: self.outbound_contexts.clone(),
            outbound_trunks: self.outbound_trunks.clone(),
            survey_events: self.survey_events.iter().cloned().map(SurveyEventConfig::from).collect(),
            disposition_events: self.disposition_events.clone(),
            max_tracked: self.max_tracked,
        }
    }
}

/// `[[sources.ami.survey_events]]`: a survey `UserEvent` and its scale.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurveyEventToml {
    /// The `UserEvent:` header value.
    pub name: String,
    /// `csat`, `nps` or `ces`. Default `csat`.
    #[serde(default = "default_metric")]
    pub metric: SurveyMetric,
    /// Lowest valid score. Default 1.
    #[serde(default = "default_scale_min")]
    pub scale_min: f64,
    /// Highest valid score. Default 5.
    #[serde(default = "default_scale_max")]
    pub scale_max: f64,
}

fn default_metric() -> SurveyMetric {
    SurveyMetric::Csat
}
fn default_scale_min() -> f64 {
    1.0
}
fn default_scale_max() -> f64 {
    5.0
}

impl From<SurveyEventConfig> for SurveyEventToml {
    fn from(c: SurveyEventConfig) -> Self {
        Self { name: c.name, metric: c.metric, scale_min: c.scale_min, scale_max: c.scale_max }
    }
}

impl From<SurveyEventToml> for SurveyEventConfig {
    fn from(c: SurveyEventToml) -> Self {
        Self { name: c.name, metric: c.metric, scale_min: c.scale_min, scale_max: c.scale_max }
    }
}

/// Input form of a queue_log file, as written in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueLogForm {
    /// Detect from the first line (default).
    #[default]
    Auto,
    /// `epoch|callid|queue|agent|verb|data...` lines.
    File,
    /// DB-export CSV with a header line.
    Csv,
}

/// `[[sources.queue_log]]`: one queue_log file to tail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueLogSourceConfig {
    /// Source name: metric label, log field and checkpoint key. Required, unique.
    pub name: String,
    /// The file. Default `/var/log/asterisk/queue_log`.
    pub path: PathBuf,
    /// How often the file is checked for new bytes, rotation and truncation
    /// when no file-system notification came, ms. Default 200.
    pub poll_interval_ms: u64,
    /// After a rotation, how long the old file must stay unchanged before it
    /// is closed and the new file read, ms (Asterisk writes to the renamed
    /// file until `logger reload`). 0 switches at the first EOF. Default 5000.
    pub rotate_wait_ms: u64,
    /// IANA zone of CSV datetimes written without offset. Default `UTC`.
    pub time_zone: String,
    /// `auto`, `file` or `csv`. Default `auto`.
    pub form: QueueLogForm,
    /// Most bytes read and spooled in one step. Default 256 KiB.
    pub read_chunk_bytes: usize,
    /// Agent name as logged -> agent name reported, exact and case-sensitive.
    /// For `log_membername_as_agent = no` (Asterisk's default), where
    /// `ADDMEMBER`/`REMOVEMEMBER` name the interface and calls the member
    /// name. Default empty. No empty or `NONE` name, no chains.
    pub agent_aliases: BTreeMap<String, String>,
    /// Column layout of a DB-export CSV: `asterisk`, `queuemetrics`, or
    /// `time=COL,callid=COL,queue=COL,agent=COL,verb=COL,data=COL;COL...`.
    /// Default: none (the header of Asterisk's or QueueMetrics' table is
    /// recognised; any other header is refused).
    pub csv_columns: Option<String>,
}

impl Default for QueueLogSourceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: PathBuf::from("/var/log/asterisk/queue_log"),
            poll_interval_ms: 200,
            rotate_wait_ms: 5000,
            time_zone: "UTC".to_owned(),
            form: QueueLogForm::Auto,
            read_chunk_bytes: 256 * 1024,
            agent_aliases: BTreeMap::new(),
            csv_columns: None,
        }
    }
}

impl QueueLogSourceConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_name(&format!("{key}.name"), &self.name)?;
        if self.path.as_os_str().is_empty() {
            return Err(invalid(format!("{key}.path"), "is required"));
        }
        check_positive(&format!("{key}.poll_interval_ms"), self.poll_interval_ms)?;
        if self.read_chunk_bytes < 4096 {
            return Err(invalid(format!("{key}.read_chunk_bytes"), "must be at least 4096"));
        }
        self.mapper_config(key)?;
        Ok(())
    }

    /// The mapper settings of this source.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when `time_zone` is not a known IANA zone, or
    /// `agent_aliases` has an empty or `NONE` name or a chain.
    pub fn mapper_config(&self, key: &str) -> Result<QueueLogConfig, ConfigError> {
        let time_zone = jiff::tz::TimeZone::get(&self.time_zone)
            .map_err(|e| invalid(format!("{key}.time_zone"), format!("{:?}: {e}", self.time_zone)))?;
        let form = match self.form {
            QueueLogForm::Auto => None,
            QueueLogForm::File => Some(InputForm::File),
            QueueLogForm::Csv => Some(InputForm::Csv),
        };
        let agent_aliases = AgentAliases::new(self.agent_aliases.clone())
            .map_err(|e| invalid(format!("{key}.agent_aliases.{:?}", e.logged()), e.to_string()))?;
        let csv_columns = match &self.csv_columns {
            Some(spec) => Some(spec.parse().map_err(|e: String| invalid(format!("{key}.csv_columns"), e))?),
            None => None,
        };
        Ok(QueueLogConfig { time_zone, form, agent_aliases, csv_columns })
    }
}

// === line monitor ===

/// Accepts a table (`[sources.linemon]`) as a list of one, or an array of
/// tables (`[[sources.linemon]]`), keeping serde's errors (unknown keys,
/// wrong types) intact, which an untagged enum would not.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};

    struct OneOrMany<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table or an array of tables")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(|one| vec![one])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(SeqAccessDeserializer::new(seq))
        }
    }

    deserializer.deserialize_any(OneOrMany(std::marker::PhantomData))
}

/// `[sources.linemon]`: one analogue line monitor board (`firmware/`) on a
/// serial port; see [`crate::sources::linemon`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinemonSourceConfig {
    /// Source name: metric label, log field and prefix of call ids. Default
    /// `linemon`; unique among sources.
    pub name: String,
    /// The serial device, e.g. a `/dev/serial/by-id/...` link (stable across
    /// USB re-plugs, unlike `/dev/ttyUSB0`). Required.
    pub device: PathBuf,
    /// Baud rate (8N1, no flow control). Default 115200, the firmware's.
    pub baud: u32,
    /// First reopen delay after the device vanished or could not be opened,
    /// ms (doubled per failure, jittered). Default 1000.
    pub backoff_initial_ms: u64,
    /// Longest reopen delay, ms. Default 30000.
    pub backoff_max_ms: u64,
    /// No byte at all for this long means the board is silent (it sends a
    /// heartbeat every 10 s): logged, and the device is reopened, ms. 0
    /// disables the check. Default 60000.
    pub silence_timeout_ms: u64,
    /// When a heartbeat's time, mapped through the anchor, is off the
    /// agent's clock by more than this, the board's tick is re-anchored, ms.
    /// Default 1000.
    pub clock_tolerance_ms: u64,
    /// `[[sources.linemon.lines]]`: the monitored lines. At least one.
    pub lines: Vec<LinemonLineConfig>,
}

impl Default for LinemonSourceConfig {
    fn default() -> Self {
        Self {
            name: "linemon".to_owned(),
            device: PathBuf::new(),
            baud: 115_200,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            silence_timeout_ms: 60_000,
            clock_tolerance_ms: 1_000,
            lines: Vec::new(),
        }
    }
}

/// `[[sources.linemon.lines]]`: what one line of the board is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinemonLineConfig {
    /// Line index on the board, from 0 (0-254). Required, unique per board.
    pub line: u8,
    /// Queue the line's inbound calls are offered to. Required.
    pub queue: String,
    /// The line's number (DID): the called number of its inbound calls.
    #[serde(default)]
    pub did: Option<String>,
    /// Agent name of the phone on the line. Default `<name>-line<line>`.
    #[serde(default)]
    pub agent: Option<String>,
    /// The board's polarity input is wired for this line and the exchange
    /// reverses polarity at far-end answer and clear: outgoing calls then
    /// get an outcome, and a reversal during an answered call is the
    /// caller hanging up. Default false (polarity frames are ignored).
    #[serde(default)]
    pub polarity: bool,
}

impl LinemonSourceConfig {
    /// The dotted key of entry `i` of `n` (`sources.linemon` when alone).
    pub fn key(i: usize, n: usize) -> String {
        if n == 1 { "sources.linemon".to_owned() } else { format!("sources.linemon[{i}]") }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_name(&format!("{key}.name"), &self.name)?;
        if self.device.as_os_str().is_empty() {
            return Err(invalid(format!("{key}.device"), "is required"));
        }
        if !(50..=4_000_000).contains(&self.baud) {
            return Err(invalid(
                format!("{key}.baud"),
                format!("{} is not a serial baud rate (50 to 4000000)", self.baud),
            ));
        }
        check_positive(&format!("{key}.backoff_initial_ms"), self.backoff_initial_ms)?;
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(invalid(format!("{key}.backoff_max_ms"), "must be at least backoff_initial_ms"));
        }
        if self.silence_timeout_ms != 0 && self.silence_timeout_ms < 1_000 {
            return Err(invalid(format!("{key}.silence_timeout_ms"), "must be 0 (never) or at least 1000"));
        }
        check_positive(&format!("{key}.clock_tolerance_ms"), self.clock_tolerance_ms)?;
        if self.lines.is_empty() {
            return Err(invalid(format!("{key}.lines"), "at least one [[lines]] entry is required"));
        }
        let mut seen = HashSet::new();
        for (i, l) in self.lines.iter().enumerate() {
            let lkey = format!("{key}.lines[{i}]");
            if l.line == linemon::frame::BOARD_LINE {
                return Err(invalid(format!("{lkey}.line"), "255 is the board itself, not a line"));
            }
            if !seen.insert(l.line) {
                return Err(invalid(format!("{lkey}.line"), format!("line {} is listed twice", l.line)));
            }
            if l.queue.trim().is_empty() {
                return Err(invalid(format!("{lkey}.queue"), "is required"));
            }
            if l.did.as_deref().is_some_and(|d| d.trim().is_empty()) {
                return Err(invalid(format!("{lkey}.did"), "must not be empty (leave it out instead)"));
            }
            if l.agent.as_deref().is_some_and(|a| a.trim().is_empty()) {
                return Err(invalid(format!("{lkey}.agent"), "must not be empty (leave it out instead)"));
            }
        }
        Ok(())
    }

    /// The agent name of `line`: its `agent`, else `<name>-line<line>`.
    pub fn agent_of(&self, line: &LinemonLineConfig) -> String {
        line.agent.clone().unwrap_or_else(|| format!("{}-line{}", self.name, line.line))
    }
}

/// The dotted key of entry `i` of `n` of a table that may be written once
/// (`sources.esl`) or as an array (`sources.esl[1]`).
fn one_key(base: &str, i: usize, n: usize) -> String {
    if n == 1 { base.to_owned() } else { format!("{base}[{i}]") }
}

/// `host:port` with a non-empty host and a numeric port.
fn check_host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
        return Err(invalid(key, format!("{value:?} is not host:port")));
    }
    Ok(())
}

// === FreeSWITCH event socket ===

/// `[sources.esl]`: one FreeSWITCH event-socket connection (inbound mode,
/// `mod_event_socket`); see [`crate::sources::esl`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EslSourceConfig {
    /// Source name: metric label and log field. Default `esl`; unique among sources.
    pub name: String,
    /// `host:port` of `mod_event_socket`. Default `127.0.0.1:8021`.
    pub address: String,
    /// The event socket's password (`event_socket.conf.xml`); exactly one of
    /// `password` and `password_file`.
    pub password: Option<Secret>,
    /// File holding the password (surrounding whitespace ignored).
    pub password_file: Option<PathBuf>,
    /// TCP connect and login timeout, ms. Default 5000.
    pub connect_timeout_ms: u64,
    /// With nothing at all received for this long (FreeSWITCH sends a
    /// `HEARTBEAT` every 20 s), the connection is considered dead and
    /// reopened, ms. 0 disables the check. Default 60000.
    pub silence_timeout_ms: u64,
    /// First reconnect delay, ms (doubled per failure, jittered). Default 1000.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms. Default 30000.
    pub backoff_max_ms: u64,
    /// Largest frame accepted, bytes; a bigger one breaks the connection
    /// (counted as malformed). Default 8 MiB.
    pub max_frame_bytes: usize,
    /// Most channels, pending offers and learnt agent extensions tracked at once. Default 65536.
    pub max_tracked: usize,
}

impl Default for EslSourceConfig {
    fn default() -> Self {
        Self {
            name: "esl".to_owned(),
            address: "127.0.0.1:8021".to_owned(),
            password: None,
            password_file: None,
            connect_timeout_ms: 5_000,
            silence_timeout_ms: 60_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            max_frame_bytes: callkpi_feeds::esl::DEFAULT_MAX_FRAME_SIZE,
            max_tracked: EslMapperConfig::default().max_tracked,
        }
    }
}

impl EslSourceConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_name(&format!("{key}.name"), &self.name)?;
        check_host_port(&format!("{key}.address"), &self.address)?;
        if self.password.is_some() == self.password_file.is_some() {
            return Err(invalid(format!("{key}.password"), "give exactly one of password and password_file"));
        }
        if self.password(key)?.expose().contains(['\r', '\n']) {
            return Err(invalid(format!("{key}.password"), "must not contain a line break"));
        }
        check_positive(&format!("{key}.connect_timeout_ms"), self.connect_timeout_ms)?;
        if self.silence_timeout_ms != 0 && self.silence_timeout_ms < 1_000 {
            return Err(invalid(format!("{key}.silence_timeout_ms"), "must be 0 (never) or at least 1000"));
        }
        check_positive(&format!("{key}.backoff_initial_ms"), self.backoff_initial_ms)?;
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(invalid(format!("{key}.backoff_max_ms"), "must be at least backoff_initial_ms"));
        }
        if self.max_frame_bytes < 64 * 1024 {
            return Err(invalid(format!("{key}.max_frame_bytes"), "must be at least 65536"));
        }
        check_positive(&format!("{key}.max_tracked"), self.max_tracked as u64)?;
        Ok(())
    }

    /// The event-socket password, read from `password_file` when given.
    ///
    /// # Errors
    /// [`ConfigError::SecretFile`] when the file cannot be read.
    pub fn password(&self, key: &str) -> Result<Secret, ConfigError> {
        match (&self.password, &self.password_file) {
            (Some(password), _) => Ok(password.clone()),
            (None, Some(path)) => read_secret_file(&format!("{key}.password_file"), path),
            (None, None) => Err(invalid(format!("{key}.password"), "is required")),
        }
    }

    /// The mapper settings of this source.
    pub fn mapper_config(&self) -> EslMapperConfig {
        EslMapperConfig { max_tracked: self.max_tracked }
    }
}

// === HEP ===

/// `[sources.hep]`: one HEP capture listener (Kamailio `siptrace`, OpenSIPS,
/// heplify, captagent send to it); see [`crate::sources::hep`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HepSourceConfig {
    /// Source name: metric label and log field. Default `hep`; unique among sources.
    pub name: String,
    /// UDP `ip:port` to receive HEP datagrams on, or `"disabled"`. Default
    /// `127.0.0.1:9060`.
    pub listen_udp: String,
    /// TCP `ip:port` to accept HEP streams on, or `"disabled"` (default).
    pub listen_tcp: String,
    /// Most TCP senders connected at once; more are refused. Default 64.
    pub max_tcp_connections: usize,
    /// A TCP sender silent for this long is disconnected, ms. 0 never. Default 300000.
    pub tcp_idle_timeout_ms: u64,
    /// How often calls with no new packet are checked for their timeouts, ms. Default 1000.
    pub expire_interval_ms: u64,
    /// Kernel receive buffer of the UDP socket (`SO_RCVBUF`), bytes; 0 keeps
    /// the system default (`net.core.rmem_default`). Default 0. Linux caps
    /// it at `net.core.rmem_max`; the size obtained is logged at start.
    pub recv_buffer_bytes: u64,
    /// `[sources.hep.sip]`: who is an agent, which calls are queue calls,
    /// and the call tracker's timeouts (see `SipTrackerConfig`).
    pub sip: SipTrackerConfig,
}

impl Default for HepSourceConfig {
    fn default() -> Self {
        Self {
            name: "hep".to_owned(),
            listen_udp: "127.0.0.1:9060".to_owned(),
            listen_tcp: "disabled".to_owned(),
            max_tcp_connections: 64,
            tcp_idle_timeout_ms: 300_000,
            expire_interval_ms: 1_000,
            recv_buffer_bytes: 0,
            sip: SipTrackerConfig::default(),
        }
    }
}

impl HepSourceConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_name(&format!("{key}.name"), &self.name)?;
        let (udp, tcp) = (self.udp_addr(key)?, self.tcp_addr(key)?);
        if udp.is_none() && tcp.is_none() {
            return Err(invalid(format!("{key}.listen_udp"), "listen_udp and listen_tcp cannot both be disabled"));
        }
        check_positive(&format!("{key}.max_tcp_connections"), self.max_tcp_connections as u64)?;
        check_positive(&format!("{key}.expire_interval_ms"), self.expire_interval_ms)?;
        if self.recv_buffer_bytes > i32::MAX as u64 / 2 {
            // setsockopt takes an int, which Linux doubles for its bookkeeping.
            return Err(invalid(format!("{key}.recv_buffer_bytes"), "must be at most 1073741823"));
        }
        self.sip.validate().map_err(|reason| invalid(format!("{key}.sip"), reason))?;
        Ok(())
    }

    /// The UDP address to bind, `None` when disabled.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when neither `disabled` nor `ip:port`.
    pub fn udp_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr(&format!("{key}.listen_udp"), &self.listen_udp)
    }

    /// The TCP address to bind, `None` when disabled.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when neither `disabled` nor `ip:port`.
    pub fn tcp_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        listen_addr(&format!("{key}.listen_tcp"), &self.listen_tcp)
    }
}

fn listen_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value == "disabled" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| invalid(key, format!("{value:?} is not ip:port or \"disabled\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINEMON_ONE: &str = r#"
agent_id = "a"
site = "x"
[sources.linemon]
device = "/dev/ttyUSB0"
[[sources.linemon.lines]]
line = 0
queue = "accueil"
did = "+33140000000"
[[sources.linemon.lines]]
line = 1
queue = "sav"
agent = "poste-sav"
polarity = true
"#;

    #[test]
    fn linemon_as_one_table() {
        let config = Config::from_toml(LINEMON_ONE).expect("parses");
        config.validate().expect("valid");
        let lm = &config.sources.linemon;
        assert_eq!(lm.len(), 1);
        let lm = &lm[0];
        assert_eq!(
            LinemonSourceConfig { device: PathBuf::new(), lines: Vec::new(), ..lm.clone() },
            LinemonSourceConfig::default()
        );
        assert_eq!(lm.device, PathBuf::from("/dev/ttyUSB0"));
        assert_eq!(lm.lines[0].did.as_deref(), Some("+33140000000"));
        assert!(!lm.lines[0].polarity && lm.lines[1].polarity);
        assert_eq!(lm.agent_of(&lm.lines[0]), "linemon-line0");
        assert_eq!(lm.agent_of(&lm.lines[1]), "poste-sav");
    }

    #[test]
    fn linemon_as_an_array_of_tables() {
        let text = r#"
agent_id = "a"
site = "x"
[[sources.linemon]]
name = "board-a"
device = "/dev/ttyUSB0"
lines = [{ line = 0, queue = "q" }]
[[sources.linemon]]
name = "board-b"
device = "/dev/ttyUSB1"
baud = 57600
lines = [{ line = 0, queue = "q" }, { line = 1, queue = "r" }]
"#;
        let config = Config::from_toml(text).expect("parses");
        config.validate().expect("valid");
        let names: Vec<&str> = config.sources.linemon.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["board-a", "board-b"]);
        assert_eq!(config.sources.linemon[1].baud, 57600);
        assert_eq!(config.sources.linemon[1].lines.len(), 2);
    }

    #[test]
    fn the_linemon_example_documents_its_defaults() {
        // The example is commented out in deploy/agent.toml: uncomment the
        // block that starts at "# [sources.linemon]" and runs to the first
        // line that is not a comment.
        let text = include_str!("../../../deploy/agent.toml");
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# [sources.linemon]")
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
            .collect();
        assert!(block.len() > 10, "deploy/agent.toml lacks the commented [sources.linemon] example");
        let config = Config::from_toml(&format!("agent_id = \"a\"\nsite = \"x\"\n{}", block.join("\n")))
            .expect("the linemon example parses once uncommented");
        config.validate().expect("the linemon example is valid");
        let lm = &config.sources.linemon[0];
        assert_eq!(
            LinemonSourceConfig { device: PathBuf::new(), lines: Vec::new(), ..lm.clone() },
            LinemonSourceConfig::default(),
            "every key of the example shows its default"
        );
        assert!(!lm.lines.is_empty());
    }

    #[test]
    fn bad_linemon_configs_name_the_key() {
        let base = "agent_id = \"a\"\nsite = \"x\"\n";
        let line = "[[sources.linemon.lines]]\nline = 0\nqueue = \"q\"\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("{base}[sources.linemon]\n{line}"), "sources.linemon.device"),
            (format!("{base}[sources.linemon]\ndevice = \"/dev/x\"\n"), "sources.linemon.lines"),
            (format!("{base}[sources.linemon]\ndevice = \"/dev/x\"\nbaud = 0\n{line}"), "sources.linemon.baud"),
            (format!("{base}[sources.linemon]\ndevice = \"/dev/x\"\nbuad = 9600\n{line}"), "unknown field"),
            (
                format!(
                    "{base}[sources.linemon]\ndevice = \"/dev/x\"\n{line}[[sources.linemon.lines]]\nline = 0\nqueue = \"r\"\n"
                ),
                "sources.linemon.lines[1].line",
            ),
            (
                format!(
                    "{base}[sources.linemon]\ndevice = \"/dev/x\"\n[[sources.linemon.lines]]\nline = 255\nqueue = \"q\"\n"
                ),
                "sources.linemon.lines[0].line",
            ),
            (
                format!(
                    "{base}[sources.linemon]\ndevice = \"/dev/x\"\n[[sources.linemon.lines]]\nline = 0\nqueue = \"\"\n"
                ),
                "sources.linemon.lines[0].queue",
            ),
            (
                format!("{base}[sources.linemon]\ndevice = \"/dev/x\"\n[[sources.linemon.lines]]\nline = 0\n"),
                "missing field `queue`",
            ),
            (
                format!(
                    "{base}[sources.linemon]\ndevice = \"/dev/x\"\n[[sources.linemon.lines]]\nline = 300\nqueue = \"q\"\n"
                ),
                "line",
            ),
            (
                format!("{base}[sources.linemon]\ndevice = \"/dev/x\"\nsilence_timeout_ms = 10\n{line}"),
                "sources.linemon.silence_timeout_ms",
            ),
            (
                format!("{base}[sources.linemon]\ndevice = \"/dev/x\"\nbackoff_max_ms = 1\n{line}"),
                "sources.linemon.backoff_max_ms",
            ),
            (
                format!(
                    "{base}[[sources.linemon]]\ndevice = \"/dev/x\"\n{line}[[sources.linemon]]\nname = \"b\"\ndevice = \"/dev/x\"\n{line}"
                ),
                "sources.linemon[1].device",
            ),
            (
                format!(
                    "{base}[[sources.linemon]]\ndevice = \"/dev/x\"\n{line}[[sources.linemon]]\ndevice = \"/dev/y\"\n{line}"
                ),
                "duplicate source name",
            ),
            (format!("{base}[sources]\nlinemon = 3\n"), "a table or an array of tables"),
        ];
        for (text, needle) in &cases {
            let err = Config::from_toml(text).and_then(|c| c.validate()).expect_err(text);
            assert!(err.to_string().contains(needle), "{text:?}: {err} lacks {needle:?}");
        }
    }

    const MINIMAL: &str = r#"
agent_id = "paris-pbx1"
site = "paris"
"#;

    #[test]
    fn minimal_config_takes_every_default() {
        let config = Config::from_toml(MINIMAL).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.uplink, UplinkConfig::default());
        assert_eq!(config.metrics, MetricsConfig::default());
        assert_eq!(config.sources, SourcesConfig::default());
        let spool = SpoolConfig::default();
        assert_eq!(config.spool.path, spool.path);
        assert_eq!(config.spool.max_bytes, spool.max_bytes);
        assert_eq!(config.uplink.url, "http://127.0.0.1:7443");
        assert_eq!(config.uplink.batch_max_events, 1000);
        assert_eq!(config.uplink.batch_max_bytes, 1 << 20);
        assert_eq!(config.metrics.listen_addr().expect("valid"), Some("127.0.0.1:9465".parse().expect("addr")));
    }

    #[test]
    fn the_example_file_is_valid_and_documents_the_defaults() {
        // deploy/agent.toml spells out every key with its default value,
        // except the required ones and the example sources.
        let text = include_str!("../../../deploy/agent.toml");
        let config = Config::from_toml(text).expect("deploy/agent.toml parses");
        assert_eq!(config.uplink, UplinkConfig::default());
        assert_eq!(config.metrics, MetricsConfig::default());
        let spool = SpoolConfig::default();
        assert_eq!(config.spool.path, spool.path);
        assert_eq!(config.spool.cache_bytes, spool.cache_bytes);
        assert_eq!(config.spool.max_bytes, spool.max_bytes);
        assert_eq!(config.spool.reserve_bytes, spool.reserve_bytes);
        assert_eq!(config.spool.flush_interval, spool.flush_interval);
        assert_eq!(config.spool.flush_events, spool.flush_events);
        let ami = &config.sources.ami[0];
        assert_eq!(AmiSourceConfig { name: String::new(), username: String::new(), secret: None, ..ami.clone() }, {
            AmiSourceConfig::default()
        });
        let ql = &config.sources.queue_log[0];
        assert_eq!(QueueLogSourceConfig { name: String::new(), ..ql.clone() }, QueueLogSourceConfig::default());
    }

    #[test]
    fn full_config_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("ami.secret");
        std::fs::write(&secret, "s3cret\n").expect("write");
        let text = format!(
            r#"
agent_id = "lyon-1"
site = "lyon"
[uplink]
url = "http://10.0.0.1:7443"
token = "abc"
batch_max_events = 200
backoff_initial_ms = 100
backoff_max_ms = 1000
[metrics]
listen = "disabled"
[[sources.ami]]
name = "ami"
address = "pbx.local:5038"
username = "callkpi"
secret_file = "{}"
outbound_contexts = ["from-internal-out"]
[[sources.ami.survey_events]]
name = "Nps"
metric = "nps"
scale_min = 0
scale_max = 10
[[sources.queue_log]]
name = "ql"
path = "/tmp/queue_log"
time_zone = "Europe/Paris"
form = "csv"
"#,
            secret.display()
        );
        let config = Config::from_toml(&text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.uplink.token.as_ref().map(Secret::expose), Some("abc"));
        assert_eq!(config.metrics.listen_addr().expect("valid"), None);
        let ami = &config.sources.ami[0];
        assert_eq!(ami.secret("k").expect("readable").expose(), "s3cret");
        assert_eq!(ami.mapper_config().survey_events[0].metric, SurveyMetric::Nps);
        assert_eq!(ami.ping_interval_ms, 20_000);
        let ql = config.sources.queue_log[0].mapper_config("k").expect("zone");
        assert_eq!(ql.form, Some(InputForm::Csv));
        assert!(!format!("{config:?}").contains("abc"), "secrets are redacted in Debug");
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("site = \"x\"", "agent_id"),
            ("agent_id = \"a b\"\nsite = \"x\"", "agent_id"),
            ("agent_id = \"a\"\nsite = \"x\"\nbogus = 1", "unknown field"),
            ("agent_id = \"a\"\nsite = \"x\"\n[uplink]\nurl = \"ftp://x\"", "uplink.url"),
            ("agent_id = \"a\"\nsite = \"x\"\n[uplink]\nurl = \"https://x:1\"", "uplink.tls"),
            ("agent_id = \"a\"\nsite = \"x\"\n[uplink]\nbatch_max_event = 3", "unknown field"),
            ("agent_id = \"a\"\nsite = \"x\"\n[metrics]\nlisten = \"nowhere\"", "metrics.listen"),
            (
                "agent_id = \"a\"\nsite = \"x\"\n[[sources.ami]]\nname = \"a\"\nusername = \"u\"",
                "sources.ami[0].secret",
            ),
            (
                "agent_id = \"a\"\nsite = \"x\"\n[[sources.queue_log]]\nname = \"q\"\ntime_zone = \"Mars/Base\"",
                "sources.queue_log[0].time_zone",
            ),
            (
                "agent_id = \"a\"\nsite = \"x\"\n[[sources.queue_log]]\nname = \"q\"\n[[sources.queue_log]]\nname = \"q\"",
                "duplicate",
            ),
            ("agent_id = \"a\"\nsite = \"x\"\n[uplink]\ntoken = \"t\"\ntoken_file = \"/nonexistent\"", "uplink.token"),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(text).and_then(|c| c.validate()).expect_err(text);
            assert!(err.to_string().contains(needle), "{text:?}: {err} lacks {needle:?}");
        }
    }

    #[test]
    fn queue_log_agent_aliases_reach_the_mapper_and_bad_ones_name_their_key() {
        let base = "agent_id = \"a\"\nsite = \"x\"\n[[sources.queue_log]]\nname = \"q\"\n";
        let text =
            format!("{base}agent_aliases = {{ \"PJSIP/1001\" = \"Alice\", \"Local/1002@agents/n\" = \"Bob\" }}\n");
        let config = Config::from_toml(&text).expect("parses");
        config.validate().expect("valid");
        let aliases = config.sources.queue_log[0].mapper_config("k").expect("valid").agent_aliases;
        assert_eq!(aliases.len(), 2);
        assert_eq!(aliases.resolve("PJSIP/1001"), "Alice");
        assert_eq!(aliases.resolve("pjsip/1001"), "pjsip/1001");
        // The commented example of deploy/agent.toml is valid as written.
        let example = include_str!("../../../deploy/agent.toml")
            .lines()
            .find_map(|l| l.strip_prefix("# agent_aliases = "))
            .expect("deploy/agent.toml shows an agent_aliases example");
        let config = Config::from_toml(&format!("{base}agent_aliases = {example}\n")).expect("example parses");
        config.validate().expect("example is valid");
        assert!(!config.sources.queue_log[0].agent_aliases.is_empty());
        let cases = [
            (
                "agent_aliases = { \"PJSIP/1001\" = \"Alice\", \"Alice\" = \"Alice Martin\" }",
                "sources.queue_log[0].agent_aliases.\"PJSIP/1001\": agent alias \"PJSIP/1001\" maps to \"Alice\", which is itself aliased",
            ),
            ("agent_aliases = { \"PJSIP/1001\" = \"\" }", "sources.queue_log[0].agent_aliases.\"PJSIP/1001\""),
            (
                "agent_aliases = { \"\" = \"Alice\" }",
                "sources.queue_log[0].agent_aliases.\"\": agent alias with an empty",
            ),
            ("agent_aliases = { \"NONE\" = \"Alice\" }", "sources.queue_log[0].agent_aliases.\"NONE\""),
            ("agent_aliases = { \"PJSIP/1001\" = 1001 }", "invalid type"),
        ];
        for (line, needle) in cases {
            let text = format!("{base}{line}\n");
            let err = Config::from_toml(&text).and_then(|c| c.validate()).expect_err(&text);
            assert!(err.to_string().contains(needle), "{text}\n-> {err} (expected {needle})");
        }
    }

    /// The commented example starting at `# <header>` in deploy/agent.toml,
    /// uncommented, after the required root keys.
    fn example(header: &str) -> String {
        let text = include_str!("../../../deploy/agent.toml");
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != format!("# {header}"))
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
            .collect();
        assert!(block.len() > 10, "deploy/agent.toml lacks the commented {header} example");
        format!("agent_id = \"a\"\nsite = \"x\"\n{}", block.join("\n"))
    }

    #[test]
    fn the_esl_example_documents_its_defaults() {
        let config = Config::from_toml(&example("[sources.esl]")).expect("the esl example parses");
        config.validate().expect("the esl example is valid");
        let esl = &config.sources.esl[0];
        assert_eq!(esl.password("sources.esl").expect("password").expose(), "ClueCon");
        assert_eq!(EslSourceConfig { password: None, ..esl.clone() }, EslSourceConfig::default());
    }

    #[test]
    fn the_hep_example_documents_its_defaults() {
        let config = Config::from_toml(&example("[sources.hep]")).expect("the hep example parses");
        config.validate().expect("the hep example is valid");
        let hep = &config.sources.hep[0];
        let sip = &hep.sip;
        assert_eq!(sip.agents.len(), 1);
        assert_eq!(sip.agent_extensions, ["2001", "2002"]);
        assert_eq!(sip.queues[0].numbers, ["+33140000000", "2100"]);
        let defaults =
            SipTrackerConfig { agents: Vec::new(), agent_extensions: Vec::new(), queues: Vec::new(), ..sip.clone() };
        assert_eq!(defaults, SipTrackerConfig::default());
        assert_eq!(HepSourceConfig { sip: SipTrackerConfig::default(), ..hep.clone() }, HepSourceConfig::default());
        assert_eq!(hep.udp_addr("k").expect("addr"), Some("127.0.0.1:9060".parse().expect("addr")));
        assert_eq!(hep.tcp_addr("k").expect("addr"), None);
    }

    #[test]
    fn esl_and_hep_as_arrays_and_bad_values_name_the_key() {
        let base = "agent_id = \"a\"\nsite = \"x\"\n";
        let two = format!(
            "{base}[[sources.esl]]\nname = \"fs1\"\npassword = \"a\"\n[[sources.esl]]\nname = \"fs2\"\naddress = \"10.0.0.2:8021\"\npassword = \"b\"\n\
             [[sources.hep]]\nname = \"h1\"\n[[sources.hep]]\nname = \"h2\"\nlisten_udp = \"disabled\"\nlisten_tcp = \"0.0.0.0:9061\"\n"
        );
        let config = Config::from_toml(&two).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.sources.esl.len(), 2);
        assert_eq!(config.sources.hep[1].tcp_addr("k").expect("addr"), Some("0.0.0.0:9061".parse().expect("addr")));
        let cases: Vec<(String, &str)> = vec![
            (format!("{base}[sources.esl]\n"), "sources.esl.password"),
            (format!("{base}[sources.esl]\npassword = \"a\"\npassword_file = \"/x\"\n"), "sources.esl.password"),
            (format!("{base}[sources.esl]\npassword = \"a\\nb\"\n"), "sources.esl.password"),
            (format!("{base}[sources.esl]\npassword = \"a\"\naddress = \"nohost\"\n"), "sources.esl.address"),
            (format!("{base}[sources.esl]\npassword_file = \"/nonexistent/callkpi\"\n"), "sources.esl.password_file"),
            (
                format!("{base}[sources.esl]\npassword = \"a\"\nsilence_timeout_ms = 5\n"),
                "sources.esl.silence_timeout_ms",
            ),
            (format!("{base}[sources.esl]\npasword = \"a\"\n"), "unknown field"),
            (format!("{base}[sources.hep]\nlisten_udp = \"disabled\"\n"), "sources.hep.listen_udp"),
            (format!("{base}[sources.hep]\nlisten_udp = \"9060\"\n"), "sources.hep.listen_udp"),
            (format!("{base}[sources.hep]\nlisten_tcp = \"x:y\"\n"), "sources.hep.listen_tcp"),
            (format!("{base}[sources.hep]\nexpire_interval_ms = 0\n"), "sources.hep.expire_interval_ms"),
            (format!("{base}[sources.hep]\nrecv_buffer_bytes = 2000000000\n"), "sources.hep.recv_buffer_bytes"),
            (format!("{base}[sources.hep.sip]\n[[sources.hep.sip.queues]]\nname = \"q\"\n"), "sources.hep.sip"),
            (format!("{base}[sources.hep.sip]\nagent_extension = []\n"), "unknown field"),
            (
                format!("{base}[[sources.hep]]\nname = \"a\"\n[[sources.hep]]\nname = \"b\"\n"),
                "sources.hep[1].listen_udp",
            ),
            (
                format!("{base}[sources.hep]\nname = \"s\"\n[sources.esl]\nname = \"s\"\npassword = \"a\"\n"),
                "duplicate source name",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text).and_then(|c| c.validate()).expect_err(&text);
            assert!(err.to_string().contains(key), "{text}\n-> {err} (expected {key})");
        }
    }
}
