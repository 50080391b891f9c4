//! The broker's wire protocol: frames, message types, typed decoding and validation.
//!
//! Every message is multipart. After the ROUTER's routing identity (which ZeroMQ adds and
//! strips), a message is:
//!
//! | frame | content |
//! |---|---|
//! | (optional) | an empty delimiter, present when the peer is a REQ socket; echoed in the reply |
//! | 0 | the protocol tag `labhub` |
//! | 1 | the protocol version, ASCII decimal: `1` |
//! | 2 | the message type, ASCII: `register`, `discover`, … or `reply` |
//! | 3 | the body: one UTF-8 JSON object carrying a `request_id` |
//!
//! [`decode_request`] checks the frame count, the total size, the tag, the version and the type,
//! then parses the body into typed values (unknown fields refused) and validates names, sizes and
//! bounds, so the broker never acts on an unchecked value. The full specification, written so
//! that a program in another language can speak it, is `docs/PROTOCOL.md`.
//!
//! ```
//! use labhub::protocol::{self, Request};
//! let frames: Vec<&[u8]> = vec![
//!     b"labhub", b"1", b"discover",
//!     br#"{"request_id": 7, "name": "cam0"}"#,
//! ];
//! let decoded = protocol::decode_request(&frames);
//! assert!(!decoded.delimiter);
//! match decoded.outcome.unwrap() {
//!     Request::Discover(d) => assert_eq!(d.name.as_str(), "cam0"),
//!     other => panic!("{other:?}"),
//! }
//! ```
#![deny(unsafe_code)]

mod curve_key;
mod grant;
mod heartbeat_metrics;
mod messages;
mod names;

pub use curve_key::{CURVE_KEY_Z85_LEN, CurveKey, MAX_ADMITTED_KEYS};
pub use grant::*;
pub use messages::*;
pub use names::*;

/// Frame 0 of every message.
pub const TAG: &[u8] = b"labhub";
/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;
/// Frame 1 of every message this crate sends.
pub const VERSION_FRAME: &[u8] = b"1";
/// The message type of replies.
pub const REPLY_TYPE: &str = "reply";
/// The largest message accepted, all frames together, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The message types of requests.
pub const REQUEST_TYPES: [&str; 9] = [
    "register",
    "discover",
    "unregister",
    "attach",
    "detach",
    "heartbeat",
    "list",
    "status",
    "grant",
];

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not 4 frames (5 with a delimiter).
    #[error("expected 4 frames (tag, version, type, body) after the envelope, found {found}")]
    BadFrameCount {
        /// Frames found after the envelope.
        found: usize,
    },
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Frame 0 is not `labhub`.
    #[error("first frame is not the protocol tag \"labhub\"")]
    BadTag,
    /// Frame 1 is not a version this crate speaks.
    #[error("protocol version {found:?} is not supported (supported: \"1\")")]
    UnsupportedVersion {
        /// What frame 1 held (lossy UTF-8, truncated).
        found: String,
    },
    /// Frame 2 names no known message type.
    #[error("unknown message type {found:?}")]
    UnknownType {
        /// What frame 2 held (lossy UTF-8, truncated).
        found: String,
    },
    /// The body is not a JSON object.
    #[error("body is not a JSON object: {source}")]
    MalformedBody {
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The body is JSON but a field is missing, unknown, mistyped or out of range.
    #[error("invalid {type_name} body: field {field}: {source}")]
    InvalidBody {
        /// The message type.
        type_name: &'static str,
        /// The field's path (`channel.size`, `channels.cam0.frames`; `.` for the body itself).
        field: String,
        /// The deserialiser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A field parsed but breaks a rule that spans fields or bounds a collection.
    #[error("invalid field {field}: {problem}")]
    InvalidField {
        /// The field's path (`channel.size`).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl DecodeError {
    /// The path of the field at fault, for the errors that concern one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidBody { field, .. } | Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The `error_code` a reply to this message carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadFrameCount { .. } => ErrorCode::BadFrames,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::BadTag => ErrorCode::BadTag,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::UnknownType { .. } => ErrorCode::UnknownType,
            Self::MalformedBody { .. } => ErrorCode::MalformedBody,
            Self::InvalidBody { .. } | Self::InvalidField { .. } => ErrorCode::InvalidField,
        }
    }
}

