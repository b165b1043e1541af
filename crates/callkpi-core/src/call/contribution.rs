//! What one rebuilt call adds to the counters.

use super::*;

impl CallRecord {
    fn key(&self, t: UnixNanos, queue: Option<&String>, agent: Option<&String>) -> FineKey {
        FineKey {
            bucket: bucket_of(t),
            site: self.site.clone(),
            queue: queue.cloned(),
            agent: agent.cloned(),
            did: self.did.clone(),
            trunk: None,
        }
    }

    /// The counters this call contributes, apart from case facts.
    pub fn contribution(&self) -> CounterSet {
        let mut set = CounterSet::default();
        for (vi, v) in self.visits.iter().enumerate() {
            let Some(outcome) = v.outcome else { continue };
            let c = set.cell(self.key(v.enter, Some(&v.queue), v.agent.as_ref()));
            c.entered += 1;
            match outcome {
                VisitOutcome::Answered => c.answered_wait.record(v.wait_ms),
                VisitOutcome::Left(LeaveReason::Abandon) => c.abandoned_wait.record(v.wait_ms),
                VisitOutcome::Left(reason) => {
                    c.other_wait.record(v.wait_ms);
                    match reason {
                        LeaveReason::Timeout => {
                            c.timed_out += 1;
                            c.let_go_wait.record(v.wait_ms);
                        }
                        LeaveReason::ExitWithKey => c.exit_with_key += 1,
                        LeaveReason::LeaveEmpty => {
                            c.leave_empty += 1;
                            c.let_go_wait.record(v.wait_ms);
                        }
                        LeaveReason::Full => c.full += 1,
                        LeaveReason::JoinEmpty => c.join_empty += 1,
                        LeaveReason::Transfer => c.transferred_unanswered += 1,
                        LeaveReason::Unspecified | LeaveReason::Answered | LeaveReason::Abandon => {
                            c.left_unspecified += 1
                        }
                    }
                }
                VisitOutcome::UnknownEnd => {
                    c.other_wait.record(v.wait_ms);
                    c.unknown_wait.record(v.wait_ms);
                    c.unknown_end += 1;
                }
            }
            // The visit counts once as handled, where its last segment ended,
            // when at least one of its segments has a known end.
            if outcome == VisitOutcome::Answered {
                let segs: Vec<&Segment> = self.segments.iter().filter(|s| s.visit == Some(vi)).collect();
                if !segs.is_empty() && segs.iter().all(|s| s.end.is_some()) && segs.iter().any(|s| s.known_end()) {
                    let end = segs.iter().filter_map(|s| s.end).max().unwrap_or(v.enter);
                    set.cell(self.key(end, Some(&v.queue), v.agent.as_ref())).handled_visits += 1;
                }
            }
        }
        // Queues this call was answered from without its entry being seen
        // (input starting mid-call): the call counts once as handled there,
        // where its last conversation from that queue ended.
        let mut unseen: Vec<(&String, UnixNanos)> = Vec::new();
        for s in self.segments.iter().filter(|s| s.visit.is_none() && s.known_end()) {
            let (Some(q), Some(end)) = (s.queue.as_ref(), s.end) else { continue };
            if self.visits.iter().any(|v| &v.queue == q) {
                continue;
            }
            match unseen.iter_mut().find(|(u, _)| *u == q) {
                Some((_, e)) => *e = (*e).max(end),
                None => unseen.push((q, end)),
            }
        }
        for (q, end) in unseen {
            let agent = self.segments.iter().rev().find(|s| s.queue.as_ref() == Some(q)).map(|s| &s.agent);
            set.cell(self.key(end, Some(q), agent)).handled_visits += 1;
        }
        for s in &self.segments {
            let Some(end) = s.end else { continue };
            let (talk, hold, wrap) = (s.talk_ms(), s.hold_ms(), s.wrap_ms());
            let c = set.cell(self.key(end, s.queue.as_ref(), Some(&s.agent)));
            if s.known_end() {
                c.handled_segments += 1;
                c.talk_ms += i64::try_from(talk).unwrap_or(i64::MAX);
                c.hold_ms += i64::try_from(hold).unwrap_or(i64::MAX);
                c.wrap_ms += i64::try_from(wrap).unwrap_or(i64::MAX);
                c.holds += i64::try_from(s.holds.len()).unwrap_or(0);
                if matches!(s.wrap, Some((_, Some(_)))) {
                    c.wrap_segments += 1;
                }
            }
            match s.end_kind {
                Some(SegmentEnd::Transfer(k)) => {
                    c.transfers += 1;
                    if k == TransferKind::Blind {
                        c.transfers_blind += 1;
                    }
                }
                Some(SegmentEnd::UnknownEnd) => c.segments_unknown_end += 1,
                _ => {}
            }
            // Busy time is spread over the quarter hours it covers, so that
            // occupancy compares like with like.
            let conv_end = s.start + ns(talk + hold);
            self.spread_busy(&mut set, s, s.start, conv_end);
            if let Some((ws, Some(we))) = s.wrap {
                self.spread_busy(&mut set, s, ws, we);
            }
        }
        for (t, kind, _) in &self.loose_transfers {
            let (q, a) = self.home();
            let c = set.cell(self.key(*t, q.as_ref(), a.as_ref()));
            c.transfers += 1;
            if *kind == TransferKind::Blind {
                c.transfers_blind += 1;
            }
        }
        for m in &self.missed {
            let c = set.cell(self.key(m.at, m.queue.as_ref(), Some(&m.agent)));
            match m.reason {
                MissReason::NoAnswer | MissReason::Rejected => {
                    c.missed_offers += 1;
                    c.missed_ring_ms += i64::try_from(m.ring_ms).unwrap_or(i64::MAX);
                }
                MissReason::Canceled => c.ring_canceled += 1,
            }
        }
        for d in &self.dials {
            let mut key = self.key(d.at, None, d.agent.as_ref());
            key.did = None;
            key.trunk = d.trunk.clone();
            let c = set.cell(key);
            c.out_attempts += 1;
            match d.outcome {
                DialOutcome::Answered => c.out_connected += 1,
                DialOutcome::Busy => c.out_busy += 1,
                DialOutcome::NoAnswer => c.out_no_answer += 1,
                DialOutcome::Failed => c.out_failed += 1,
                DialOutcome::Congestion => c.out_congestion += 1,
                DialOutcome::Unavailable => c.out_unavailable += 1,
                DialOutcome::AgentAbandoned => c.out_agent_abandoned += 1,
            }
        }
        let (home_q, home_a) = self.home();
        for s in &self.surveys {
            let q = s.queue.clone().or_else(|| home_q.clone());
            let a =
                s.agent.clone().or_else(|| self.segments.last().map(|x| x.agent.clone())).or_else(|| home_a.clone());
            let c = set.cell(self.key(s.at, q.as_ref(), a.as_ref()));
            match s.metric {
                SurveyMetric::Csat => {
                    c.csat_n += 1;
                    // 4 and 5 on 1-5 normalise to 0.75 and 1.0.
                    if s.normalised >= 0.75 - 1e-9 {
                        c.csat_satisfied += 1;
                    }
                }
                SurveyMetric::Nps => {
                    c.nps_n += 1;
                    let on_ten = (s.normalised * 10.0).round();
                    if on_ten >= 9.0 {
                        c.nps_promoters += 1;
                    } else if on_ten <= 6.0 {
                        c.nps_detractors += 1;
                    }
                }
                SurveyMetric::Ces => {
                    c.ces_n += 1;
                    // Mapped onto 1-7, kept in thousandths to stay an integer sum.
                    c.ces_sum_milli += ((1.0 + 6.0 * s.normalised) * 1000.0).round() as i64;
                }
            }
        }
        set
    }

    fn spread_busy(&self, set: &mut CounterSet, s: &Segment, from: UnixNanos, to: UnixNanos) {
        let mut t = from;
        while t < to {
            let b = bucket_of(t);
            let e = (b + BUCKET_NS).min(to);
            set.cell(self.key(b, s.queue.as_ref(), Some(&s.agent))).busy_ms += (e - t) / NANOS_PER_MS;
            t = e;
        }
    }
}
