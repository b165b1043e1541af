//! Agent aliases: names as logged mapped to the names reported.

use std::collections::HashMap;
use std::fmt;

use super::NONE;

/// A checked map `agent name as logged -> agent name reported`.
///
/// Exact and case-sensitive: queue_log holds each name exactly as it was
/// configured or given to `AddQueueMember`. Built by
/// [`AgentAliases::new`], which refuses maps that cannot mean what the admin
/// wants: an empty or `NONE` name, or a chain (`a -> b` with `b -> c`), whose
/// result would depend on how often the map is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentAliases(pub(super) HashMap<String, String>);

/// Why an alias map is refused; `logged` is the key of the faulty entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAliasError {
    /// An empty name, as logged or as reported.
    EmptyName {
        /// The key of the entry (empty when the key itself is empty).
        logged: String,
    },
    /// `NONE`, which queue_log writes for "no agent", as logged or as reported.
    NoneName {
        /// The key of the entry.
        logged: String,
    },
    /// The reported name is itself a logged name of the map.
    Chain {
        /// The key of the entry.
        logged: String,
        /// Its reported name, also a key.
        reported: String,
    },
}

impl AgentAliasError {
    /// The logged name (map key) the error is about.
    pub fn logged(&self) -> &str {
        match self {
            Self::EmptyName { logged } | Self::NoneName { logged } | Self::Chain { logged, .. } => logged,
        }
    }
}

impl fmt::Display for AgentAliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName { logged } if logged.is_empty() => f.write_str("agent alias with an empty logged name"),
            Self::EmptyName { logged } => write!(f, "agent alias {logged:?} maps to an empty name"),
            Self::NoneName { logged } => {
                write!(f, "agent alias {logged:?}: NONE means \"no agent\" in queue_log and cannot be aliased")
            }
            Self::Chain { logged, reported } if logged == reported => {
                write!(f, "agent alias {logged:?} maps to itself")
            }
            Self::Chain { logged, reported } => write!(
                f,
                "agent alias {logged:?} maps to {reported:?}, which is itself aliased: \
                 map {logged:?} to the final name"
            ),
        }
    }
}

impl std::error::Error for AgentAliasError {}

impl AgentAliases {
    /// Checks and builds an alias map.
    ///
    /// # Errors
    /// The first faulty entry in key order (see [`AgentAliasError`]).
    pub fn new(map: impl IntoIterator<Item = (String, String)>) -> Result<Self, AgentAliasError> {
        let map: HashMap<String, String> = map.into_iter().collect();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort_unstable();
        for logged in keys {
            let reported = &map[logged];
            if logged.is_empty() || reported.is_empty() {
                return Err(AgentAliasError::EmptyName { logged: logged.clone() });
            }
            if logged == NONE || reported == NONE {
                return Err(AgentAliasError::NoneName { logged: logged.clone() });
            }
            if map.contains_key(reported) {
                return Err(AgentAliasError::Chain { logged: logged.clone(), reported: reported.clone() });
            }
        }
        Ok(Self(map))
    }

    /// The name to report for an agent logged as `logged`.
    pub fn resolve<'a>(&'a self, logged: &'a str) -> &'a str {
        self.0.get(logged).map_or(logged, String::as_str)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
