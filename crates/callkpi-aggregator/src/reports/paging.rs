//! ListCalls paging and GetCall timelines over the follower's calls.

use super::*;
use crate::kpi_store::KpiStore;

/// `ListCalls` page size when the query says 0.
pub const DEFAULT_CALLS_PAGE: usize = 100;
/// Largest `ListCalls` page.
pub const MAX_CALLS_PAGE: usize = 1000;

impl KpiFollower {
    /// A page of calls as of `now_ns`; `short_abandon_s` decides short
    /// abandons as for KPIs. Blocking.
    ///
    /// # Errors
    /// INTERNAL when the store cannot be read.
    pub fn list_calls(&self, query: &CallQuery, short_abandon_s: u32, now_ns: i64) -> Result<pb::CallList, Status> {
        self.catch_up().map_err(|e| Status::internal(format!("store: {e}")))?;
        let mut st = self.lock();
        st.engine.refresh(Some(now_ns), false);
        query.page(&st.engine, Some(&self.kpi), short_abandon_s)
    }

    /// One call's timeline as of `now_ns`. Blocking.
    ///
    /// # Errors
    /// As [`call_timeline`], and INTERNAL when the store cannot be read.
    pub fn call(&self, call: &pb::CallRef, short_abandon_s: u32, now_ns: i64) -> Result<pb::CallTimeline, Status> {
        self.catch_up().map_err(|e| Status::internal(format!("store: {e}")))?;
        let mut st = self.lock();
        st.engine.refresh(Some(now_ns), false);
        call_timeline(&st.engine, Some(&self.kpi), call, short_abandon_s)
    }
}

/// A validated `CallQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallQuery {
    from: i64,
    to: i64,
    queue: Option<String>,
    agent: Option<String>,
    /// The normalised number asked for (`None` inside: a withheld number).
    caller: Option<Option<String>>,
    site: Option<String>,
    pub(super) limit: usize,
    /// The last call of the previous page: (start, site, call id).
    after: Option<(i64, String, String)>,
    /// Digest of the filters, carried in page tokens.
    digest: String,
}

impl CallQuery {
    /// Checks a wire query: range, page size, page token.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for `from_ns >= to_ns` (both set), or a page token
    /// that is malformed or was issued for other filters.
    pub fn parse(q: &pb::CallQuery) -> Result<Self, Status> {
        let from = if q.from_ns == 0 { i64::MIN } else { q.from_ns };
        let to = if q.to_ns == 0 { i64::MAX } else { q.to_ns };
        if from >= to {
            return Err(Status::invalid_argument(format!(
                "from_ns ({}) must be before to_ns ({})",
                q.from_ns, q.to_ns
            )));
        }
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let limit = match q.limit {
            0 => DEFAULT_CALLS_PAGE,
            n => usize::try_from(n).unwrap_or(MAX_CALLS_PAGE).min(MAX_CALLS_PAGE),
        };
        let digest = filters_digest(q);
        let after = if q.page_token.is_empty() { None } else { Some(parse_page_token(&q.page_token, &digest)?) };
        Ok(Self {
            from,
            to,
            queue: some(&q.queue),
            agent: some(&q.agent),
            caller: (!q.caller.is_empty()).then(|| normalise_caller(&q.caller)),
            site: some(&q.site),
            limit,
            after,
            digest,
        })
    }

    fn matches(&self, r: &CallRecord) -> bool {
        !r.call_id.is_empty()
            && self.site.as_ref().is_none_or(|s| *s == r.site)
            && self.queue.as_ref().is_none_or(|q| r.visited(q))
            && self.agent.as_ref().is_none_or(|a| r.involves_agent(a))
            && self.caller.as_ref().is_none_or(|c| *c == r.caller.as_deref().and_then(normalise_caller))
    }

    /// The page this query asks for, newest first: the open window's calls
    /// and the sealed ones (from `kpi`), merged by (start, site, call id).
    ///
    /// # Errors
    /// UNAVAILABLE when the sealed-call index cannot be read.
    pub(crate) fn page(
        &self,
        engine: &Engine,
        kpi: Option<&KpiStore>,
        short_abandon_s: u32,
    ) -> Result<pb::CallList, Status> {
        let before = self.after.as_ref().map(|(t, site, id)| (*t, site.as_str(), id.as_str()));
        // One more than a page from each side, to know whether another page follows.
        let open: Vec<CallRecord> = engine
            .calls_started(self.from, self.to, before)
            .rev()
            .filter(|r| self.matches(r))
            .take(self.limit + 1)
            .cloned()
            .collect();
        let mut sealed: Vec<CallRecord> = Vec::new();
        if let Some(kpi) = kpi {
            for r in kpi.calls_newest_first(self.from, self.to, before) {
                let r = r.map_err(|e| Status::unavailable(format!("reading sealed calls: {e}")))?;
                if self.matches(&r) {
                    sealed.push(r);
                    if sealed.len() > self.limit {
                        break;
                    }
                }
            }
        }
        let key = |r: &CallRecord| (r.first, r.site.clone(), r.call_id.clone());
        let mut found: Vec<CallRecord> = open.into_iter().chain(sealed).collect();
        found.sort_by_key(|r| std::cmp::Reverse(key(r)));
        found.dedup_by_key(|r| key(r));
        let more = found.len() > self.limit;
        found.truncate(self.limit);
        let next_page_token = match found.last() {
            Some(last) if more => page_token(last, &self.digest),
            _ => String::new(),
        };
        Ok(pb::CallList { calls: found.iter().map(|r| summary_to_pb(r, short_abandon_s)).collect(), next_page_token })
    }
}

