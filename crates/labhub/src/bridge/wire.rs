//! The bridge's messages between a sender and a gateway (docs/PROTOCOL.md §12), encoded and
//! decoded in one place. Every message is a ZeroMQ multipart message whose first frame starts
//! with a type byte; integers are little-endian. Decoding never panics: a message another
//! process sent is checked field by field and refused with a [`WireError`] naming what is wrong.
#![deny(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::shm::MAX_DIMS;

/// The version of the bridge protocol this build speaks.
pub const VERSION: u32 = 1;

/// Message types, the first byte of the first frame.
pub(crate) mod tag {
    /// Sender → gateway: open or resume a session (frame 1: JSON [`Hello`](super::Hello)).
    pub const HELLO: u8 = 0x01;
    /// Sender → gateway: one frame (frame 1: its payload).
    pub const FRAME: u8 = 0x02;
    /// Sender → gateway: a flexible-zone state (frame 1: its serialised bytes).
    pub const STATE: u8 = 0x03;
    /// Sender → gateway: keep-alive.
    pub const PING: u8 = 0x04;
    /// Sender → gateway: the bridge stops; the gateway closes the channel.
    pub const BYE: u8 = 0x05;
    /// Sender → gateway: the source channel numbers its frames afresh (it was made again).
    pub const RENUMBER: u8 = 0x06;
    /// Gateway → sender: the session is open (frame 1: JSON [`Welcome`](super::Welcome)).
    pub const WELCOME: u8 = 0x81;
    /// Gateway → sender: items applied so far, and what the gateway counted lost.
    pub const CREDIT: u8 = 0x82;
    /// Gateway → sender: the request is refused (frame 1: JSON [`Refusal`](super::Refusal)).
    pub const REFUSED: u8 = 0x83;
}

/// Why a bridge message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bridge message: {0}")]
pub struct WireError(pub String);

fn bad(problem: impl Into<String>) -> WireError {
    WireError(problem.into())
}

/// How a bridge delivers frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Every frame, in order: the remote ring's backpressure reaches the source (credits),
    /// frames in flight are sent again after a reconnection.
    #[default]
    Lossless,
    /// The newest frame whenever there is credit (for monitors): older ones are skipped and
    /// counted, the source is never held back.
    Lossy,
}

impl Delivery {
    /// `lossless` or `lossy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lossless => "lossless",
            Self::Lossy => "lossy",
        }
    }
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lossless" => Ok(Self::Lossless),
            "lossy" => Ok(Self::Lossy),
            other => Err(format!(
                "bridge delivery {other:?} is neither \"lossless\" nor \"lossy\""
            )),
        }
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of the source channel the remote channel is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// The policy (`latest`, `double`, `ring:N:block`, ...).
    pub policy: String,
    /// The element type (`u16`, ...).
    pub element: String,
    /// The largest frame shape.
    pub max_shape: Vec<u64>,
    /// Capacity of the flexible zone in bytes.
    pub flex_size: u64,
    /// The state format's header code (1 JSON, 2 MessagePack).
    pub state_format: u32,
    /// Whether frames carry checksums.
    pub checksum: bool,
    /// The application's schema name, if any.
    #[serde(default)]
    pub schema_name: Option<String>,
    /// The schema version (0: none).
    #[serde(default)]
    pub schema_version: u32,
}

/// A sender's request to open (or resume) a session on one of its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// [`VERSION`].
    pub version: u32,
    /// The bridge: random per sender run, the same on all its connections.
    pub bridge: u64,
    /// This set of connections: random per connection attempt, the same on all of them (a
    /// new attempt replaces the connections of the previous one).
    pub attempt: u64,
    /// This connection's index, `0..connections`.
    pub connection: u32,
    /// The bridge's connections.
    pub connections: u32,
    /// The source hub's name.
    pub from_hub: String,
    /// The source channel.
    pub from_channel: String,
    /// The channel to publish into on the gateway's hub.
    pub channel: String,
    /// How frames are delivered.
    pub delivery: Delivery,
    /// The oldest item the sender still holds (everything before it was applied or given up):
    /// a new session starts there.
    pub next_seq: u64,
    /// The source channel's settings.
    pub settings: ChannelSettings,
}

/// The gateway's acceptance of a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Items applied so far: the sender sends again everything from here.
    pub acked: u64,
    /// Items the sender may have in flight beyond `acked`.
    pub window: u32,
}

/// The gateway's refusal of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// A code: `bad_request`, `busy`, `mismatch`, `channel`, `no_session`, `version`.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// One frame as it travels: its item number, its source id, timestamp, state version and
/// shape (the payload travels as the next ZeroMQ frame, never copied into this header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    /// The item number in the session.
    pub seq: u64,
    /// The frame's id in the source channel.
    pub origin: u64,
    /// The producer's timestamp, ns.
    pub timestamp_ns: u64,
    /// The state version the frame followed (0: none).
    pub state_version: u64,
    /// Source frames the sender skipped since the previous frame it sent (lossy delivery):
    /// the gateway does not count them lost.
    pub skipped: u64,
    /// The frame's shape.
    pub shape: Vec<u64>,
}

