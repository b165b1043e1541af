//! Replay: a call rebuilt from its events, in causal order.

use super::*;

/// Where an event stands in the life of a call, for events of the same
/// instant: offered, queued, rung, answered or left, held, ended, wrapped up,
/// surveyed.
fn causal_rank(kind: &EventKind) -> u8 {
    match kind {
        EventKind::CallOffered { .. } => 0,
        EventKind::QueueJoin { .. } => 1,
        EventKind::Ringing { .. } => 2,
        EventKind::Answered { .. }
        | EventKind::OfferMissed { .. }
        | EventKind::QueueLeave { .. }
        | EventKind::DialResult { .. } => 3,
        EventKind::Hold { .. } | EventKind::Resume { .. } => 4,
        EventKind::Transfer { .. } | EventKind::Hangup { .. } => 5,
        EventKind::WrapUpStart { .. } => 6,
        EventKind::WrapUpEnd { .. } => 7,
        EventKind::SurveyAnswer { .. }
        | EventKind::Disposition { .. }
        | EventKind::AgentState { .. }
        | EventKind::QueueStart => 8,
    }
}

/// Whether `ev` repeats an event of the same instant: same leg, same kind
/// and data. A line read twice (an overlapping copy of a rotated queue_log,
/// a collector that re-read its file) has a new event id, so the engine's
/// de-duplication by id cannot see it; a PBX never reports the same step of
/// a call twice in one instant. Surveys and dispositions are exempt: two
/// questions may well get the same score in the same second.
fn is_repeat(same_instant: &[Event], ev: &Event) -> bool {
    !matches!(ev.kind, EventKind::SurveyAnswer { .. } | EventKind::Disposition { .. })
        && same_instant.iter().any(|e| e.leg_id == ev.leg_id && e.kind == ev.kind)
}