/// Hex SHA-256 (first 8 bytes) of the query's filters: what must not
/// change between pages.
fn filters_digest(q: &pb::CallQuery) -> String {
    use prost::Message as _;
    use sha2::Digest as _;
    let filters = pb::CallQuery { limit: 0, page_token: String::new(), ..q.clone() };
    let digest = sha2::Sha256::digest(filters.encode_to_vec());
    hex(&digest[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// `v1.<start ns>.<hex site>.<hex call id>.<filters digest>`.
fn page_token(last: &CallRecord, digest: &str) -> String {
    format!("v1.{}.{}.{}.{digest}", last.first, hex(last.site.as_bytes()), hex(last.call_id.as_bytes()))
}

fn parse_page_token(token: &str, digest: &str) -> Result<(i64, String, String), Status> {
    let bad = || Status::invalid_argument("page_token is not one this server issued");
    let parts: Vec<&str> = token.split('.').collect();
    let [version, start, site, call_id, token_digest] = parts[..] else { return Err(bad()) };
    if version != "v1" {
        return Err(bad());
    }
    if token_digest != digest {
        return Err(Status::invalid_argument("page_token belongs to a query with other filters"));
    }
    let start: i64 = start.parse().map_err(|_| bad())?;
    Ok((start, unhex(site).ok_or_else(bad)?, unhex(call_id).ok_or_else(bad)?))
}

/// One call's timeline: from `engine` while it is in the open window, else
/// from the sealed-call index and the raw events in the store.
///
/// # Errors
/// INVALID_ARGUMENT for an empty call id; NOT_FOUND for an unknown call;
/// FAILED_PRECONDITION when the call id is known at several sites and the
/// reference names none (the message lists them); UNAVAILABLE when the
/// store cannot be read.
pub(crate) fn call_timeline(
    engine: &Engine,
    kpi: Option<&KpiStore>,
    call: &pb::CallRef,
    short_abandon_s: u32,
) -> Result<pb::CallTimeline, Status> {
    let id = &call.call_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("CallRef.call_id is empty"));
    }
    let unavailable = |e: crate::store::StoreError| Status::unavailable(format!("reading the call: {e}"));
    let plain_not_found = || match &call.site {
        Some(site) if !site.is_empty() => Status::not_found(format!("no call {id:?} at site {site:?}")),
        _ => Status::not_found(format!("no call {id:?}")),
    };
    // Say so when retention may be why.
    let not_found = || match kpi.map(KpiStore::expired_before) {
        Some(Ok(Some(t))) => Status::not_found(format!(
            "{}; calls that started before {} were removed by retention ([retention] calls_days)",
            plain_not_found().message(),
            callkpi_core::time::parse_tz("UTC")
                .map_or_else(|_| t.to_string(), |utc| callkpi_core::time::rfc3339(t, &utc))
        )),
        _ => plain_not_found(),
    };
    let site = match call.site.as_deref().filter(|s| !s.is_empty()) {
        Some(site) => site.to_owned(),
        None => {
            let mut sites: Vec<String> = engine.call_sites(id).to_vec();
            if let Some(kpi) = kpi {
                for s in kpi.sealed_sites(id).map_err(unavailable)? {
                    if !sites.contains(&s) {
                        sites.push(s);
                    }
                }
            }
            match &sites[..] {
                [] => return Err(not_found()),
                [one] => one.clone(),
                many => {
                    return Err(Status::failed_precondition(format!(
                        "call {id:?} exists at sites {}: give its site",
                        many.join(", ")
                    )));
                }
            }
        }
    };
    if let Some(record) = engine.call(&site, id) {
        let events = engine.call_events(&site, id).unwrap_or_default();
        return Ok(timeline_to_pb(record, events, short_abandon_s));
    }
    let Some(kpi) = kpi else { return Err(not_found()) };
    let Some((_, entry)) = kpi.sealed_call(&site, id).map_err(unavailable)? else { return Err(not_found()) };
    let events = kpi.events_of(&entry).map_err(unavailable)?;
    if events.len() < entry.events.len() {
        return Err(Status::not_found(format!(
            "the events of call {id:?} at site {site:?} were removed by retention ([retention] raw_events_days); \
             it is still listed by ListCalls and counted in the KPIs"
        )));
    }
    Ok(timeline_to_pb(&entry.record, &events, short_abandon_s))
}