/// A message from a sender.
#[derive(Debug)]
pub enum FromSender<'a> {
    /// Open or resume.
    Hello(Hello),
    /// A frame and its payload.
    Frame(FrameHead, &'a [u8]),
    /// A state (item `seq`, source version `version`) and its bytes.
    State {
        /// The item number.
        seq: u64,
        /// The state's version in the source channel.
        version: u64,
        /// The serialised state.
        bytes: &'a [u8],
    },
    /// The source's frame ids start afresh from the next frame on (item `seq`).
    Renumber {
        /// The item number.
        seq: u64,
    },
    /// Keep-alive.
    Ping,
    /// The bridge stops.
    Bye,
}

/// A message from a gateway.
#[derive(Debug, PartialEq, Eq)]
pub enum FromGateway {
    /// The session is open.
    Welcome(Welcome),
    /// Items applied, frames counted lost at the gateway.
    Credit {
        /// Every item below this one is applied.
        acked: u64,
        /// Frames the gateway counted lost so far in this session.
        lost: u64,
    },
    /// Refused.
    Refused(Refusal),
}

/// Bytes of a frame header before its dimensions: type, five u64, ndim.
const HEAD_LEN: usize = 1 + 5 * 8 + 1;

/// Frame 0 of a [`FrameHead`].
pub fn encode_frame_head(h: &FrameHead) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD_LEN + 8 * h.shape.len());
    b.push(tag::FRAME);
    for v in [h.seq, h.origin, h.timestamp_ns, h.state_version, h.skipped] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(h.shape.len() as u8);
    for d in &h.shape {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b
}

/// Frame 0 of a state message.
pub fn encode_state_head(seq: u64, version: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(17);
    b.push(tag::STATE);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b
}

/// Frame 0 of a renumbering item.
pub fn encode_renumber(seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(9);
    b.push(tag::RENUMBER);
    b.extend_from_slice(&seq.to_le_bytes());
    b
}

/// A one-byte message (`PING`, `BYE`).
pub fn encode_bare(t: u8) -> Vec<u8> {
    vec![t]
}

/// A message with a JSON body: `[tag]`, then the JSON.
pub fn encode_json<T: Serialize>(t: u8, body: &T) -> [Vec<u8>; 2] {
    // Serialising these plain structs cannot fail.
    [vec![t], serde_json::to_vec(body).unwrap_or_default()]
}

/// A credit message.
pub fn encode_credit(acked: u64, lost: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(17);
    b.push(tag::CREDIT);
    b.extend_from_slice(&acked.to_le_bytes());
    b.extend_from_slice(&lost.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize, field: &str) -> Result<u64, WireError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad(format!("{field} is cut short")))
}

fn json<T: serde::de::DeserializeOwned>(frames: &[&[u8]], what: &str) -> Result<T, WireError> {
    if frames.len() != 2 {
        return Err(bad(format!("{what} has {} frames, not 2", frames.len())));
    }
    let de = &mut serde_json::Deserializer::from_slice(frames[1]);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        bad(format!("{what} field {path}: {}", e.into_inner()))
    })
}

fn expect_frames(frames: &[&[u8]], n: usize, what: &str) -> Result<(), WireError> {
    if frames.len() == n {
        Ok(())
    } else {
        Err(bad(format!("{what} has {} frames, not {n}", frames.len())))
    }
}

