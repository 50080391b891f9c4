//! Validated strings of the wire: channel names, client ids, endpoints, segment names.
//!
//! Each newtype can only hold a value that passed its check, and deserialises through the same
//! check, so a decoded message never carries an unchecked name.

pub use crate::name::{ChannelName, MAX_CHANNEL_NAME_LEN, NameError};
use crate::name::{check_charset, name_char, string_newtype};

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// Longest endpoint, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 256;
/// Longest shared-memory segment name, in bytes (Linux `NAME_MAX`).
pub const MAX_SHM_NAME_LEN: usize = 255;
/// Longest `ipc://` path, in bytes (`sun_path` is 108 bytes with its terminating zero).
pub const MAX_IPC_PATH_LEN: usize = 107;

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
    crate::name::split_segment_name(s)
        .map(|_| ())
        .map_err(|problem| NameError::Invalid {
            what: WHAT,
            value: s.to_owned(),
            problem,
        })
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
    /// The segment name of `channel` for the current user (`/labhub.<uid>.<channel>`).
    pub fn of(channel: &ChannelName) -> Self {
        Self(channel.segment_name())
    }

    /// The user id embedded in the name.
    pub fn uid(&self) -> u32 {
        // The check guarantees the shape, so the split cannot fail.
        crate::name::split_segment_name(&self.0).map_or(u32::MAX, |(uid, _)| uid)
    }

    /// The channel part of the name.
    pub fn channel_part(&self) -> &str {
        // `/labhub`, the uid, then the channel (which may itself contain dots).
        self.0.splitn(3, '.').nth(2).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
