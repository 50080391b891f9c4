//! The exit codes of `labhub`, one table for every command. Scripts may rely on them.
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`OK`] | success (also when stdout was closed early: a broken pipe) |
//! | 1 | [`FAILURE`] | a runtime failure (the error and its causes are printed on stderr) |
//! | 2 | [`USAGE`] | a usage error: unknown flag, bad value; nothing was done |
//! | 3 | [`UNREACHABLE`] | no reply in time: the broker (not running, wrong endpoint or key, not admitted), the server of `call`, or the metrics endpoint of `top` |
//! | 4 | [`NOT_FOUND`] | the channel named does not exist |

use labhub::client::ClientError;
use labhub::protocol::ErrorCode;

/// Success.
pub const OK: u8 = 0;
/// A runtime failure.
pub const FAILURE: u8 = 1;
/// A usage error (clap's own code for bad arguments as well).
pub const USAGE: u8 = 2;
/// The broker did not answer within the timeout.
pub const UNREACHABLE: u8 = 3;
/// The channel does not exist.
pub const NOT_FOUND: u8 = 4;

/// The table as `--help` shows it.
pub const HELP: &str = "\
Exit codes:
  0  success (a closed stdout, e.g. `labhub ls | head -1`, is success too)
  1  runtime failure (the error and its causes are printed on stderr)
  2  usage error (bad flag or value; nothing was done)
  3  no reply within the timeout (broker unreachable, `call`'s server silent, or
     no metrics endpoint for `top`)
  4  channel not found";

/// Bad input found while validating the arguments, before any side effect.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Nothing answered where the user said a server would be (the metrics endpoint of `top`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// A channel the user named does not exist.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel} not found")]
pub struct NotFound {
    /// The channel.
    pub channel: String,
}

/// Whether the error chain ends in a closed stdout.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for `error`: the first cause in its chain that has a code of its own decides.
pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(labhub::msg::MsgError::Timeout { .. }) = cause.downcast_ref() {
            return UNREACHABLE;
        }
        if cause.is::<Unreachable>() {
            return UNREACHABLE;
        }
        if cause.is::<UsageError>() {
            return USAGE;
        }
        if cause.is::<NotFound>() {
            return NOT_FOUND;
        }
        if let Some(labhub::shm::ChannelError::NotFound { .. }) = cause.downcast_ref() {
            return NOT_FOUND;
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            match e {
                ClientError::Timeout { .. } => return UNREACHABLE,
                ClientError::Refused {
                    code: ErrorCode::NotFound,
                    ..
                } => return NOT_FOUND,
                ClientError::InvalidName(_) => return USAGE,
                _ => {}
            }
        }
    }
    FAILURE
}
