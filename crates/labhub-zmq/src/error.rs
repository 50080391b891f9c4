//! The error type of every fallible operation in this crate.

use std::ffi::{CStr, c_int};

use labhub_zmq_sys as sys;

/// What went wrong in a libzmq call or in the arguments given to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZmqError {
    /// libzmq reported an error.
    #[error("{op}{} failed: {message} (errno {errno})", fmt_detail(detail))]
    Call {
        /// The libzmq function or wrapper operation, e.g. `"zmq_bind"`.
        op: &'static str,
        /// What the call was about (an endpoint, an option name), empty if nothing.
        detail: String,
        /// The libzmq error code (`zmq_errno()`).
        errno: i32,
        /// libzmq's description of `errno`.
        message: String,
    },
    /// An argument was refused before calling libzmq.
    #[error("{op}: invalid {what}: {reason}")]
    InvalidArgument {
        /// The operation that refused it.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Z85 text or a CURVE key was malformed.
    #[error(transparent)]
    Z85(#[from] Z85Error),
}

fn fmt_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" {detail}")
    }
}

/// Malformed Z85 text, Z85 input or CURVE key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Z85Error {
    /// Z85 encodes groups of 4 bytes.
    #[error("z85 encoding needs a multiple of 4 bytes, found {found}")]
    EncodeLength {
        /// Length of the input.
        found: usize,
    },
    /// Z85 text comes in groups of 5 characters.
    #[error("z85 text must be a multiple of 5 characters long, found {found}")]
    DecodeLength {
        /// Length of the text in bytes.
        found: usize,
    },
    /// A character outside the Z85 alphabet.
    #[error("invalid z85 character {character:?} at byte {position}")]
    InvalidCharacter {
        /// Byte offset in the text.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// A group of 5 characters that decodes to more than 32 bits.
    #[error("z85 group at byte {position} exceeds 32 bits")]
    Overflow {
        /// Byte offset of the group in the text.
        position: usize,
    },
    /// A CURVE key is 32 bytes, written as 40 Z85 characters.
    #[error("a curve key is {expected} {unit}, found {found}")]
    KeyLength {
        /// 32 (bytes) or 40 (characters).
        expected: usize,
        /// `"bytes"` or `"z85 characters"`.
        unit: &'static str,
        /// What was given.
        found: usize,
    },
}

impl ZmqError {
    /// The libzmq error code, if libzmq reported this error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// `EAGAIN`: nothing to receive or no room to send without blocking (`DONTWAIT`), or a
    /// receive/send timeout expired. libzmq reports both alike.
    pub fn is_again(&self) -> bool {
        self.errno() == Some(sys::EAGAIN)
    }

    /// A receive or send timeout (`RCVTIMEO`/`SNDTIMEO`) expired; the same as [`Self::is_again`],
    /// named for readability at call sites that use timeouts.
    pub fn is_timeout(&self) -> bool {
        self.is_again()
    }

    /// `ETERM`: the context was shut down; close the socket.
    pub fn is_term(&self) -> bool {
        self.errno() == Some(sys::ETERM)
    }

    /// `EHOSTUNREACH`: a ROUTER with `ROUTER_MANDATORY` has no peer with that routing id.
    pub fn is_host_unreachable(&self) -> bool {
        self.errno() == Some(sys::EHOSTUNREACH)
    }

    /// `EFSM`: the operation is not allowed in the socket's state (e.g. a REQ sending twice).
    pub fn is_wrong_state(&self) -> bool {
        self.errno() == Some(sys::EFSM)
    }

    /// The error of the libzmq call `op` that just failed on this thread.
    pub(crate) fn last(op: &'static str, detail: impl Into<String>) -> Self {
        // SAFETY: zmq_errno has no preconditions; it reads a thread-local.
        let errno = unsafe { sys::zmq_errno() };
        Self::from_errno(op, detail.into(), errno)
    }

    pub(crate) fn from_errno(op: &'static str, detail: String, errno: c_int) -> Self {
        Self::Call {
            op,
            detail,
            errno,
            message: strerror(errno),
        }
    }

    pub(crate) fn invalid(op: &'static str, what: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            what,
            reason: reason.into(),
        }
    }
}

/// libzmq's description of an error code.
pub(crate) fn strerror(errno: c_int) -> String {
    // SAFETY: zmq_strerror accepts any value and returns a pointer to a static NUL-terminated
    // string (libzmq's table or the C library's strerror buffer), never null.
    let ptr = unsafe { sys::zmq_strerror(errno) };
    if ptr.is_null() {
        return format!("unknown error {errno}");
    }
    // SAFETY: non-null, NUL-terminated, valid for the duration of this call.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The last errno of this thread, for retry decisions.
pub(crate) fn last_errno() -> c_int {
    // SAFETY: zmq_errno has no preconditions; it reads a thread-local.
    unsafe { sys::zmq_errno() }
}
