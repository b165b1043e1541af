//! Who is an agent and which calls are queue calls: the site knowledge a SIP
//! capture does not carry. Deserialised from the `[sources.hep.sip]`-style
//! TOML table of whoever embeds it, or built from `callkpi analyze` flags.
//!
//! ```toml
//! # Phones of agents, by name (the name is what reports show).
//! [[agents]]
//! name = "alice"
//! address = "10.1.2.31"          # the phone's IP (or a CIDR network)
//! [[agents]]
//! name = "2002"
//! extension = "2002"             # or its extension (user part of the URI it is rung at)
//!
//! # Or whole families of them, named by extension (or by address).
//! agent_extensions = ["2001", "2003"]
//! agent_prefixes = ["20"]
//! agent_networks = ["10.1.2.0/24"]
//!
//! # Queue calls: the dialled number (To, else Request-URI user part) -> queue.
//! [[queues]]
//! name = "support"
//! numbers = ["+33140000000", "2100"]
//! prefixes = ["0800"]
//! # A header naming the queue or carrying its number, when the PBX adds one.
//! queue_header = "X-Queue"
//! # Inbound calls that match no queue rule join this queue. Unset: a queue
//! # named after the dialled number, unless queue_by_dialled_number = false
//! # (then such calls count for agents only).
//! default_queue = "inbound"
//! queue_by_dialled_number = true
//! # Headers linking the two legs of a call through a B2BUA (SBC, PBX).
//! link_headers = ["X-CID", "Session-ID"]
//! ```
//!
//! So with no queue rule at all, every inbound call is a queue call in a
//! queue named after the number dialled (a DID or hunt-group number): a
//! capture read with no configuration already gives offered, answered and
//! abandoned per number. [`QueuePlacements`] counts which rule placed each
//! call, so the output can say how much of it the default decided.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Configuration of [`SipTracker`](super::SipTracker).
///
/// With no agent rule at all (the default), every party that answers or
/// rings is an agent, named by the number it was rung at; with any rule,
/// only the phones the rules recognise are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipTrackerConfig {
    /// Agents' phones by name, recognised by address or extension.
    pub agents: Vec<AgentEntry>,
    /// Extensions that are agents, named by the extension.
    pub agent_extensions: Vec<String>,
    /// Extension prefixes that are agents.
    pub agent_prefixes: Vec<String>,
    /// Networks (CIDR, or single addresses) of agents' phones. Must not
    /// contain the proxy or SBC that mirrors the traffic: its copies of
    /// messages would look like an agent's.
    pub agent_networks: Vec<Network>,
    /// Queues by dialled number.
    pub queues: Vec<QueueEntry>,
    /// A request header naming the call's queue: a URI's user part is
    /// looked up in [`queues`](Self::queues) (else used as the name), plain
    /// text is the queue name. Checked before the dialled number.
    pub queue_header: Option<String>,
    /// Queue of inbound calls no rule places. Default: unset, see
    /// [`queue_by_dialled_number`](Self::queue_by_dialled_number).
    pub default_queue: Option<String>,
    /// Inbound calls that neither a rule nor
    /// [`default_queue`](Self::default_queue) places join a queue named
    /// after the dialled number (To user, else Request-URI user). `false`:
    /// such calls are not queue calls (no offered/abandoned counts, agent
    /// KPIs only). Default: true.
    pub queue_by_dialled_number: bool,
    /// An unanswered call with no message for this long is dropped, s.
    /// Default: 600.
    pub setup_timeout_s: u64,
    /// An answered call with no message for this long is dropped, s
    /// (the engine then closes it as "unknown end"). Default: 14 400.
    pub call_timeout_s: u64,
    /// How long an ended call is kept to absorb late copies and
    /// retransmissions, s. Default: 32 (SIP timer B).
    pub linger_s: u64,
    /// A new INVITE from the transferred caller to the REFER's target
    /// within this many seconds is the transfer's new leg. Default: 60.
    pub transfer_window_s: u64,
    /// Most calls tracked at once; the oldest is dropped beyond. Default: 100 000.
    pub max_dialogs: usize,
    /// Request headers that link the two legs of a call through a B2BUA
    /// (an SBC, a PBX), which gives each leg its own Call-ID: a new INVITE
    /// whose header value is a tracked leg's Call-ID (`X-CID`, as SBCs and
    /// Kamailio's topoh add), or the value a tracked leg carried too
    /// (`Session-ID`, RFC 7989: its local UUID), is that call's leg towards
    /// the agents. HEP's correlation id chunk (0x0011) is checked first, the
    /// same way. Default: `["X-CID", "Session-ID"]`; empty: no linking by
    /// header.
    pub link_headers: Vec<String>,
}

impl Default for SipTrackerConfig {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            agent_extensions: Vec::new(),
            agent_prefixes: Vec::new(),
            agent_networks: Vec::new(),
            queues: Vec::new(),
            queue_header: None,
            default_queue: None,
            queue_by_dialled_number: true,
            setup_timeout_s: 600,
            call_timeout_s: 14_400,
            linger_s: 32,
            transfer_window_s: 60,
            max_dialogs: 100_000,
            link_headers: vec!["X-CID".to_owned(), "Session-ID".to_owned()],
        }
    }
}

