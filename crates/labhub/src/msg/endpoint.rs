//! Endpoints: which a channel accepts, and the dialable form of a bound one.

use labhub_zmq::{Context, CurveKeyPair, CurvePublicKey, Socket, SocketType};

use super::{DEFAULT_HWM, DEFAULT_MAX_MESSAGE_SIZE, MsgError};

/// The endpoint a binding channel uses when none is given: loopback, a port the system picks.
pub const DEFAULT_BIND: &str = "tcp://127.0.0.1:0";

/// The host reported for a wildcard IPv4 binding when the caller gave none.
const LOOPBACK_V4: &str = "127.0.0.1";
/// The host reported for a wildcard IPv6 binding when the caller gave none.
const LOOPBACK_V6: &str = "[::1]";

/// Refuses endpoints of transports other than `tcp://` and `ipc://` (an `inproc://` endpoint
/// cannot be registered for other processes to find).
pub(crate) fn check_transport(endpoint: &str) -> Result<(), MsgError> {
    let rest = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("ipc://"))
        .ok_or_else(|| MsgError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "only tcp:// and ipc:// endpoints can be used by a channel".to_owned(),
        })?;
    if rest.is_empty() {
        return Err(MsgError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "no address after the transport".to_owned(),
        });
    }
    Ok(())
}