/// A request refused by the decoder, with the request id when one could be read.
#[derive(Debug)]
pub struct Rejected {
    /// The body's `request_id`, when frame 3 (after an optional delimiter) is a JSON object
    /// carrying an unsigned integer `request_id`, whatever else is wrong with the message.
    pub request_id: Option<u64>,
    /// What was wrong.
    pub error: DecodeError,
}

/// The outcome of [`decode_request`].
#[derive(Debug)]
pub struct Decoded {
    /// Whether the message began with an empty delimiter frame (a REQ peer); the reply must
    /// carry one too.
    pub delimiter: bool,
    /// The request, or why it was refused.
    pub outcome: Result<Request, Rejected>,
}

fn lossy(frame: &[u8]) -> String {
    String::from_utf8_lossy(&frame[..frame.len().min(32)]).into_owned()
}

fn split_delimiter<F: AsRef<[u8]>>(frames: &[F]) -> (bool, &[F]) {
    match frames.first() {
        Some(f) if f.as_ref().is_empty() => (true, &frames[1..]),
        _ => (false, frames),
    }
}

/// Checks the envelope frames and returns `(type, body)`.
fn open_envelope<F: AsRef<[u8]>>(frames: &[F]) -> Result<(&[u8], &[u8]), DecodeError> {
    let size: usize = frames.iter().map(|f| f.as_ref().len()).sum();
    if size > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            size,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let [tag, version, kind, body] = frames else {
        return Err(DecodeError::BadFrameCount {
            found: frames.len(),
        });
    };
    if tag.as_ref() != TAG {
        return Err(DecodeError::BadTag);
    }
    if version.as_ref() != VERSION_FRAME {
        return Err(DecodeError::UnsupportedVersion {
            found: lossy(version.as_ref()),
        });
    }
    Ok((kind.as_ref(), body.as_ref()))
}

/// Decodes and validates one request; `frames` are those after the routing identity.
///
/// Never panics, whatever the input; see [`DecodeError`] for what is refused.
pub fn decode_request<F: AsRef<[u8]>>(frames: &[F]) -> Decoded {
    let (delimiter, frames) = split_delimiter(frames);
    let outcome = open_envelope(frames)
        .map_err(|error| Rejected {
            request_id: request_id_hint(frames),
            error,
        })
        .and_then(|(kind, body)| decode_body(kind, body));
    Decoded { delimiter, outcome }
}

/// The `request_id` of a message the decoder refused before reading its body: frame 3 (the
/// body's place; `frames` start after any delimiter), read as a JSON object, whatever the
/// other frames hold. `None` when there is no such frame or it carries no valid id.
pub fn request_id_hint<F: AsRef<[u8]>>(frames: &[F]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        request_id: Option<u64>,
    }
    let body = frames.get(3)?.as_ref();
    if body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    serde_json::from_slice::<Id>(body).ok()?.request_id
}

/// Deserialises `value` as `T`, naming the field at fault in the error.
fn typed<T: serde::de::DeserializeOwned>(
    type_name: &'static str,
    value: serde_json::Value,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let source = e.into_inner();
        // A missing field is reported at its parent; name the field itself.
        let text = source.to_string();
        let field = match text
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((name, _)) if path == "." => name.to_owned(),
            Some((name, _)) => format!("{path}.{name}"),
            None => path,
        };
        DecodeError::InvalidBody {
            type_name,
            field,
            source,
        }
    })
}

