//! Channel names: the one validated name type used by shared-memory channels, the broker's
//! protocol and the Hub client, and the operating-system name of a channel's segment.
//!
//! A channel name is 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`, but not `.` or
//! `..`. The segment of channel `c` created by the user with id `u` is the POSIX shared-memory
//! object `/labhub.<u>.<c>` ([`ChannelName::segment_name`]); this module is the only place
//! that spells that form.
//!
//! ```
//! use labhub::name::ChannelName;
//! let name = ChannelName::new("cam0.frames")?;
//! assert_eq!(name.as_str(), "cam0.frames");
//! assert!(ChannelName::new("../etc").is_err());
//! # Ok::<(), labhub::name::NameError>(())
//! ```
#![deny(unsafe_code)]

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 128;

/// What every segment name of labhub's namespace starts with.
const SEGMENT_PREFIX: &str = "/labhub.";

/// Why a string was refused as a name or endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The string was empty.
    #[error("{what} is empty")]
    Empty {
        /// What kind of name it was.
        what: &'static str,
    },
    /// The string was longer than allowed.
    #[error("{what} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// What kind of name it was.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string held a character outside the allowed set.
    #[error("{what} {value:?} contains {found:?}; allowed: {allowed}")]
    BadCharacter {
        /// What kind of name it was.
        what: &'static str,
        /// The offending value (truncated to the limit).
        value: String,
        /// The first character not allowed.
        found: char,
        /// The allowed set, in words.
        allowed: &'static str,
    },
    /// The string was well formed character by character but its shape is wrong.
    #[error("{what} {value:?} is not valid: {problem}")]
    Invalid {
        /// What kind of name it was.
        what: &'static str,
        /// The offending value (truncated to the limit).
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

fn truncated(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Checks that `s` is 1 to `max` bytes of characters `ok` accepts.
pub(crate) fn check_charset(
    what: &'static str,
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    if let Some(found) = s.chars().find(|&c| !ok(c)) {
        return Err(NameError::BadCharacter {
            what,
            value: truncated(s, max),
            found,
            allowed,
        });
    }
    Ok(())
}

/// The characters of a channel name.
pub(crate) fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A string newtype that can only hold a value that passed `$check`, deserialising through the
/// same check.
macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $check:path) => {
        $(#[$m])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s` and wraps it.
            ///
            /// # Errors
            /// [`NameError`](crate::name::NameError) naming what is wrong with `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, $crate::name::NameError> {
                let s = s.into();
                $check(&s)?;
                Ok(Self(s))
            }

            /// The checked string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::name::NameError;
            fn try_from(s: String) -> Result<Self, $crate::name::NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::name::NameError;
            fn try_from(s: &str) -> Result<Self, $crate::name::NameError> {
                Self::new(s)
            }
        }

        // Ord and Hash are those of the inner String, so borrowing as str is consistent.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::name::NameError;
            fn from_str(s: &str) -> Result<Self, $crate::name::NameError> {
                Self::new(s)
            }
        }
    };
}
#[cfg(feature = "zmq")]
pub(crate) use string_newtype;

fn check_channel_name(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "channel name";
    check_charset(
        WHAT,
        s,
        MAX_CHANNEL_NAME_LEN,
        "ASCII letters, digits, '_', '-', '.'",
        name_char,
    )?;
    if s == "." || s == ".." {
        return Err(NameError::Invalid {
            what: WHAT,
            value: s.to_owned(),
            problem: "'.' and '..' are reserved",
        });
    }
    Ok(())
}

string_newtype!(
    /// A channel name: 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`, but not `.`
    /// or `..`. Shared-memory channels, the broker and the Hub client all take this type, so a
    /// name is checked once, by one rule.
    ///
    /// ```
    /// use labhub::name::ChannelName;
    /// assert!(ChannelName::new("cam0.frames").is_ok());
    /// assert!(ChannelName::new("../etc").is_err());
    /// ```
    ChannelName,
    check_channel_name
);

impl ChannelName {
    /// The POSIX shared-memory name of this channel's segment for the current user:
    /// `/labhub.<uid>.<name>` (on Linux the file `/dev/shm/labhub.<uid>.<name>`).
    pub fn segment_name(&self) -> String {
        segment_name_of(crate::sys::getuid(), self.as_str())
    }
}

/// `/labhub.<uid>.<channel>`, the segment name of `channel` in the namespace of user `uid`.
pub(crate) fn segment_name_of(uid: u32, channel: &str) -> String {
    format!("{SEGMENT_PREFIX}{uid}.{channel}")
}

/// The namespace prefix of user `uid`'s segments: `/labhub.<uid>.`.
#[cfg(feature = "broker")]
pub(crate) fn segment_prefix_of(uid: u32) -> String {
    format!("{SEGMENT_PREFIX}{uid}.")
}

/// Splits a segment name of labhub's namespace into its uid and channel parts, or explains
/// why it is not one.
#[cfg(any(test, feature = "zmq"))]
pub(crate) fn split_segment_name(s: &str) -> Result<(u32, ChannelName), &'static str> {
    const SHAPE: &str = "must have the form /labhub.<uid>.<channel>";
    let rest = s.strip_prefix(SEGMENT_PREFIX).ok_or(SHAPE)?;
    let (uid, channel) = rest.split_once('.').ok_or(SHAPE)?;
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the uid part must be a decimal user id");
    }
    let uid = uid
        .parse::<u32>()
        .map_err(|_| "the uid part must be a decimal user id")?;
    let channel =
        ChannelName::new(channel).map_err(|_| "the channel part must be a valid channel name")?;
    Ok((uid, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_accept_the_documented_charset_only() {
        for ok in ["a", "cam0", "Cam_0-x.y", "_x", ".hidden", &"x".repeat(128)] {
            assert!(ChannelName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "é",
            &"x".repeat(129),
            "a\0",
            "a@b",
        ] {
            assert!(ChannelName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_segment_name_is_the_users_namespace_and_splits_back() {
        let n = ChannelName::new("cam0").unwrap();
        let uid = crate::sys::getuid();
        assert_eq!(n.segment_name(), format!("/labhub.{uid}.cam0"));
        assert_eq!(split_segment_name(&n.segment_name()), Ok((uid, n)));
        // Malformed names: `protocol::names` tests them through `ShmName`.
        assert!(split_segment_name("/labhub.1000./etc").is_err());
    }

    #[test]
    fn a_bad_name_deserialises_to_an_error_naming_the_problem() {
        let err = serde_json::from_str::<ChannelName>("\"a b\"").unwrap_err();
        assert!(err.to_string().contains("channel name"), "{err}");
    }
}