/// Normalises a caller-given host for a `tcp://` endpoint: brackets an IPv6 literal, refuses
/// empty or wildcard hosts and characters that cannot appear in a host.
fn normalise_host(host: &str, bound: &str) -> Result<String, MsgError> {
    let refuse = |reason: String| MsgError::Undialable {
        bound: bound.to_owned(),
        reason,
    };
    if host.is_empty() {
        return Err(refuse("the advertised host is empty".to_owned()));
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(refuse(format!(
            "the advertised host {host:?} contains {c:?}"
        )));
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if is_wildcard(&host) {
        return Err(refuse(format!(
            "the advertised host {host:?} is a wildcard, not an address"
        )));
    }
    Ok(host)
}

fn is_wildcard(host: &str) -> bool {
    matches!(
        host,
        "*" | "0.0.0.0" | "[::]" | "[*]" | "::" | "[0:0:0:0:0:0:0:0]"
    )
}

/// The endpoint peers should dial for a socket bound at `bound` (its `ZMQ_LAST_ENDPOINT`).
///
/// A wildcard host (`0.0.0.0`, `*`, `[::]`) is replaced by `advertise_host`, else by the
/// loopback address of its family; an `ipc://` endpoint is returned as it is.
pub(crate) fn dialable(bound: &str, advertise_host: Option<&str>) -> Result<String, MsgError> {
    if bound.starts_with("ipc://") {
        return Ok(bound.to_owned());
    }
    let undialable = |reason: &str| MsgError::Undialable {
        bound: bound.to_owned(),
        reason: reason.to_owned(),
    };
    let address = bound
        .strip_prefix("tcp://")
        .ok_or_else(|| undialable("not a tcp:// or ipc:// endpoint"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| undialable("no port"))?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(undialable("no concrete port")),
        Ok(_) => {}
    }
    if host.is_empty() {
        return Err(undialable("no host"));
    }
    if !is_wildcard(host) {
        return Ok(bound.to_owned());
    }
    let host = match advertise_host {
        Some(given) => normalise_host(given, bound)?,
        None if host.starts_with('[') || host == "::" => LOOPBACK_V6.to_owned(),
        None => LOOPBACK_V4.to_owned(),
    };
    Ok(format!("tcp://{host}:{port}"))
}

/// The options of a binding channel: endpoint, advertised host, CURVE keys, limits.
#[derive(Debug, Clone)]
pub(crate) struct BindOptions {
    pub(crate) endpoint: String,
    pub(crate) advertise_host: Option<String>,
    pub(crate) curve: Option<CurveKeyPair>,
    pub(crate) hwm: u32,
    pub(crate) max_message_size: usize,
}

impl Default for BindOptions {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_BIND.to_owned(),
            advertise_host: None,
            curve: None,
            hwm: DEFAULT_HWM,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl BindOptions {
    /// A socket of `kind`, configured and bound; returns it with its dialable endpoint.
    pub(crate) fn bind(
        &self,
        context: &Context,
        kind: SocketType,
    ) -> Result<(Socket, String), MsgError> {
        let endpoint = self.endpoint.as_str();
        check_transport(endpoint)?;
        let (hwm, max_message_size) = check_limits(self.hwm, self.max_message_size)?;
        // Check the advertised host before binding, so a bad one fails without side effects.
        if let Some(host) = &self.advertise_host {
            normalise_host(host, endpoint)?;
        }
        let zmq = |op| move |e| MsgError::zmq(op, endpoint, e);
        let socket = context.socket(kind).map_err(zmq("create socket"))?;
        socket.set_sndhwm(hwm).map_err(zmq("set sndhwm"))?;
        socket.set_rcvhwm(hwm).map_err(zmq("set rcvhwm"))?;
        socket
            .set_maxmsgsize(Some(max_message_size))
            .map_err(zmq("set maxmsgsize"))?;
        if let Some(keys) = &self.curve {
            socket
                .set_curve_server_keys(&keys.secret)
                .map_err(zmq("set curve server keys"))?;
        }
        socket.bind(endpoint).map_err(zmq("bind"))?;
        let bound = socket.last_endpoint().map_err(zmq("read last endpoint"))?;
        let dialable = dialable(&bound, self.advertise_host.as_deref())?;
        Ok((socket, dialable))
    }
}

/// How a connecting channel authenticates to a CURVE server.
#[derive(Debug, Clone)]
pub(crate) struct ClientCurve {
    pub(crate) server: CurvePublicKey,
    pub(crate) keys: CurveKeyPair,
}

/// The options of a connecting channel: topics (subscribers), CURVE keys, limits.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub(crate) topics: Vec<Vec<u8>>,
    pub(crate) curve: Option<ClientCurve>,
    pub(crate) hwm: u32,
    pub(crate) max_message_size: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            curve: None,
            hwm: DEFAULT_HWM,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl ConnectOptions {
    /// A socket of `kind`, configured, watched by a monitor (see [`super::link`]) and
    /// connected to `endpoint`.
    pub(crate) fn connect(
        &self,
        context: &Context,
        kind: SocketType,
        endpoint: &str,
    ) -> Result<Socket, MsgError> {
        check_transport(endpoint)?;
        let (hwm, max_message_size) = check_limits(self.hwm, self.max_message_size)?;
        let zmq = |op| move |e| MsgError::zmq(op, endpoint, e);
        let mut socket = context.socket(kind).map_err(zmq("create socket"))?;
        socket.set_sndhwm(hwm).map_err(zmq("set sndhwm"))?;
        socket.set_rcvhwm(hwm).map_err(zmq("set rcvhwm"))?;
        socket
            .set_maxmsgsize(Some(max_message_size))
            .map_err(zmq("set maxmsgsize"))?;
        if let Some(curve) = &self.curve {
            socket
                .set_curve_client_keys(&curve.server, &curve.keys.public, &curve.keys.secret)
                .map_err(zmq("set curve client keys"))?;
        }
        // Before connecting, so no event of this connection is missed.
        socket.enable_monitor().map_err(zmq("enable monitor"))?;
        socket.connect(endpoint).map_err(zmq("connect"))?;
        Ok(socket)
    }
}

/// Checks the queue and size limits and returns them as libzmq takes them.
fn check_limits(hwm: u32, max_message_size: usize) -> Result<(i32, u64), MsgError> {
    let hwm =
        i32::try_from(hwm)
            .ok()
            .filter(|&h| h > 0)
            .ok_or_else(|| MsgError::InvalidOption {
                option: "hwm",
                value: hwm.to_string(),
                expected: "1 to 2147483647 messages",
            })?;
    let size = u64::try_from(max_message_size)
        .ok()
        .filter(|&s| s > 0 && i64::try_from(s).is_ok())
        .ok_or_else(|| MsgError::InvalidOption {
            option: "max_message_size",
            value: max_message_size.to_string(),
            expected: "1 to 2^63-1 bytes",
        })?;
    Ok((hwm, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concrete_tcp_endpoint_is_reported_as_it_is() {
        assert_eq!(
            dialable("tcp://127.0.0.1:5555", None).unwrap(),
            "tcp://127.0.0.1:5555"
        );
        assert_eq!(
            dialable("tcp://10.1.2.3:5555", Some("192.168.0.1")).unwrap(),
            "tcp://10.1.2.3:5555"
        );
    }

    #[test]
    fn a_wildcard_host_becomes_the_given_host_or_loopback() {
        assert_eq!(
            dialable("tcp://0.0.0.0:5555", None).unwrap(),
            "tcp://127.0.0.1:5555"
        );
        assert_eq!(
            dialable("tcp://0.0.0.0:5555", Some("lab-pc.local")).unwrap(),
            "tcp://lab-pc.local:5555"
        );
        assert_eq!(
            dialable("tcp://[::]:5555", None).unwrap(),
            "tcp://[::1]:5555"
        );
        assert_eq!(
            dialable("tcp://[::]:5555", Some("fe80::1")).unwrap(),
            "tcp://[fe80::1]:5555"
        );
        assert_eq!(
            dialable("tcp://*:5555", Some("10.0.0.7")).unwrap(),
            "tcp://10.0.0.7:5555"
        );
    }

    #[test]
    fn ipc_endpoints_are_reported_as_they_are() {
        assert_eq!(
            dialable("ipc:///tmp/x.sock", Some("h")).unwrap(),
            "ipc:///tmp/x.sock"
        );
    }

    #[test]
    fn an_endpoint_without_a_concrete_port_or_host_is_undialable() {
        for bound in [
            "tcp://0.0.0.0:0",
            "tcp://127.0.0.1",
            "tcp://:80",
            "inproc://x",
        ] {
            assert!(
                matches!(dialable(bound, None), Err(MsgError::Undialable { .. })),
                "{bound}"
            );
        }
    }

    #[test]
    fn a_wildcard_or_malformed_advertised_host_is_refused() {
        for host in ["", "0.0.0.0", "*", "::", "a b", "h/x"] {
            assert!(
                matches!(
                    dialable("tcp://0.0.0.0:5555", Some(host)),
                    Err(MsgError::Undialable { .. })
                ),
                "{host:?}"
            );
        }
    }

    #[test]
    fn limits_out_of_range_are_invalid_options_naming_the_option() {
        assert_eq!(check_limits(1, 1).unwrap(), (1, 1));
        for (hwm, size, option) in [
            (0, 1, "hwm"),
            (u32::MAX, 1, "hwm"),
            (1, 0, "max_message_size"),
        ] {
            match check_limits(hwm, size) {
                Err(MsgError::InvalidOption { option: o, .. }) => assert_eq!(o, option),
                other => panic!("{hwm} {size}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_tcp_and_ipc_transports_are_accepted() {
        assert!(check_transport("tcp://127.0.0.1:1").is_ok());
        assert!(check_transport("ipc:///tmp/a").is_ok());
        for bad in ["inproc://a", "udp://1.2.3.4:5", "127.0.0.1:5", "tcp://"] {
            assert!(
                matches!(check_transport(bad), Err(MsgError::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
    }
}
