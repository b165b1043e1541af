//! The agent side of the event socket: login and subscription, sans IO.
//! See [`EslClient`].

use std::fmt;

use super::framing::{ContentType, DEFAULT_MAX_FRAME_SIZE, EslEvent, ParseError, parse_frame};
use crate::Status;

/// The events the mapper uses, subscribed by default.
///
/// `CHANNEL_PROGRESS` and `CHANNEL_PROGRESS_MEDIA` are understood by the
/// mapper but add nothing it needs (the offer is announced by
/// `agent-offering`), so they are not asked for. `HEARTBEAT` (every 20 s)
/// lets the reader tell a quiet switch from a dead connection.
pub const DEFAULT_EVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "HEARTBEAT",
];

/// The `CUSTOM` subclasses subscribed by default: mod_callcenter's.
pub const DEFAULT_CUSTOM: &[&str] = &["callcenter::info"];

/// What to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Event names (`CHANNEL_ANSWER`, ...). Default: [`DEFAULT_EVENTS`].
    pub events: Vec<String>,
    /// `CUSTOM` subclasses. Default: [`DEFAULT_CUSTOM`].
    pub custom: Vec<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            events: DEFAULT_EVENTS.iter().map(|s| (*s).to_owned()).collect(),
            custom: DEFAULT_CUSTOM.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl Subscription {
    /// The command that asks for these events, e.g.
    /// `event plain CHANNEL_CREATE HEARTBEAT CUSTOM callcenter::info\n\n`.
    pub fn command(&self) -> String {
        let mut cmd = String::from("event plain");
        for e in &self.events {
            cmd.push(' ');
            cmd.push_str(e);
        }
        if !self.custom.is_empty() {
            cmd.push_str(" CUSTOM");
            for c in &self.custom {
                cmd.push(' ');
                cmd.push_str(c);
            }
        }
        cmd.push_str("\n\n");
        cmd
    }

    fn is_valid(&self) -> bool {
        let word = |w: &String| !w.is_empty() && !w.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
        self.events.iter().all(word) && self.custom.iter().all(word)
    }
}

/// Where the conversation with the switch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// Connected, waiting for `auth/request`.
    AwaitingAuthRequest,
    /// `auth` sent, waiting for its reply.
    Authenticating,
    /// Authenticated, `event plain ...` sent, waiting for its reply.
    Subscribing,
    /// Subscribed: events flow.
    Ready,
    /// The switch sent `text/disconnect-notice`: it is closing.
    Disconnected,
    /// Authentication or subscription was refused, the ACL rejected us, or
    /// the stream could not be framed: reconnect (later).
    Failed,
}