fn decode_body(kind: &[u8], body: &[u8]) -> Result<Request, Rejected> {
    let type_name = REQUEST_TYPES
        .iter()
        .find(|t| t.as_bytes() == kind)
        .copied()
        .ok_or_else(|| Rejected {
            request_id: request_id_hint(&[&[][..], &[][..], &[][..], body]),
            error: DecodeError::UnknownType { found: lossy(kind) },
        })?;
    // Parse once into a generic value: it tells a syntax error from a field error and yields
    // the request id for the error reply even when a field is wrong.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|source| Rejected {
        request_id: None,
        error: DecodeError::MalformedBody { source },
    })?;
    let serde_json::Value::Object(map) = &value else {
        return Err(Rejected {
            request_id: None,
            error: DecodeError::MalformedBody {
                source: serde::de::Error::custom("the body must be a JSON object"),
            },
        });
    };
    let request_id = map.get("request_id").and_then(serde_json::Value::as_u64);
    let reject = |error| Rejected { request_id, error };
    let request = match type_name {
        "register" => Request::Register(Box::new(typed(type_name, value).map_err(reject)?)),
        "discover" => Request::Discover(typed(type_name, value).map_err(reject)?),
        "unregister" => Request::Unregister(typed(type_name, value).map_err(reject)?),
        "attach" => Request::Attach(typed(type_name, value).map_err(reject)?),
        "detach" => Request::Detach(typed(type_name, value).map_err(reject)?),
        "heartbeat" => Request::Heartbeat(typed(type_name, value).map_err(reject)?),
        "list" => Request::List(typed(type_name, value).map_err(reject)?),
        "status" => Request::Status(typed(type_name, value).map_err(reject)?),
        "grant" => Request::Grant(typed(type_name, value).map_err(reject)?),
        _ => unreachable!("REQUEST_TYPES and this match list the same types"),
    };
    validate(&request).map_err(reject)?;
    Ok(request)
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> DecodeError {
    DecodeError::InvalidField {
        field: field.into(),
        problem: problem.into(),
    }
}

