//! Conversions between the core event model ([`callkpi_core::event`]) and
//! the wire event ([`pb::Event`]).
//!
//! Core to wire is total ([`From`]); wire to core is checked ([`TryFrom`]),
//! because a peer can send anything: a missing `kind`, an enum left at its
//! `*_UNSPECIFIED` zero, an enum value from a newer schema, or a Q.850 cause
//! above `u16::MAX` all give a [`ConvertError`] naming the field, never a
//! panic and never a guess.
//!
//! Core -> wire -> core is the identity (property-tested below). Wire -> core
//! -> wire is the identity for every valid event, except that
//! `AgentStateChanged.pause_reason` is dropped unless the state is paused.
//!
//! Every match below is exhaustive on purpose: a variant or field added to
//! the core model, or a value added to a proto enum, fails to compile here
//! until the contract says how it travels.

use callkpi_core::call::CallOutcome;
use callkpi_core::event::{
    AgentState, DialOutcome, Direction, Event, EventId, EventKind, EventTime, HangupBy, LeaveReason, MissReason,
    SourceKind, SurveyMetric, TransferKind,
};

use crate::pb;
use crate::pb::event::Kind;

/// Why a wire event cannot become a core event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A required field (a message or a oneof) is absent.
    #[error("{field} is missing")]
    Missing {
        /// Proto path of the field, e.g. `Event.kind`.
        field: &'static str,
    },
    /// A required enum field holds its `*_UNSPECIFIED` zero value.
    #[error("{field} is unspecified")]
    Unspecified {
        /// Proto path of the field, e.g. `Event.source`.
        field: &'static str,
    },
    /// An enum field holds a value this schema does not know (a newer peer).
    #[error("{field} has unknown enum value {value}")]
    UnknownEnumValue {
        /// Proto path of the field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A number does not fit the core type.
    #[error("{field} value {value} is out of range")]
    OutOfRange {
        /// Proto path of the field, e.g. `Hangup.cause`.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// A string field holds a value the core rejects (e.g. an unknown time zone).
    #[error("{field} is invalid")]
    Invalid {
        /// Proto path of the field.
        field: &'static str,
    },
}

// === Enums ===

/// Decoding of a wire enum (an `i32`) into its core counterpart.
pub(crate) trait FromWire: Sized {
    /// The core value of `value`, or why there is none; `field` names the
    /// field in errors.
    fn from_wire(value: i32, field: &'static str) -> Result<Self, ConvertError>;
}

/// Maps a core enum onto a proto enum both ways: `From<core> for pb` and
/// [`FromWire`] for core, which rejects `Unspecified` and unknown values.
macro_rules! wire_enum {
    ($core:ident <=> $pb:ident { $($c:ident <=> $p:ident),+ $(,)? }) => {
        impl From<$core> for pb::$pb {
            fn from(value: $core) -> Self {
                match value {
                    $($core::$c => pb::$pb::$p,)+
                }
            }
        }

        impl FromWire for $core {
            fn from_wire(value: i32, field: &'static str) -> Result<Self, ConvertError> {
                match pb::$pb::try_from(value) {
                    $(Ok(pb::$pb::$p) => Ok($core::$c),)+
                    Ok(pb::$pb::Unspecified) => Err(ConvertError::Unspecified { field }),
                    Err(_) => Err(ConvertError::UnknownEnumValue { field, value }),
                }
            }
        }
    };
}

wire_enum!(SourceKind <=> SourceKind {
    AsteriskQueueLog <=> AsteriskQueueLog,
    AsteriskAmi <=> AsteriskAmi,
    FreeswitchEsl <=> FreeswitchEsl,
    SipHep <=> SipHep,
    LineMonitor <=> LineMonitor,
    Synthetic <=> Synthetic,
});

wire_enum!(Direction <=> Direction {
    Inbound <=> Inbound,
    Outbound <=> Outbound,
    Internal <=> Internal,
});

wire_enum!(LeaveReason <=> LeaveReason {
    Answered <=> Answered,
    Abandon <=> Abandon,
    Timeout <=> Timeout,
    ExitWithKey <=> ExitWithKey,
    LeaveEmpty <=> LeaveEmpty,
    Full <=> Full,
    JoinEmpty <=> JoinEmpty,
    Transfer <=> Transfer,
    // Core's "the source did not say why" is a real value on the wire;
    // LEAVE_REASON_UNSPECIFIED (0) stays "not set".
    Unspecified <=> Unknown,
});

wire_enum!(MissReason <=> MissReason {
    NoAnswer <=> NoAnswer,
    Rejected <=> Rejected,
    Canceled <=> Canceled,
});

wire_enum!(HangupBy <=> HangupBy {
    Caller <=> Caller,
    Agent <=> Agent,
    Unknown <=> Unknown,
});

wire_enum!(TransferKind <=> TransferKind {
    Blind <=> Blind,
    Attended <=> Attended,
});

wire_enum!(DialOutcome <=> DialOutcome {
    Answered <=> Answered,
    Busy <=> Busy,
    NoAnswer <=> NoAnswer,
    Failed <=> Failed,
    Congestion <=> Congestion,
    Unavailable <=> Unavailable,
    AgentAbandoned <=> AgentAbandoned,
});

wire_enum!(SurveyMetric <=> SurveyMetric {
    Csat <=> Csat,
    Nps <=> Nps,
    Ces <=> Ces,
});

// Not part of `Event`: the outcome call lists and timelines show
// (reports.proto), converted here to share the macro; see `crate::calls`.
wire_enum!(CallOutcome <=> CallOutcome {
    InProgress <=> InProgress,
    Answered <=> Answered,
    Abandoned <=> Abandoned,
    ShortAbandoned <=> ShortAbandoned,
    Timeout <=> Timeout,
    ExitWithKey <=> ExitWithKey,
    LeaveEmpty <=> LeaveEmpty,
    Full <=> Full,
    JoinEmpty <=> JoinEmpty,
    Transferred <=> Transferred,
    UnknownEnd <=> UnknownEnd,
    LeftUnspecified <=> LeftUnspecified,
    Unanswered <=> Unanswered,
    OutboundConnected <=> OutboundConnected,
    OutboundUnreached <=> OutboundUnreached,
    OutboundAgentAbandoned <=> OutboundAgentAbandoned,
});

/// A wire enum field as its core value.
pub(crate) fn enum_field<T: FromWire>(value: i32, field: &'static str) -> Result<T, ConvertError> {
    T::from_wire(value, field)
}

/// An optional Q.850 cause as the core's `u16`.
fn cause(value: Option<u32>, field: &'static str) -> Result<Option<u16>, ConvertError> {
    value.map(|c| u16::try_from(c).map_err(|_| ConvertError::OutOfRange { field, value: c.into() })).transpose()
}

// === Core to wire ===

impl From<Event> for pb::Event {
    fn from(event: Event) -> Self {
        let Event {
            id: EventId { agent_id, seq },
            site,
            source,
            call_id,
            leg_id,
            time: EventTime { captured_at, monotonic, source_time, clock_synced },
            kind,
        } = event;
        Self {
            agent_id,
            seq,
            site,
            source: pb::SourceKind::from(source).into(),
            call_id,
            leg_id,
            captured_at_ns: captured_at,
            monotonic_ns: monotonic,
            source_time_ns: source_time,
            clock_synced,
            kind: Some(kind.into()),
        }
    }
}

impl From<EventKind> for Kind {
    fn from(kind: EventKind) -> Self {
        use pb::event as w;
        match kind {
            EventKind::CallOffered { direction, caller, called, trunk } => Self::CallOffered(w::CallOffered {
                direction: pb::Direction::from(direction).into(),
                caller,
                called,
                trunk,
            }),
            EventKind::QueueJoin { queue, caller, position } => {
                Self::QueueJoin(w::QueueJoin { queue, caller, position })
            }
            EventKind::QueueLeave { queue, reason, reported_wait_ms } => Self::QueueLeave(w::QueueLeave {
                queue,
                reason: pb::LeaveReason::from(reason).into(),
                reported_wait_ms,
            }),
            EventKind::Ringing { queue, agent } => Self::Ringing(w::Ringing { queue, agent }),
            EventKind::OfferMissed { queue, agent, reason, reported_ring_ms } => Self::OfferMissed(w::OfferMissed {
                queue,
                agent,
                reason: pb::MissReason::from(reason).into(),
                reported_ring_ms,
            }),
            EventKind::Answered { queue, agent, reported_wait_ms, reported_ring_ms } => {
                Self::Answered(w::Answered { queue, agent, reported_wait_ms, reported_ring_ms })
            }
            EventKind::Hold { agent } => Self::Hold(w::Hold { agent }),
            EventKind::Resume { agent } => Self::Resume(w::Resume { agent }),
            EventKind::Transfer { kind, queue, agent, target, reported_talk_ms } => Self::Transfer(w::Transfer {
                kind: pb::TransferKind::from(kind).into(),
                queue,
                agent,
                target,
                reported_talk_ms,
            }),
            EventKind::Hangup { queue, agent, by, cause, reported_talk_ms } => Self::Hangup(w::Hangup {
                queue,
                agent,
                by: pb::HangupBy::from(by).into(),
                cause: cause.map(u32::from),
                reported_talk_ms,
            }),
            EventKind::WrapUpStart { agent, queue } => Self::WrapUpStart(w::WrapUpStart { agent, queue }),
            EventKind::WrapUpEnd { agent, queue } => Self::WrapUpEnd(w::WrapUpEnd { agent, queue }),
            EventKind::AgentState { agent, queue, state } => {
                let (state, pause_reason) = match state {
                    AgentState::Login => (pb::AgentState::Login, String::new()),
                    AgentState::Logout => (pb::AgentState::Logout, String::new()),
                    AgentState::Available => (pb::AgentState::Available, String::new()),
                    AgentState::Paused { reason } => (pb::AgentState::Paused, reason),
                };
                Self::AgentState(w::AgentStateChanged { agent, queue, state: state.into(), pause_reason })
            }
            EventKind::QueueStart => Self::QueueStart(w::QueueStart {}),
            EventKind::DialResult { agent, dialled, trunk, outcome, cause } => Self::DialResult(w::DialResult {
                agent,
                dialled,
                trunk,
                outcome: pb::DialOutcome::from(outcome).into(),
                cause: cause.map(u32::from),
            }),
            EventKind::SurveyAnswer { metric, score, scale_min, scale_max, queue, agent } => {
                Self::SurveyAnswer(w::SurveyAnswer {
                    metric: pb::SurveyMetric::from(metric).into(),
                    score,
                    scale_min,
                    scale_max,
                    queue,
                    agent,
                })
            }
            EventKind::Disposition { resolved, code, agent } => {
                Self::Disposition(w::Disposition { resolved, code, agent })
            }
        }
    }
}

// === Wire to core ===

impl TryFrom<pb::Event> for Event {
    type Error = ConvertError;

    fn try_from(event: pb::Event) -> Result<Self, Self::Error> {
        let pb::Event {
            agent_id,
            seq,
            site,
            source,
            call_id,
            leg_id,
            captured_at_ns,
            monotonic_ns,
            source_time_ns,
            clock_synced,
            kind,
        } = event;
        Ok(Self {
            id: EventId { agent_id, seq },
            site,
            source: enum_field(source, "Event.source")?,
            call_id,
            leg_id,
            time: EventTime {
                captured_at: captured_at_ns,
                monotonic: monotonic_ns,
                source_time: source_time_ns,
                clock_synced,
            },
            kind: kind.ok_or(ConvertError::Missing { field: "Event.kind" })?.try_into()?,
        })
    }
}

impl TryFrom<Kind> for EventKind {
    type Error = ConvertError;

    fn try_from(kind: Kind) -> Result<Self, Self::Error> {
        Ok(match kind {
            Kind::CallOffered(k) => Self::CallOffered {
                direction: enum_field(k.direction, "CallOffered.direction")?,
                caller: k.caller,
                called: k.called,
                trunk: k.trunk,
            },
            Kind::QueueJoin(k) => Self::QueueJoin { queue: k.queue, caller: k.caller, position: k.position },
            Kind::QueueLeave(k) => Self::QueueLeave {
                queue: k.queue,
                reason: enum_field(k.reason, "QueueLeave.reason")?,
                reported_wait_ms: k.reported_wait_ms,
            },
            Kind::Ringing(k) => Self::Ringing { queue: k.queue, agent: k.agent },
            Kind::OfferMissed(k) => Self::OfferMissed {
                queue: k.queue,
                agent: k.agent,
                reason: enum_field(k.reason, "OfferMissed.reason")?,
                reported_ring_ms: k.reported_ring_ms,
            },
            Kind::Answered(k) => Self::Answered {
                queue: k.queue,
                agent: k.agent,
                reported_wait_ms: k.reported_wait_ms,
                reported_ring_ms: k.reported_ring_ms,
            },
            Kind::Hold(k) => Self::Hold { agent: k.agent },
            Kind::Resume(k) => Self::Resume { agent: k.agent },
            Kind::Transfer(k) => Self::Transfer {
                kind: enum_field(k.kind, "Transfer.kind")?,
                queue: k.queue,
                agent: k.agent,
                target: k.target,
                reported_talk_ms: k.reported_talk_ms,
            },
            Kind::Hangup(k) => Self::Hangup {
                queue: k.queue,
                agent: k.agent,
                by: enum_field(k.by, "Hangup.by")?,
                cause: cause(k.cause, "Hangup.cause")?,
                reported_talk_ms: k.reported_talk_ms,
            },
            Kind::WrapUpStart(k) => Self::WrapUpStart { agent: k.agent, queue: k.queue },
            Kind::WrapUpEnd(k) => Self::WrapUpEnd { agent: k.agent, queue: k.queue },
            Kind::AgentState(k) => {
                let field = "AgentStateChanged.state";
                let state = match pb::AgentState::try_from(k.state) {
                    Ok(pb::AgentState::Login) => AgentState::Login,
                    Ok(pb::AgentState::Logout) => AgentState::Logout,
                    Ok(pb::AgentState::Available) => AgentState::Available,
                    Ok(pb::AgentState::Paused) => AgentState::Paused { reason: k.pause_reason },
                    Ok(pb::AgentState::Unspecified) => {
                        return Err(ConvertError::Unspecified { field });
                    }
                    Err(_) => {
                        return Err(ConvertError::UnknownEnumValue { field, value: k.state });
                    }
                };
                Self::AgentState { agent: k.agent, queue: k.queue, state }
            }
            Kind::QueueStart(pb::event::QueueStart {}) => Self::QueueStart,
            Kind::DialResult(k) => Self::DialResult {
                agent: k.agent,
                dialled: k.dialled,
                trunk: k.trunk,
                outcome: enum_field(k.outcome, "DialResult.outcome")?,
                cause: cause(k.cause, "DialResult.cause")?,
            },
            Kind::SurveyAnswer(k) => Self::SurveyAnswer {
                metric: enum_field(k.metric, "SurveyAnswer.metric")?,
                score: k.score,
                scale_min: k.scale_min,
                scale_max: k.scale_max,
                queue: k.queue,
                agent: k.agent,
            },
            Kind::Disposition(k) => Self::Disposition { resolved: k.resolved, code: k.code, agent: k.agent },
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    // === Strategies ===

    fn text() -> impl Strategy<Value = String> {
        // Empty strings matter: "" and absent must stay distinct.
        "\\PC{0,12}"
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn source() -> impl Strategy<Value = SourceKind> {
        prop_oneof![
            Just(SourceKind::AsteriskQueueLog),
            Just(SourceKind::AsteriskAmi),
            Just(SourceKind::FreeswitchEsl),
            Just(SourceKind::SipHep),
            Just(SourceKind::LineMonitor),
            Just(SourceKind::Synthetic),
        ]
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Inbound), Just(Direction::Outbound), Just(Direction::Internal)]
    }

    fn leave_reason() -> impl Strategy<Value = LeaveReason> {
        prop_oneof![
            Just(LeaveReason::Answered),
            Just(LeaveReason::Abandon),
            Just(LeaveReason::Timeout),
            Just(LeaveReason::ExitWithKey),
            Just(LeaveReason::LeaveEmpty),
            Just(LeaveReason::Full),
            Just(LeaveReason::JoinEmpty),
            Just(LeaveReason::Transfer),
            Just(LeaveReason::Unspecified),
        ]
    }

    fn miss_reason() -> impl Strategy<Value = MissReason> {
        prop_oneof![Just(MissReason::NoAnswer), Just(MissReason::Rejected), Just(MissReason::Canceled)]
    }

    fn hangup_by() -> impl Strategy<Value = HangupBy> {
        prop_oneof![Just(HangupBy::Caller), Just(HangupBy::Agent), Just(HangupBy::Unknown)]
    }

    fn transfer_kind() -> impl Strategy<Value = TransferKind> {
        prop_oneof![Just(TransferKind::Blind), Just(TransferKind::Attended)]
    }

    fn agent_state() -> impl Strategy<Value = AgentState> {
        prop_oneof![
            Just(AgentState::Login),
            Just(AgentState::Logout),
            Just(AgentState::Available),
            text().prop_map(|reason| AgentState::Paused { reason }),
        ]
    }

    fn dial_outcome() -> impl Strategy<Value = DialOutcome> {
        prop_oneof![
            Just(DialOutcome::Answered),
            Just(DialOutcome::Busy),
            Just(DialOutcome::NoAnswer),
            Just(DialOutcome::Failed),
            Just(DialOutcome::Congestion),
            Just(DialOutcome::Unavailable),
            Just(DialOutcome::AgentAbandoned),
        ]
    }

    fn survey_metric() -> impl Strategy<Value = SurveyMetric> {
        prop_oneof![Just(SurveyMetric::Csat), Just(SurveyMetric::Nps), Just(SurveyMetric::Ces)]
    }

    /// Any f64 that equals itself (NaN would defeat `PartialEq`, not the
    /// conversion); infinities, zeros of both signs and subnormals included.
    fn score() -> impl Strategy<Value = f64> {
        any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan())
    }

    fn kind() -> impl Strategy<Value = EventKind> {
        let ms = || proptest::option::of(any::<u64>());
        prop_oneof![
            (direction(), text(), text(), opt_text()).prop_map(|(direction, caller, called, trunk)| {
                EventKind::CallOffered { direction, caller, called, trunk }
            }),
            (text(), opt_text(), proptest::option::of(any::<u32>()))
                .prop_map(|(queue, caller, position)| EventKind::QueueJoin { queue, caller, position }),
            (text(), leave_reason(), ms()).prop_map(|(queue, reason, reported_wait_ms)| {
                EventKind::QueueLeave { queue, reason, reported_wait_ms }
            }),
            (opt_text(), text()).prop_map(|(queue, agent)| EventKind::Ringing { queue, agent }),
            (opt_text(), text(), miss_reason(), ms()).prop_map(|(queue, agent, reason, reported_ring_ms)| {
                EventKind::OfferMissed { queue, agent, reason, reported_ring_ms }
            }),
            (opt_text(), text(), ms(), ms()).prop_map(|(queue, agent, reported_wait_ms, reported_ring_ms)| {
                EventKind::Answered { queue, agent, reported_wait_ms, reported_ring_ms }
            }),
            opt_text().prop_map(|agent| EventKind::Hold { agent }),
            opt_text().prop_map(|agent| EventKind::Resume { agent }),
            (transfer_kind(), opt_text(), opt_text(), text(), ms()).prop_map(
                |(kind, queue, agent, target, reported_talk_ms)| EventKind::Transfer {
                    kind,
                    queue,
                    agent,
                    target,
                    reported_talk_ms
                }
            ),
            (opt_text(), opt_text(), hangup_by(), proptest::option::of(any::<u16>()), ms()).prop_map(
                |(queue, agent, by, cause, reported_talk_ms)| EventKind::Hangup {
                    queue,
                    agent,
                    by,
                    cause,
                    reported_talk_ms
                }
            ),
            (text(), opt_text()).prop_map(|(agent, queue)| EventKind::WrapUpStart { agent, queue }),
            (text(), opt_text()).prop_map(|(agent, queue)| EventKind::WrapUpEnd { agent, queue }),
            (text(), opt_text(), agent_state()).prop_map(|(agent, queue, state)| EventKind::AgentState {
                agent,
                queue,
                state
            }),
            Just(EventKind::QueueStart),
            (opt_text(), text(), opt_text(), dial_outcome(), proptest::option::of(any::<u16>())).prop_map(
                |(agent, dialled, trunk, outcome, cause)| EventKind::DialResult {
                    agent,
                    dialled,
                    trunk,
                    outcome,
                    cause
                }
            ),
            (survey_metric(), score(), score(), score(), opt_text(), opt_text()).prop_map(
                |(metric, score, scale_min, scale_max, queue, agent)| EventKind::SurveyAnswer {
                    metric,
                    score,
                    scale_min,
                    scale_max,
                    queue,
                    agent
                }
            ),
            (any::<bool>(), text(), opt_text())
                .prop_map(|(resolved, code, agent)| { EventKind::Disposition { resolved, code, agent } }),
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        let id = (text(), any::<u64>()).prop_map(|(agent_id, seq)| EventId { agent_id, seq });
        let time = (any::<i64>(), any::<u64>(), proptest::option::of(any::<i64>()), any::<bool>()).prop_map(
            |(captured_at, monotonic, source_time, clock_synced)| EventTime {
                captured_at,
                monotonic,
                source_time,
                clock_synced,
            },
        );
        (id, text(), source(), text(), text(), time, kind()).prop_map(
            |(id, site, source, call_id, leg_id, time, kind)| Event { id, site, source, call_id, leg_id, time, kind },
        )
    }

    proptest! {
        /// core -> wire -> core is the identity.
        #[test]
        fn core_to_wire_and_back_is_identity(original in event()) {
            let wire = pb::Event::from(original.clone());
            let back = Event::try_from(wire).expect("a converted core event is valid");
            prop_assert_eq!(back, original);
        }

        /// The same through the bytes: core -> wire -> bytes -> wire -> core.
        #[test]
        fn core_through_bytes_and_back_is_identity(original in event()) {
            let bytes = pb::Event::from(original.clone()).encode_to_vec();
            let wire = pb::Event::decode(bytes.as_slice()).expect("decodes");
            let back = Event::try_from(wire).expect("a converted core event is valid");
            prop_assert_eq!(back, original);
        }

        /// Whatever bytes arrive, decoding then converting never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(wire) = pb::Event::decode(bytes.as_slice()) {
                let _ = Event::try_from(wire);
            }
        }
    }

    // === Invalid wire events ===

    fn valid_wire() -> pb::Event {
        pb::Event::from(Event {
            id: EventId { agent_id: "agent-1".into(), seq: 7 },
            site: "lyon".into(),
            source: SourceKind::AsteriskQueueLog,
            call_id: "1700000000.42".into(),
            leg_id: String::new(),
            time: EventTime::from_source(1_700_000_000_000_000_000),
            kind: EventKind::Hangup {
                queue: Some("support".into()),
                agent: Some("Alice".into()),
                by: HangupBy::Caller,
                cause: Some(16),
                reported_talk_ms: Some(93_000),
            },
        })
    }

    fn with_hangup(edit: impl FnOnce(&mut pb::event::Hangup)) -> pb::Event {
        let mut wire = valid_wire();
        match wire.kind.as_mut() {
            Some(Kind::Hangup(h)) => edit(h),
            other => panic!("fixture changed: {other:?}"),
        }
        wire
    }

    #[test]
    fn valid_fixture_converts() {
        assert!(Event::try_from(valid_wire()).is_ok());
    }

    #[test]
    fn missing_kind_is_an_error() {
        let wire = pb::Event { kind: None, ..valid_wire() };
        assert_eq!(Event::try_from(wire), Err(ConvertError::Missing { field: "Event.kind" }));
    }

    #[test]
    fn unspecified_enum_is_an_error() {
        let wire = pb::Event { source: pb::SourceKind::Unspecified.into(), ..valid_wire() };
        assert_eq!(Event::try_from(wire), Err(ConvertError::Unspecified { field: "Event.source" }));

        let wire = with_hangup(|h| h.by = 0);
        assert_eq!(Event::try_from(wire), Err(ConvertError::Unspecified { field: "Hangup.by" }));
    }

    #[test]
    fn unknown_enum_value_is_an_error() {
        let wire = pb::Event { source: 99, ..valid_wire() };
        assert_eq!(Event::try_from(wire), Err(ConvertError::UnknownEnumValue { field: "Event.source", value: 99 }));

        let wire = with_hangup(|h| h.by = -3);
        assert_eq!(Event::try_from(wire), Err(ConvertError::UnknownEnumValue { field: "Hangup.by", value: -3 }));
    }

    #[test]
    fn unknown_enum_value_from_the_bytes_is_an_error() {
        // A newer peer's enum value survives decoding as a raw i32.
        let mut wire = valid_wire();
        wire.kind = Some(Kind::AgentState(pb::event::AgentStateChanged {
            agent: "Bob".into(),
            queue: None,
            state: 12,
            pause_reason: String::new(),
        }));
        let decoded = pb::Event::decode(wire.encode_to_vec().as_slice()).expect("decodes");
        let err = Event::try_from(decoded).expect_err("unknown state");
        assert_eq!(err, ConvertError::UnknownEnumValue { field: "AgentStateChanged.state", value: 12 });
        assert_eq!(err.to_string(), "AgentStateChanged.state has unknown enum value 12");
    }

    #[test]
    fn oversized_cause_is_an_error() {
        let wire = with_hangup(|h| h.cause = Some(70_000));
        assert_eq!(Event::try_from(wire), Err(ConvertError::OutOfRange { field: "Hangup.cause", value: 70_000 }));
    }

    #[test]
    fn leave_reason_unspecified_is_not_the_wire_zero() {
        let kind = Kind::from(EventKind::QueueLeave {
            queue: "q".into(),
            reason: LeaveReason::Unspecified,
            reported_wait_ms: None,
        });
        match kind {
            Kind::QueueLeave(k) => assert_eq!(k.reason(), pb::LeaveReason::Unknown),
            other => panic!("wrong kind {other:?}"),
        }
    }

    #[test]
    fn pause_reason_is_ignored_unless_paused() {
        let mut wire = valid_wire();
        wire.kind = Some(Kind::AgentState(pb::event::AgentStateChanged {
            agent: "Bob".into(),
            queue: Some("sales".into()),
            state: pb::AgentState::Available.into(),
            pause_reason: "lunch".into(),
        }));
        let event = Event::try_from(wire).expect("valid");
        assert_eq!(
            event.kind,
            EventKind::AgentState { agent: "Bob".into(), queue: Some("sales".into()), state: AgentState::Available }
        );
    }
}
