//! The messages of the broker's grant socket (docs/PROTOCOL.md, "Broker-granted shared
//! memory"): a Unix `SOCK_SEQPACKET` socket on which a client redeems a ticket from a `grant`
//! reply for a memfd channel's descriptors (`SCM_RIGHTS`), and a producer hands the broker its
//! segment.
//!
//! Each message is one datagram of at most [`MAX_GRANT_MESSAGE`] bytes: a UTF-8 JSON object.
#![deny(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::messages::{ErrorCode, Role, Status};
use super::names::ChannelName;

/// Largest message on the grant socket, in bytes.
pub const MAX_GRANT_MESSAGE: usize = 4096;
/// Length of a ticket: 32 random bytes as 64 hexadecimal digits.
pub const TICKET_HEX_LEN: usize = 64;

/// What a client sends on the grant socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum GrantMessage {
    /// The first message of a connection: a ticket from a `grant` reply, for the channel and
    /// role it was issued for.
    Redeem {
        /// The ticket, 64 hexadecimal digits.
        ticket: String,
        /// The channel.
        name: ChannelName,
        /// The role.
        role: Role,
    },
    /// A producer's second message: the channel's segment, as two descriptors (control, then
    /// data) attached with `SCM_RIGHTS`.
    Provide {
        /// The channel.
        name: ChannelName,
    },
}

/// What the broker answers each message with; it closes the connection after an error, after
/// a consumer's descriptors and after a producer's `provide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GrantAnswer {
    /// `ok` or `error`.
    pub status: Status,
    /// `none`, or what went wrong (`invalid_ticket`, `access_denied`, …).
    pub error_code: ErrorCode,
    /// Empty, or for people.
    pub message: String,
    /// Descriptors attached to this answer: 0, or 2 (control, then data).
    pub descriptors: u32,
}

impl GrantAnswer {
    /// A success carrying `descriptors` descriptors.
    pub fn ok(descriptors: u32) -> Self {
        Self {
            status: Status::Ok,
            error_code: ErrorCode::None,
            message: String::new(),
            descriptors,
        }
    }

    /// A refusal.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: Status::Error,
            error_code: code,
            message: message.into(),
            descriptors: 0,
        }
    }
}