/// Decodes a sender's message (its frames, routing id removed).
///
/// # Errors
/// A [`WireError`] naming the fault: unknown type, wrong frame count, short header, more
/// dimensions than a channel has, bad JSON.
pub fn decode_from_sender<'a>(frames: &[&'a [u8]]) -> Result<FromSender<'a>, WireError> {
    let head = frames.first().copied().unwrap_or_default();
    let Some(&t) = head.first() else {
        return Err(bad("empty first frame"));
    };
    match t {
        tag::HELLO => {
            let hello: Hello = json(frames, "hello")?;
            Ok(FromSender::Hello(hello))
        }
        tag::FRAME => {
            expect_frames(frames, 2, "frame")?;
            let seq = u64_at(head, 1, "frame seq")?;
            let origin = u64_at(head, 9, "frame origin")?;
            let timestamp_ns = u64_at(head, 17, "frame timestamp")?;
            let state_version = u64_at(head, 25, "frame state version")?;
            let skipped = u64_at(head, 33, "frame skipped")?;
            let ndim = *head
                .get(HEAD_LEN - 1)
                .ok_or_else(|| bad("frame ndim is missing"))? as usize;
            if ndim == 0 || ndim > MAX_DIMS {
                return Err(bad(format!(
                    "frame has {ndim} dimensions (1 to {MAX_DIMS})"
                )));
            }
            if head.len() != HEAD_LEN + 8 * ndim {
                return Err(bad(format!(
                    "frame header is {} bytes, {} expected for {ndim} dimensions",
                    head.len(),
                    HEAD_LEN + 8 * ndim
                )));
            }
            let shape = (0..ndim)
                .map(|i| u64_at(head, HEAD_LEN + 8 * i, "frame shape"))
                .collect::<Result<_, _>>()?;
            Ok(FromSender::Frame(
                FrameHead {
                    seq,
                    origin,
                    timestamp_ns,
                    state_version,
                    skipped,
                    shape,
                },
                frames[1],
            ))
        }
        tag::STATE => {
            expect_frames(frames, 2, "state")?;
            if head.len() != 17 {
                return Err(bad(format!("state header is {} bytes, not 17", head.len())));
            }
            Ok(FromSender::State {
                seq: u64_at(head, 1, "state seq")?,
                version: u64_at(head, 9, "state version")?,
                bytes: frames[1],
            })
        }
        tag::RENUMBER => {
            if head.len() != 9 || frames.len() > 2 || frames.get(1).is_some_and(|f| !f.is_empty()) {
                return Err(bad("renumber is 9 bytes and an empty payload"));
            }
            Ok(FromSender::Renumber {
                seq: u64_at(head, 1, "renumber seq")?,
            })
        }
        tag::PING | tag::BYE => {
            expect_frames(frames, 1, "ping")?;
            if head.len() != 1 {
                return Err(bad("ping or bye carries bytes"));
            }
            Ok(if t == tag::PING {
                FromSender::Ping
            } else {
                FromSender::Bye
            })
        }
        other => Err(bad(format!("unknown message type {other:#04x}"))),
    }
}

/// Decodes a gateway's message.
///
/// # Errors
/// A [`WireError`] naming the fault.
pub fn decode_from_gateway(frames: &[&[u8]]) -> Result<FromGateway, WireError> {
    let head = frames.first().copied().unwrap_or_default();
    let Some(&t) = head.first() else {
        return Err(bad("empty first frame"));
    };
    match t {
        tag::WELCOME => Ok(FromGateway::Welcome(json(frames, "welcome")?)),
        tag::REFUSED => Ok(FromGateway::Refused(json(frames, "refusal")?)),
        tag::CREDIT => {
            expect_frames(frames, 1, "credit")?;
            if head.len() != 17 {
                return Err(bad(format!("credit is {} bytes, not 17", head.len())));
            }
            Ok(FromGateway::Credit {
                acked: u64_at(head, 1, "credit acked")?,
                lost: u64_at(head, 9, "credit lost")?,
            })
        }
        other => Err(bad(format!("unknown message type {other:#04x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_head_round_trips() {
        let h = FrameHead {
            seq: 7,
            origin: 1234,
            timestamp_ns: 99,
            state_version: 3,
            skipped: 4,
            shape: vec![480, 640],
        };
        let head = encode_frame_head(&h);
        match decode_from_sender(&[&head, b"payload"]).unwrap() {
            FromSender::Frame(got, payload) => {
                assert_eq!(got, h);
                assert_eq!(payload, b"payload");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_messages_are_refused_with_what_is_wrong() {
        let h = encode_frame_head(&FrameHead {
            seq: 1,
            origin: 1,
            timestamp_ns: 1,
            state_version: 0,
            skipped: 0,
            shape: vec![4],
        });
        let cut = &h[..20];
        let mut five = h.clone();
        five[HEAD_LEN - 1] = 5;
        let long = [h.as_slice(), &[0u8; 8]].concat();
        for (frames, needle) in [
            (vec![&b""[..]], "empty"),
            (vec![&[0x7f][..]], "unknown message type"),
            (vec![cut, &b""[..]], "cut short"),
            (vec![&five[..], &b""[..]], "5 dimensions"),
            (vec![&long[..], &b""[..]], "header is"),
            (vec![&h[..]], "1 frames"),
            (
                vec![&[tag::HELLO][..], &b"{\"version\":1}"[..]],
                "hello field",
            ),
            (vec![&[tag::STATE, 1][..], &b""[..]], "state header"),
            (vec![&[tag::PING, 0][..]], "carries bytes"),
        ] {
            let e = decode_from_sender(&frames).unwrap_err();
            assert!(e.0.contains(needle), "{e} lacks {needle:?}");
        }
        let e = decode_from_gateway(&[&[tag::CREDIT, 0][..]]).unwrap_err();
        assert!(e.0.contains("credit is"), "{e}");
    }

    #[test]
    fn credits_and_json_messages_round_trip() {
        let c = encode_credit(5, 2);
        assert_eq!(
            decode_from_gateway(&[&c]).unwrap(),
            FromGateway::Credit { acked: 5, lost: 2 }
        );
        let w = Welcome {
            acked: 3,
            window: 8,
        };
        let [a, b] = encode_json(tag::WELCOME, &w);
        assert_eq!(
            decode_from_gateway(&[&a, &b]).unwrap(),
            FromGateway::Welcome(w)
        );
    }
}