/// Why the client gave up on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The password holds a line break: it would inject commands.
    InvalidPassword,
    /// An event or subclass name is empty or holds a blank.
    InvalidSubscription,
    /// The switch answered `auth` with `-ERR ...` (wrong password).
    AuthFailed {
        /// The switch's `Reply-Text`.
        reply: String,
    },
    /// The switch answered `event plain ...` with `-ERR ...`.
    SubscriptionRefused {
        /// The switch's `Reply-Text`.
        reply: String,
    },
    /// `text/rude-rejection`: the switch's ACL does not let us in.
    Rejected {
        /// The switch's explanation.
        text: String,
    },
    /// The byte stream could not be framed.
    Framing(ParseError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPassword => f.write_str("the ESL password must not contain a line break"),
            Self::InvalidSubscription => f.write_str("an ESL event or subclass name is empty or holds a blank"),
            Self::AuthFailed { reply } => write!(f, "FreeSWITCH refused the ESL password: {reply}"),
            Self::SubscriptionRefused { reply } => write!(f, "FreeSWITCH refused the event subscription: {reply}"),
            Self::Rejected { text } => write!(f, "FreeSWITCH rejected the connection (ACL): {}", text.trim()),
            Self::Framing(e) => write!(f, "cannot frame the ESL stream: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A sans-IO event-socket client for the agent side (inbound mode: the agent
/// connects to FreeSWITCH on port 8021).
///
/// The caller owns the socket: it hands every byte it reads to
/// [`EslClient::feed`] and writes whatever [`EslClient::take_output`]
/// returns. The client answers `auth/request` with `auth <password>`, then
/// subscribes with `event plain ...` ([`Subscription`]), and passes every
/// event to the caller's closure, in order.
///
/// ```text
/// FreeSWITCH                      agent
///   Content-Type: auth/request  →
///                               ←  auth ClueCon\n\n
///   command/reply +OK accepted  →
///                               ←  event plain CHANNEL_CREATE ... CUSTOM callcenter::info\n\n
///   command/reply +OK event listener enabled plain  →   (Ready)
///   text/event-plain ...        →  on_event(&EslEvent)
///   text/disconnect-notice      →  (Disconnected)
/// ```
///
/// ```no_run
/// # use callkpi_feeds::esl::{EslClient, EslMapper, Subscription};
/// # fn read(_: &mut [u8]) -> usize { 0 }
/// # fn write(_: &[u8]) {}
/// let mut client = EslClient::new("ClueCon", Subscription::default()).expect("a one-line password");
/// let mut mapper = EslMapper::default();
/// let mut events = Vec::new();
/// let mut buf = [0u8; 16 * 1024];
/// loop {
///     let n = read(&mut buf);
///     if n == 0 { break; }
///     if client.feed(&buf[..n], |ev| mapper.map_event(ev, &mut events)).is_err() {
///         break; // auth refused, framing error...: log it, reconnect later
///     }
///     write(&client.take_output());
/// }
/// ```
#[derive(Debug, Clone)]
pub struct EslClient {
    password: String,
    subscription: Subscription,
    state: ClientState,
    /// Bytes read but not yet framed.
    inbuf: Vec<u8>,
    /// Bytes to write to the socket.
    out: Vec<u8>,
    max_frame: usize,
    events: u64,
    malformed_events: u64,
    disconnect_notice: Option<String>,
}

impl EslClient {
    /// A client that will log in with `password` and ask for `subscription`.
    ///
    /// # Errors
    /// [`ClientError::InvalidPassword`] when the password holds `\r` or
    /// `\n`; [`ClientError::InvalidSubscription`] for an empty name or one
    /// with a blank.
    pub fn new(password: &str, subscription: Subscription) -> Result<Self, ClientError> {
        if password.contains(['\r', '\n']) {
            return Err(ClientError::InvalidPassword);
        }
        if !subscription.is_valid() {
            return Err(ClientError::InvalidSubscription);
        }
        Ok(Self {
            password: password.to_owned(),
            subscription,
            state: ClientState::AwaitingAuthRequest,
            inbuf: Vec::new(),
            out: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME_SIZE,
            events: 0,
            malformed_events: 0,
            disconnect_notice: None,
        })
    }

    /// Uses another frame size limit (default [`DEFAULT_MAX_FRAME_SIZE`]).
    pub fn with_max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Where the conversation stands.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Events passed to the caller so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// `text/event-plain` frames whose body could not be parsed (skipped).
    pub fn malformed_events(&self) -> u64 {
        self.malformed_events
    }

    /// The body of the switch's `text/disconnect-notice`, once received.
    pub fn disconnect_notice(&self) -> Option<&str> {
        self.disconnect_notice.as_deref()
    }

    /// Bytes buffered but not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// Takes the bytes to write to the socket (empty when there are none).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Hands bytes read from the socket to the client: every whole frame is
    /// handled (replies drive the login, events go to `on_event` in order),
    /// the rest is kept for the next call. Any split of the stream gives the
    /// same events.
    ///
    /// # Errors
    /// [`ClientError::AuthFailed`], [`ClientError::SubscriptionRefused`],
    /// [`ClientError::Rejected`] and [`ClientError::Framing`]; the state is
    /// then [`ClientState::Failed`] and the connection should be closed.
    /// Events framed before the error have been passed on.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&EslEvent<'_>)) -> Result<(), ClientError> {
        if self.state == ClientState::Failed {
            return Ok(());
        }
        self.inbuf.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        let result = loop {
            match parse_frame(&buf[pos..], self.max_frame) {
                Ok(Status::Complete { value, consumed }) => {
                    pos += consumed;
                    if let Err(e) = self.handle(&value, &mut on_event) {
                        break Err(e);
                    }
                }
                Ok(Status::Partial) => break Ok(()),
                Err(e) => break Err(ClientError::Framing(e)),
            }
        };
        match result {
            Ok(()) => {
                let mut buf = buf;
                buf.drain(..pos);
                self.inbuf = buf;
                Ok(())
            }
            Err(e) => {
                self.state = ClientState::Failed;
                Err(e)
            }
        }
    }

    fn handle(
        &mut self,
        frame: &super::EslFrame<'_>,
        on_event: &mut impl FnMut(&EslEvent<'_>),
    ) -> Result<(), ClientError> {
        match frame.content_type() {
            ContentType::AuthRequest => {
                self.out.extend_from_slice(b"auth ");
                self.out.extend_from_slice(self.password.as_bytes());
                self.out.extend_from_slice(b"\n\n");
                self.state = ClientState::Authenticating;
            }
            ContentType::CommandReply => {
                let ok = frame.reply_ok();
                let reply = || frame.reply_text().unwrap_or_default().into_owned();
                match (self.state, ok) {
                    (ClientState::Authenticating, Some(true)) => {
                        self.out.extend_from_slice(self.subscription.command().as_bytes());
                        self.state = ClientState::Subscribing;
                    }
                    (ClientState::Authenticating, _) => return Err(ClientError::AuthFailed { reply: reply() }),
                    (ClientState::Subscribing, Some(true)) => self.state = ClientState::Ready,
                    (ClientState::Subscribing, _) => return Err(ClientError::SubscriptionRefused { reply: reply() }),
                    // Replies to commands the caller sent itself, or late ones.
                    _ => {}
                }
            }
            ContentType::EventPlain => match frame.event() {
                Some(Ok(ev)) => {
                    self.events += 1;
                    on_event(&ev);
                }
                _ => self.malformed_events += 1,
            },
            ContentType::DisconnectNotice => {
                self.disconnect_notice = Some(String::from_utf8_lossy(frame.body().unwrap_or_default()).into_owned());
                self.state = ClientState::Disconnected;
            }
            ContentType::RudeRejection => {
                let text = String::from_utf8_lossy(frame.body().unwrap_or_default()).into_owned();
                return Err(ClientError::Rejected { text });
            }
            // api/response, log/data, event-json/xml: not asked for here.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(client: &mut EslClient, bytes: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        client.feed(bytes, |ev| got.push(ev.name().unwrap_or_default().into_owned())).unwrap();
        got
    }

    #[test]
    fn login_subscribe_events() {
        let mut c = EslClient::new("ClueCon", Subscription::default()).unwrap();
        assert_eq!(c.state(), ClientState::AwaitingAuthRequest);
        assert!(names(&mut c, b"Content-Type: auth/request\n\n").is_empty());
        assert_eq!(c.take_output(), b"auth ClueCon\n\n");
        assert_eq!(c.state(), ClientState::Authenticating);
        names(&mut c, b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n");
        assert_eq!(
            String::from_utf8(c.take_output()).unwrap(),
            "event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HOLD CHANNEL_UNHOLD CHANNEL_HANGUP \
             CHANNEL_HANGUP_COMPLETE HEARTBEAT CUSTOM callcenter::info\n\n"
        );
        names(&mut c, b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n");
        assert_eq!(c.state(), ClientState::Ready);
        assert!(c.take_output().is_empty());
        let ev = b"Content-Length: 23\nContent-Type: text/event-plain\n\nEvent-Name: HEARTBEAT\n\n";
        // Split anywhere, the event arrives once, whole.
        let (a, b) = ev.split_at(30);
        assert!(names(&mut c, a).is_empty());
        assert_eq!(names(&mut c, b), ["HEARTBEAT"]);
        assert_eq!((c.events(), c.buffered()), (1, 0));
    }

    #[test]
    fn auth_failure_and_bad_passwords() {
        let mut c = EslClient::new("wrong", Subscription::default()).unwrap();
        c.feed(b"Content-Type: auth/request\n\n", |_| {}).unwrap();
        let err = c.feed(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n", |_| {}).unwrap_err();
        assert_eq!(err, ClientError::AuthFailed { reply: "-ERR invalid".into() });
        assert_eq!(c.state(), ClientState::Failed);
        assert_eq!(EslClient::new("a\nexit", Subscription::default()).unwrap_err(), ClientError::InvalidPassword);
        let bad = Subscription { events: vec!["A B".into()], custom: vec![] };
        assert_eq!(EslClient::new("x", bad).unwrap_err(), ClientError::InvalidSubscription);
    }
}