/// One agent phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// Name reported for the agent.
    pub name: String,
    /// The phone's address or network.
    #[serde(default)]
    pub address: Option<Network>,
    /// The extension the phone is rung at.
    #[serde(default)]
    pub extension: Option<String>,
}

/// One queue and the numbers that reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueEntry {
    /// Queue name.
    pub name: String,
    /// Dialled numbers (DIDs, hunt-group extensions), exact.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Dialled-number prefixes.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// How the inbound calls of a capture were placed in queues, by rule:
/// what `callkpi analyze` prints so a reader sees how much of its queue
/// figures the default decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueuePlacements {
    /// Calls placed by [`queue_header`](SipTrackerConfig::queue_header).
    pub by_header: u64,
    /// Calls placed by a [`queues`](SipTrackerConfig::queues) rule, by
    /// queue name.
    pub by_rule: std::collections::BTreeMap<String, u64>,
    /// Calls placed in [`default_queue`](SipTrackerConfig::default_queue).
    pub by_default_queue: u64,
    /// Calls placed in a queue named after their dialled number
    /// ([`queue_by_dialled_number`](SipTrackerConfig::queue_by_dialled_number)).
    pub by_dialled_number: u64,
    /// Inbound calls in no queue (agent KPIs only).
    pub not_queued: u64,
}

impl QueuePlacements {
    /// Inbound calls counted.
    pub fn total(&self) -> u64 {
        self.by_header
            + self.by_rule.values().sum::<u64>()
            + self.by_default_queue
            + self.by_dialled_number
            + self.not_queued
    }
}

impl fmt::Display for QueuePlacements {
    /// One line: `12 inbound calls: 3 by queue_header, 5 by rule (support 5), ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} inbound calls:", self.total())?;
        let rules: Vec<String> = self.by_rule.iter().map(|(q, n)| format!("{q} {n}")).collect();
        let rules_n: u64 = self.by_rule.values().sum();
        let mut parts = vec![format!("{} by queue_header", self.by_header)];
        parts.push(if rules.is_empty() {
            "0 by a queue rule".to_owned()
        } else {
            format!("{rules_n} by a queue rule ({})", rules.join(", "))
        });
        parts.push(format!("{} by default_queue", self.by_default_queue));
        parts.push(format!("{} in a queue named after the dialled number (the default)", self.by_dialled_number));
        parts.push(format!("{} in no queue", self.not_queued));
        write!(f, " {}", parts.join(", "))
    }
}

/// An IP network, written `10.0.0.0/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network(pub IpNet);

impl Network {
    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.contains('/') {
            s.parse::<IpNet>().map(Network).map_err(|e| format!("bad network {s:?}: {e}"))
        } else {
            s.parse::<IpAddr>().map(|a| Network(IpNet::from(a))).map_err(|e| format!("bad address {s:?}: {e}"))
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl SipTrackerConfig {
    /// Whether any agent rule is set (else every callee is an agent).
    pub fn has_agent_rules(&self) -> bool {
        !(self.agents.is_empty()
            && self.agent_extensions.is_empty()
            && self.agent_prefixes.is_empty()
            && self.agent_networks.is_empty())
    }

    /// The named agent at `ip`.
    pub fn agent_at(&self, ip: IpAddr) -> Option<&str> {
        self.agents.iter().find(|a| a.address.is_some_and(|n| n.contains(ip))).map(|a| a.name.as_str())
    }

    /// The agent rung at extension `ext`: a named one, else `ext` itself
    /// when it matches an extension rule.
    pub fn agent_with_extension<'a>(&'a self, ext: &'a str) -> Option<&'a str> {
        if ext.is_empty() {
            return None;
        }
        if let Some(a) = self.agents.iter().find(|a| a.extension.as_deref() == Some(ext)) {
            return Some(&a.name);
        }
        let listed = self.agent_extensions.iter().any(|e| e == ext)
            || self.agent_prefixes.iter().any(|p| !p.is_empty() && ext.starts_with(p.as_str()));
        listed.then_some(ext)
    }

    /// Whether `ip` is in an agent network.
    pub fn in_agent_network(&self, ip: IpAddr) -> bool {
        self.agent_networks.iter().any(|n| n.contains(ip))
    }

    /// The queue reached by dialling `number`.
    pub fn queue_for_number(&self, number: &str) -> Option<&str> {
        if number.is_empty() {
            return None;
        }
        self.queues
            .iter()
            .find(|q| {
                q.numbers.iter().any(|n| n == number)
                    || q.prefixes.iter().any(|p| !p.is_empty() && number.starts_with(p.as_str()))
            })
            .map(|q| q.name.as_str())
    }

    /// Checks what serde cannot: names and numbers are not empty.
    ///
    /// # Errors
    /// A message naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.agents {
            if a.name.is_empty() {
                return Err("an [[agents]] entry has an empty name".into());
            }
            if a.address.is_none() && a.extension.as_deref().is_none_or(str::is_empty) {
                return Err(format!("agent {:?} needs an address or an extension", a.name));
            }
        }
        for q in &self.queues {
            if q.name.is_empty() {
                return Err("a [[queues]] entry has an empty name".into());
            }
            if q.numbers.is_empty() && q.prefixes.is_empty() {
                return Err(format!("queue {:?} needs numbers or prefixes", q.name));
            }
        }
        if self.max_dialogs == 0 {
            return Err("max_dialogs must be at least 1".into());
        }
        Ok(())
    }
}