impl CallRecord {
    /// Rebuilds a call. `events` must all share site and call id; they are
    /// sorted here. When `closed` is true, whatever is still open is closed as
    /// unknown end at the last event's time.
    pub fn build(events: &mut [Event], closed: bool) -> CallRecord {
        // Events of the same instant are replayed in the order a call goes
        // through ([`causal_rank`]), then in arrival order. Sources that stamp
        // whole seconds (queue_log) put an entry and its exit, or an answer and
        // its hang-up, in the same second, and a realtime-table export sorted
        // by time gives them in any order within it.
        events.sort_by(|a, b| {
            a.kpi_time()
                .cmp(&b.kpi_time())
                .then_with(|| causal_rank(&a.kind).cmp(&causal_rank(&b.kind)))
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut r = CallRecord::default();
        let Some(first) = events.first() else { return r };
        r.site = first.site.clone();
        r.call_id = first.call_id.clone();
        r.first = first.kpi_time();
        r.last = events.last().map_or(r.first, Event::kpi_time);
        let mut ringing: Vec<(String, UnixNanos)> = Vec::new();
        let mut same_instant = 0;
        for (i, ev) in events.iter().enumerate() {
            if i > 0 && events[i - 1].kpi_time() != ev.kpi_time() {
                same_instant = i;
            }
            if is_repeat(&events[same_instant..i], ev) {
                continue;
            }
            r.apply(ev, &mut ringing);
        }
        r.close(closed);
        r
    }

    fn open_visit(&mut self, queue: &str) -> Option<usize> {
        self.visits.iter().rposition(|v| v.queue == queue && v.outcome.is_none())
    }

    fn open_segment(&mut self, agent: Option<&str>) -> Option<usize> {
        self.segments.iter().rposition(|s| s.end.is_none() && agent.is_none_or(|a| s.agent == a))
    }

    fn apply(&mut self, ev: &Event, ringing: &mut Vec<(String, UnixNanos)>) {
        let t = ev.kpi_time();
        match &ev.kind {
            EventKind::CallOffered { caller, called, direction, .. } => {
                self.direction.get_or_insert(*direction);
                if self.called.is_none() && !called.is_empty() {
                    self.called = Some(called.clone());
                }
                if *direction == Direction::Inbound {
                    if self.caller.is_none() && !caller.is_empty() {
                        self.caller = Some(caller.clone());
                    }
                    if self.did.is_none() && !called.is_empty() {
                        self.did = Some(called.clone());
                    }
                }
            }
            EventKind::QueueJoin { queue, caller, .. } => {
                if self.caller.is_none() {
                    self.caller = caller.clone().filter(|c| !c.is_empty());
                }
                // A second join to the same queue without an exit means the
                // first exit was lost: close it so the new visit stands alone.
                if let Some(i) = self.open_visit(queue) {
                    self.visits[i].outcome = Some(VisitOutcome::UnknownEnd);
                    self.visits[i].exit = Some(t);
                    self.visits[i].wait_ms = ms(t - self.visits[i].enter);
                }
                self.visits.push(Visit::entered(queue, t, caller.clone()));
            }
            EventKind::QueueLeave { queue, reason, reported_wait_ms } => match reason {
                LeaveReason::Unspecified => {
                    if let Some(i) = self.open_visit(queue) {
                        self.visits[i].left_unspecified_at.get_or_insert(t);
                    }
                }
                LeaveReason::Answered => {}
                reason => {
                    let i = match self.open_visit(queue) {
                        Some(i) => i,
                        None if matches!(reason, LeaveReason::Full | LeaveReason::JoinEmpty) => {
                            // Refused at the door: Asterisk logs no ENTERQUEUE.
                            self.visits.push(Visit::entered(queue, t, None));
                            self.visits.len() - 1
                        }
                        None => return,
                    };
                    let v = &mut self.visits[i];
                    v.outcome = Some(VisitOutcome::Left(*reason));
                    v.exit = Some(t);
                    v.wait_ms = reported_wait_ms.unwrap_or_else(|| ms(t - v.enter));
                }
            },
            EventKind::Ringing { agent, .. } => ringing.push((agent.clone(), t)),
            EventKind::OfferMissed { queue, agent, reason, reported_ring_ms } => {
                let started = ringing.iter().rposition(|(a, _)| a == agent).map(|i| ringing.remove(i).1);
                let ring_ms = reported_ring_ms.unwrap_or_else(|| started.map_or(0, |s| ms(t - s)));
                self.missed.push(MissedOffer {
                    at: t,
                    queue: queue.clone(),
                    agent: agent.clone(),
                    reason: *reason,
                    ring_ms,
                });
            }
            EventKind::Answered { queue, agent, reported_wait_ms, reported_ring_ms } => {
                let rang_since = ringing.iter().rev().find(|(a, _)| a == agent).map(|(_, s)| *s);
                let ring_ms = reported_ring_ms.unwrap_or_else(|| rang_since.map_or(0, |s| ms(t - s)));
                ringing.retain(|(a, _)| a != agent);
                let visit = queue.as_deref().and_then(|q| self.open_visit(q));
                if let Some(i) = visit {
                    let v = &mut self.visits[i];
                    v.outcome = Some(VisitOutcome::Answered);
                    v.exit = Some(t);
                    v.agent = Some(agent.clone());
                    v.wait_ms = reported_wait_ms.unwrap_or_else(|| ms(t - v.enter));
                }
                // A repeated answer by the same agent (two feeds, or a
                // re-INVITE seen as answer) does not open a second segment.
                if self.open_segment(Some(agent)).is_none() {
                    self.segments.push(Segment::answered(agent, queue.as_ref(), visit, t, ring_ms));
                }
            }
            EventKind::Hold { agent } => {
                if let Some(i) = self.open_segment(agent.as_deref()).or_else(|| self.open_segment(None)) {
                    self.segments[i].hold_open.get_or_insert(t);
                }
            }
            EventKind::Resume { agent } => {
                let i = self
                    .segments
                    .iter()
                    .rposition(|s| s.hold_open.is_some() && agent.as_deref().is_none_or(|a| s.agent == a))
                    .or_else(|| self.segments.iter().rposition(|s| s.hold_open.is_some()));
                if let Some(i) = i {
                    let s = &mut self.segments[i];
                    if let Some(h) = s.hold_open.take() {
                        s.holds.push((h, t));
                    }
                }
            }
            EventKind::Transfer { kind, queue, agent, reported_talk_ms, target } => {
                let i = self
                    .open_segment(agent.as_deref())
                    .or_else(|| self.unseen_answer(queue, agent, *reported_talk_ms, t));
                match i {
                    Some(i) => self.end_segment(i, t, SegmentEnd::Transfer(*kind), *reported_talk_ms),
                    None => self.loose_transfers.push((t, *kind, Some(target.clone()))),
                }
            }
            EventKind::Hangup { queue, agent, by, reported_talk_ms, .. } => {
                // A hang-up that names no agent ends only a leg, unless it is
                // the only conversation in progress and the feed cannot name
                // agents (SIP, line monitor): then the call is over.
                let seg = match agent {
                    Some(a) => {
                        self.open_segment(Some(a)).or_else(|| self.unseen_answer(queue, agent, *reported_talk_ms, t))
                    }
                    None if reported_talk_ms.is_some() => self.open_segment(None),
                    None => None,
                };
                if let Some(i) = seg {
                    self.end_segment(i, t, SegmentEnd::Hangup(*by), *reported_talk_ms);
                }
            }
            EventKind::WrapUpStart { agent, .. } => {
                if let Some(s) = self.segments.iter_mut().rev().find(|s| &s.agent == agent && s.end.is_some()) {
                    s.wrap = Some((t, None));
                }
            }
            EventKind::WrapUpEnd { agent, .. } => {
                if let Some(s) = self.segments.iter_mut().rev().find(|s| &s.agent == agent)
                    && let Some((st, None)) = s.wrap
                {
                    s.wrap = Some((st, Some(t)));
                }
            }
            EventKind::DialResult { agent, trunk, outcome, dialled, .. } => {
                if self.called.is_none() && !dialled.is_empty() {
                    self.called = Some(dialled.clone());
                }
                self.dials.push(Dial { at: t, agent: agent.clone(), trunk: trunk.clone(), outcome: *outcome })
            }
            EventKind::SurveyAnswer { metric, score, scale_min, scale_max, queue, agent } => {
                let span = scale_max - scale_min;
                let normalised = if span > 0.0 { ((score - scale_min) / span).clamp(0.0, 1.0) } else { 0.0 };
                if normalised.is_finite() {
                    self.surveys.push(Survey {
                        at: t,
                        metric: *metric,
                        normalised,
                        queue: queue.clone(),
                        agent: agent.clone(),
                    });
                }
            }
            EventKind::Disposition { resolved, .. } => self.disposition = Some(*resolved),
            EventKind::AgentState { .. } | EventKind::QueueStart => {}
        }
    }

    /// The end of a conversation whose answer is not in the input (queue_log
    /// or AMI read from the middle of a call: `COMPLETECALLER`, `TRANSFER`,
    /// `AgentComplete` without their `CONNECT`). The PBX reports the talk
    /// time with the end, so the conversation is rebuilt as having started
    /// that long before; an agent who already has a segment in this call is
    /// not given another. Returns the new segment's index.
    fn unseen_answer(
        &mut self,
        queue: &Option<String>,
        agent: &Option<String>,
        reported_talk_ms: Option<u64>,
        t: UnixNanos,
    ) -> Option<usize> {
        let (agent, talk) = (agent.as_ref()?, reported_talk_ms?);
        if self.segments.iter().any(|s| &s.agent == agent) {
            return None;
        }
        self.segments.push(Segment::answered(agent, queue.as_ref(), None, t.saturating_sub(ns(talk)), 0));
        Some(self.segments.len() - 1)
    }

    fn end_segment(&mut self, i: usize, t: UnixNanos, kind: SegmentEnd, reported_talk_ms: Option<u64>) {
        let s = &mut self.segments[i];
        if let Some(h) = s.hold_open.take() {
            s.holds.push((h, t));
        }
        s.end = Some(t);
        s.end_kind = Some(kind);
        s.reported_talk_ms = reported_talk_ms;
    }

    fn close(&mut self, closed: bool) {
        let last = self.last;
        let mut open = false;
        for v in &mut self.visits {
            if v.outcome.is_none() {
                if let Some(at) = v.left_unspecified_at {
                    // Left, and no answer arrived at the same call: reason unknown.
                    if closed || at < last {
                        v.outcome = Some(VisitOutcome::Left(LeaveReason::Unspecified));
                        v.exit = Some(at);
                        v.wait_ms = ms(at - v.enter);
                        continue;
                    }
                }
                if closed {
                    v.outcome = Some(VisitOutcome::UnknownEnd);
                    v.exit = Some(last);
                    v.wait_ms = ms(last - v.enter);
                } else {
                    open = true;
                }
            }
        }
        for s in &mut self.segments {
            if s.end.is_none() {
                if closed {
                    if let Some(h) = s.hold_open.take() {
                        s.holds.push((h, last));
                    }
                    s.end = Some(last);
                    s.end_kind = Some(SegmentEnd::UnknownEnd);
                } else {
                    open = true;
                }
            }
            if let Some((_, None)) = s.wrap {
                open |= !closed;
            }
        }
        self.open = open;
    }
}
