//! Just enough SDP (RFC 4566) to tell hold from resume in an offer.
//!
//! The summary looks at the first audio stream (else the first stream,
//! else the session): its direction attribute (`a=sendrecv`, `a=sendonly`,
//! `a=recvonly`, `a=inactive`; a media-level one overrides the session's,
//! none means sendrecv) and its connection address (`c=`, media level over
//! session level). An offer puts the other side on hold when it is
//! `sendonly` or `inactive` (RFC 3264 section 8.4), or when its address is
//! `0.0.0.0` (the older RFC 2543 way, still sent by some phones).

use memchr::memchr;

/// A stream's direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MediaDirection {
    /// Both ways (the default).
    #[default]
    SendRecv,
    /// The offerer only sends (music on hold).
    SendOnly,
    /// The offerer only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

/// What an SDP body says about its first audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SdpSummary {
    /// Effective direction.
    pub direction: MediaDirection,
    /// The effective connection address is `0.0.0.0` (or `::`).
    pub null_connection: bool,
    /// The body has at least one `m=` line.
    pub has_media: bool,
}

impl SdpSummary {
    /// Whether this offer puts the other side on hold.
    pub fn is_hold(&self) -> bool {
        matches!(self.direction, MediaDirection::SendOnly | MediaDirection::Inactive) || self.null_connection
    }
}

/// Summarises an SDP body; never fails (unknown lines are ignored).
pub fn summarize(body: &[u8]) -> SdpSummary {
    #[derive(Default, Clone, Copy)]
    struct Level {
        direction: Option<MediaDirection>,
        null_connection: Option<bool>,
    }
    let mut session = Level::default();
    // The stream that counts: first audio, else first of any kind.
    let mut chosen: Option<(bool, Level)> = None;
    let mut current: Option<(bool, Level)> = None;
    let mut has_media = false;

    let finish = |cur: Option<(bool, Level)>, chosen: &mut Option<(bool, Level)>| {
        if let Some((audio, lvl)) = cur {
            match chosen {
                None => *chosen = Some((audio, lvl)),
                Some((false, _)) if audio => *chosen = Some((audio, lvl)),
                _ => {}
            }
        }
    };

    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = match memchr(b'\n', rest) {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line).trim_ascii();
        let Some((&kind, value)) = line.split_first() else { continue };
        let Some(value) = value.strip_prefix(b"=") else { continue };
        match kind {
            b'm' => {
                finish(current.take(), &mut chosen);
                has_media = true;
                current = Some((value.starts_with(b"audio"), Level::default()));
            }
            b'c' => {
                let addr = value.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty()).nth(2);
                let null = addr.is_some_and(|a| {
                    let a = a.split(|&b| b == b'/').next().unwrap_or_default();
                    a == b"0.0.0.0" || a == b"::"
                });
                match &mut current {
                    Some((_, lvl)) => lvl.null_connection = Some(null),
                    None => session.null_connection = Some(null),
                }
            }
            b'a' => {
                let dir = match value {
                    b"sendrecv" => MediaDirection::SendRecv,
                    b"sendonly" => MediaDirection::SendOnly,
                    b"recvonly" => MediaDirection::RecvOnly,
                    b"inactive" => MediaDirection::Inactive,
                    _ => continue,
                };
                match &mut current {
                    Some((_, lvl)) => lvl.direction = Some(dir),
                    None => session.direction = Some(dir),
                }
            }
            _ => {}
        }
    }
    finish(current.take(), &mut chosen);
    let media = chosen.map(|(_, l)| l).unwrap_or_default();
    SdpSummary {
        direction: media.direction.or(session.direction).unwrap_or_default(),
        null_connection: media.null_connection.or(session.null_connection).unwrap_or(false),
        has_media,
    }
}
