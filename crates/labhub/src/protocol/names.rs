//! Validated strings of the wire: channel names, client ids, endpoints, segment names.
//!
//! Each newtype can only hold a value that passed its check, and deserialises through the same
//! check, so a decoded message never carries an unchecked name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 128;
/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// Longest endpoint, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 256;
/// Longest shared-memory segment name, in bytes (Linux `NAME_MAX`).
pub const MAX_SHM_NAME_LEN: usize = 255;
/// Longest `ipc://` path, in bytes (`sun_path` is 108 bytes with its terminating zero).
pub const MAX_IPC_PATH_LEN: usize = 107;

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

fn check_charset(
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

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $check:path) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
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
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        // Ord and Hash are those of the inner String, so borrowing as str is consistent.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

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

fn check_client_id(s: &str) -> Result<(), NameError> {
    check_charset(
        "client id",
        s,
        MAX_CLIENT_ID_LEN,
        "ASCII letters, digits, '_', '-', '.', ':', '@'",
        |c| name_char(c) || matches!(c, ':' | '@'),
    )
}

fn check_shm_name(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "segment name";
    check_charset(
        WHAT,
        s,
        MAX_SHM_NAME_LEN,
        "'/' then ASCII letters, digits, '_', '-', '.'",
        |c| name_char(c) || c == '/',
    )?;
    let invalid = |problem| NameError::Invalid {
        what: WHAT,
        value: s.to_owned(),
        problem,
    };
    let rest = s
        .strip_prefix("/labhub.")
        .ok_or_else(|| invalid("must have the form /labhub.<uid>.<channel>"))?;
    let (uid, channel) = rest
        .split_once('.')
        .ok_or_else(|| invalid("must have the form /labhub.<uid>.<channel>"))?;
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) || uid.parse::<u32>().is_err() {
        return Err(invalid("the uid part must be a decimal user id"));
    }
    if check_channel_name(channel).is_err() {
        return Err(invalid("the channel part must be a valid channel name"));
    }
    Ok(())
}

fn check_endpoint(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "endpoint";
    check_charset(
        WHAT,
        s,
        MAX_ENDPOINT_LEN,
        "printable ASCII without spaces",
        |c| c.is_ascii_graphic(),
    )?;
    let invalid = |problem| NameError::Invalid {
        what: WHAT,
        value: s.to_owned(),
        problem,
    };
    if s.contains('*') {
        return Err(invalid(
            "a wildcard is not dialable; register a concrete address",
        ));
    }
    if s.contains(';') {
        return Err(invalid(
            "a source-address or interface prefix is not allowed",
        ));
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        let (host, port) = if let Some(v6) = addr.strip_prefix('[') {
            let (host, rest) = v6
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address needs a closing ']'"))?;
            let port = rest
                .strip_prefix(':')
                .ok_or_else(|| invalid("a tcp endpoint needs :<port>"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("the bracketed host is not an IPv6 address"));
            }
            (host, port)
        } else {
            addr.rsplit_once(':')
                .ok_or_else(|| invalid("a tcp endpoint needs host:port"))?
        };
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            if ip.is_unspecified() {
                return Err(invalid(
                    "an unspecified address (0.0.0.0 or ::) is not dialable; register a concrete address",
                ));
            }
        } else if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        {
            return Err(invalid("the host is neither an IP address nor a DNS name"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err(invalid("the port must be a number from 1 to 65535")),
        }
    } else if let Some(path) = s.strip_prefix("ipc://") {
        if path.is_empty() {
            return Err(invalid("the ipc path is empty"));
        }
        if path.len() > MAX_IPC_PATH_LEN {
            return Err(invalid("the ipc path is longer than 107 bytes"));
        }
        if !(path.starts_with('/') || path.starts_with('@')) {
            return Err(invalid(
                "the ipc path must be absolute (or '@' for the abstract namespace)",
            ));
        }
        Ok(())
    } else {
        Err(invalid(
            "only tcp:// and ipc:// endpoints can be registered",
        ))
    }
}

string_newtype!(
    /// A channel name: 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`, but not `.`
    /// or `..` (the rule of [`crate::shm`] channel names).
    ///
    /// ```
    /// use labhub::protocol::ChannelName;
    /// assert!(ChannelName::new("cam0.frames").is_ok());
    /// assert!(ChannelName::new("../etc").is_err());
    /// ```
    ChannelName,
    check_channel_name
);

string_newtype!(
    /// A client id chosen by the client (for example `host:pid:start`): 1 to 128 bytes of
    /// ASCII letters, digits and `_ - . : @`.
    ClientId,
    check_client_id
);

string_newtype!(
    /// A dialable ZeroMQ endpoint: `tcp://host:port` with a concrete host (no `*`, no
    /// `0.0.0.0`, no `::`) and a port from 1 to 65535, or `ipc:///absolute/path`.
    ///
    /// ```
    /// use labhub::protocol::Endpoint;
    /// assert!(Endpoint::new("tcp://127.0.0.1:6000").is_ok());
    /// assert!(Endpoint::new("tcp://0.0.0.0:6000").is_err());
    /// assert!(Endpoint::new("tcp://*:6000").is_err());
    /// ```
    Endpoint,
    check_endpoint
);

string_newtype!(
    /// A shared-memory segment name of labhub's namespace: `/labhub.<uid>.<channel>`.
    ShmName,
    check_shm_name
);

impl ShmName {
    /// The user id embedded in the name.
    pub fn uid(&self) -> u32 {
        // The check guarantees the shape, so the parse cannot fail.
        self.0["/labhub.".len()..]
            .split_once('.')
            .and_then(|(uid, _)| uid.parse().ok())
            .unwrap_or(u32::MAX)
    }

    /// The channel part of the name.
    pub fn channel_part(&self) -> &str {
        self.0["/labhub.".len()..]
            .split_once('.')
            .map_or("", |(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_accept_the_documented_charset_only() {
        for ok in ["a", "cam0", "Cam_0-x.y", "_x", ".hidden", &"x".repeat(128)] {
            assert!(ChannelName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(129), "a\0"] {
            assert!(ChannelName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints_must_be_dialable() {
        for ok in [
            "tcp://127.0.0.1:1",
            "tcp://localhost:65535",
            "tcp://[::1]:5000",
            "ipc:///tmp/x.sock",
            "ipc://@abstract",
        ] {
            assert!(Endpoint::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "tcp://*:5000",
            "tcp://0.0.0.0:5000",
            "tcp://[::]:5000",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:*",
            "tcp://127.0.0.1:70000",
            "tcp://127.0.0.1",
            "tcp://:5",
            "tcp://eth0;127.0.0.1:5",
            "ipc://relative",
            "inproc://x",
            "udp://1.2.3.4:5",
            "",
        ] {
            assert!(Endpoint::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segment_names_are_confined_to_the_labhub_namespace() {
        let n = ShmName::new("/labhub.1000.cam0").unwrap();
        assert_eq!(n.uid(), 1000);
        assert_eq!(n.channel_part(), "cam0");
        for bad in [
            "labhub.1000.cam0",
            "/labhub.x.cam0",
            "/labhub.1000.",
            "/other.1000.cam0",
            "/labhub.1000./etc",
            "/labhub.99999999999.c",
        ] {
            assert!(ShmName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_name_deserialises_to_an_error_naming_the_problem() {
        let err = serde_json::from_str::<ChannelName>("\"a b\"").unwrap_err();
        assert!(err.to_string().contains("channel name"), "{err}");
    }
}