fn check_label(field: &str, s: &str) -> Result<(), DecodeError> {
    if s.is_empty() || s.len() > MAX_LABEL_LEN {
        return Err(field_error(
            field,
            format!("must be 1 to {MAX_LABEL_LEN} bytes, is {}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(field_error(field, "must not contain control characters"));
    }
    Ok(())
}

fn json_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks the rules serde cannot express: fields required per kind, bounds of collections.
pub fn validate(request: &Request) -> Result<(), DecodeError> {
    match request {
        Request::Register(r) => {
            validate_spec(&r.channel)?;
            if let Some(host) = &r.host {
                check_label("host", host)?;
            }
            Ok(())
        }
        Request::Heartbeat(h) => {
            if h.channels.len() > MAX_HEARTBEAT_CHANNELS {
                return Err(field_error(
                    "channels",
                    format!(
                        "{} channels, the limit is {MAX_HEARTBEAT_CHANNELS}",
                        h.channels.len()
                    ),
                ));
            }
            for (name, counters) in &h.channels {
                if counters.len() > MAX_COUNTERS {
                    return Err(field_error(
                        format!("channels.{name}"),
                        format!("{} counters, the limit is {MAX_COUNTERS}", counters.len()),
                    ));
                }
                for key in counters.keys() {
                    let ok = !key.is_empty()
                        && key.len() <= MAX_COUNTER_NAME_LEN
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if !ok {
                        return Err(field_error(
                            format!("channels.{name}"),
                            format!(
                                "counter name {key:?} must be 1 to {MAX_COUNTER_NAME_LEN} bytes of ASCII letters, digits, '_', '-', '.'"
                            ),
                        ));
                    }
                }
            }
            heartbeat_metrics::validate(h)
        }
        Request::List(l) => {
            if let Some(prefix) = &l.prefix {
                let ok = prefix.len() <= MAX_CHANNEL_NAME_LEN
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !ok {
                    return Err(field_error(
                        "prefix",
                        "must be at most 128 bytes of channel-name characters",
                    ));
                }
            }
            Ok(())
        }
        Request::Discover(_)
        | Request::Unregister(_)
        | Request::Attach(_)
        | Request::Detach(_)
        | Request::Status(_)
        | Request::Grant(_) => Ok(()),
    }
}

fn validate_spec(spec: &ChannelSpec) -> Result<(), DecodeError> {
    match spec.kind {
        ChannelKind::Shm => {
            if spec.server_key.is_some() {
                return Err(field_error(
                    "channel.server_key",
                    "only a pubsub or reqrep channel has a server key",
                ));
            }
            if spec.endpoint.is_some() {
                return Err(field_error(
                    "channel.endpoint",
                    "a shm channel has a shm_name, not an endpoint",
                ));
            }
            match (spec.sharing.unwrap_or(Sharing::Named), &spec.shm_name) {
                (Sharing::Memfd, Some(_)) => {
                    return Err(field_error(
                        "channel.shm_name",
                        "a memfd channel's segment has no name",
                    ));
                }
                (Sharing::Memfd, None) => {}
                (Sharing::Named, None) => {
                    return Err(field_error(
                        "channel.shm_name",
                        "required for a shm channel shared by name",
                    ));
                }
                (Sharing::Named, Some(shm_name))
                    if shm_name.channel_part() != spec.name.as_str() =>
                {
                    return Err(field_error(
                        "channel.shm_name",
                        format!(
                            "must be /labhub.<uid>.{} for channel {}",
                            spec.name, spec.name
                        ),
                    ));
                }
                (Sharing::Named, Some(_)) => {}
            }
            match spec.size {
                None => return Err(field_error("channel.size", "required for a shm channel")),
                Some(0) => return Err(field_error("channel.size", "must not be 0")),
                Some(s) if s > MAX_SEGMENT_SIZE => {
                    return Err(field_error(
                        "channel.size",
                        format!("{s} bytes, the limit is {MAX_SEGMENT_SIZE}"),
                    ));
                }
                Some(_) => {}
            }
        }
        ChannelKind::Pubsub | ChannelKind::Reqrep => {
            if spec.shm_name.is_some() {
                return Err(field_error(
                    "channel.shm_name",
                    "only a shm channel has a shm_name",
                ));
            }
            if spec.sharing.is_some() {
                return Err(field_error(
                    "channel.sharing",
                    "only a shm channel has a sharing",
                ));
            }
            if spec.endpoint.is_none() {
                return Err(field_error(
                    "channel.endpoint",
                    format!("required for a {} channel", spec.kind.as_str()),
                ));
            }
            if let Some(s) = spec.size
                && s > u64::from(u32::MAX)
            {
                return Err(field_error(
                    "channel.size",
                    format!(
                        "{s} bytes, the largest message size allowed is {}",
                        u32::MAX
                    ),
                ));
            }
        }
    }
    if let Some(policy) = &spec.policy
        && let Err(e) = policy.parse::<crate::shm::Policy>()
    {
        return Err(field_error("channel.policy", e.to_string()));
    }
    if let Some(schema) = &spec.schema {
        if let Some(name) = &schema.name {
            check_label("channel.schema.name", name)?;
        }
        if let Some(element) = &schema.element
            && let Err(e) = element.parse::<crate::shm::ElementType>()
        {
            return Err(field_error("channel.schema.element", e.to_string()));
        }
        if let Some(shape) = &schema.shape
            && (shape.is_empty()
                || shape.len() > crate::shm::MAX_DIMS
                || shape.iter().any(|&d| d == 0 || d > MAX_SEGMENT_SIZE))
        {
            return Err(field_error(
                "channel.schema.shape",
                format!(
                    "must be 1 to {} dimensions, each from 1 to {MAX_SEGMENT_SIZE}",
                    crate::shm::MAX_DIMS
                ),
            ));
        }
        if let Some(hash) = &schema.hash
            && (hash.is_empty()
                || hash.len() > MAX_LABEL_LEN
                || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(field_error(
                "channel.schema.hash",
                format!("must be 1 to {MAX_LABEL_LEN} hexadecimal digits"),
            ));
        }
    }
    if !spec.metadata.is_empty() {
        let size = serde_json::to_vec(&spec.metadata).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return Err(field_error(
                "channel.metadata",
                format!("{size} bytes serialised, the limit is {MAX_METADATA_BYTES}"),
            ));
        }
        let depth = spec.metadata.values().map(json_depth).max().unwrap_or(0) + 1;
        if depth > MAX_METADATA_DEPTH {
            return Err(field_error(
                "channel.metadata",
                format!("nested {depth} deep, the limit is {MAX_METADATA_DEPTH}"),
            ));
        }
    }
    Ok(())
}

fn envelope(type_name: &str, body: Vec<u8>) -> Vec<Vec<u8>> {
    vec![
        TAG.to_vec(),
        VERSION_FRAME.to_vec(),
        type_name.as_bytes().to_vec(),
        body,
    ]
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our message types serialise infallibly: string keys, no non-finite floats.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// Encodes a request as the four frames a DEALER sends (a REQ socket adds the delimiter
/// itself).
pub fn encode_request(request: &Request) -> Vec<Vec<u8>> {
    let body = match request {
        Request::Register(r) => to_json(r),
        Request::Discover(r) => to_json(r),
        Request::Unregister(r) | Request::Attach(r) | Request::Detach(r) => to_json(r),
        Request::Heartbeat(r) => to_json(r),
        Request::List(r) => to_json(r),
        Request::Status(r) => to_json(r),
        Request::Grant(r) => to_json(r),
    };
    envelope(request.type_name(), body)
}

/// Encodes a reply; with `delimiter` it starts with the empty frame a REQ peer needs.
pub fn encode_reply(reply: &Reply, delimiter: bool) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(5);
    if delimiter {
        frames.push(Vec::new());
    }
    frames.extend(envelope(REPLY_TYPE, to_json(reply)));
    frames
}

/// Decodes a reply (the client side); a leading empty delimiter is skipped.
pub fn decode_reply<F: AsRef<[u8]>>(frames: &[F]) -> Result<Reply, DecodeError> {
    let (_, frames) = split_delimiter(frames);
    let (kind, body) = open_envelope(frames)?;
    if kind != REPLY_TYPE.as_bytes() {
        return Err(DecodeError::UnknownType { found: lossy(kind) });
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|source| DecodeError::MalformedBody { source })?;
    typed(REPLY_TYPE, value)
}

/// Encodes a notification with its sequence number.
pub fn encode_notification(seq: u64, notification: &Notification) -> Vec<Vec<u8>> {
    let body = match notification.clone() {
        Notification::ChannelUp { channel } => to_json(&ChannelUpBody {
            seq,
            channel: *channel,
        }),
        Notification::ChannelDown {
            name,
            producer,
            reason,
        } => to_json(&ChannelDownBody {
            seq,
            name,
            producer,
            reason,
        }),
        Notification::ConsumerDropped {
            name,
            producer,
            consumer,
            reason,
        } => to_json(&ConsumerDroppedBody {
            seq,
            name,
            producer,
            consumer,
            reason,
        }),
    };
    envelope(notification.type_name(), body)
}

/// Decodes a notification into its sequence number and content.
pub fn decode_notification<F: AsRef<[u8]>>(
    frames: &[F],
) -> Result<(u64, Notification), DecodeError> {
    let (kind, body) = open_envelope(frames)?;
    let value = |body: &[u8]| -> Result<serde_json::Value, DecodeError> {
        serde_json::from_slice(body).map_err(|source| DecodeError::MalformedBody { source })
    };
    match kind {
        b"channel_up" => {
            let b: ChannelUpBody = typed("channel_up", value(body)?)?;
            Ok((
                b.seq,
                Notification::ChannelUp {
                    channel: Box::new(b.channel),
                },
            ))
        }
        b"channel_down" => {
            let b: ChannelDownBody = typed("channel_down", value(body)?)?;
            Ok((
                b.seq,
                Notification::ChannelDown {
                    name: b.name,
                    producer: b.producer,
                    reason: b.reason,
                },
            ))
        }
        b"consumer_dropped" => {
            let b: ConsumerDroppedBody = typed("consumer_dropped", value(body)?)?;
            Ok((
                b.seq,
                Notification::ConsumerDropped {
                    name: b.name,
                    producer: b.producer,
                    consumer: b.consumer,
                    reason: b.reason,
                },
            ))
        }
        other => Err(DecodeError::UnknownType {
            found: lossy(other),
        }),
    }
}

#[cfg(test)]
mod tests;
