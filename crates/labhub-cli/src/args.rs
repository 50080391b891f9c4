//! Validated values of the command line, shared by every command.
//!
//! Each numeric, duration, size, endpoint, name, path and key flag is parsed by one of the clap
//! value parsers here, with the range that flag allows. A value outside it is a clap usage
//! error at parse time (exit code 2, nothing done) whose message names the flag, the value and
//! the allowed range, so no later arithmetic can overflow, panic or hang on it. A new flag picks
//! the parser of its kind and states its own bounds:
//!
//! ```ignore
//! /// How long to wait for the server (1ms to 1day).
//! #[arg(long, default_value = "5s", value_parser = args::duration(args::MILLISECOND..=args::DAY))]
//! wait: Duration,
//! /// Largest message accepted (1KiB to 1GiB).
//! #[arg(long, default_value = "64MiB", value_parser = args::size(1 << 10..=1 << 30))]
//! max_message_size: u64,
//! ```
//!
//! Sizes take binary suffixes, as people read them: `k`, `K`, `Ki` and `KiB` are 1024 bytes
//! (and `M`/`Mi`/`MiB`, `G`/`Gi`/`GiB` its powers); only the explicit decimal forms `kB`, `MB`
//! and `GB` mean powers of 1000. Letters are case-insensitive.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::{Component, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use labhub::keys::{self, PublicKey};
use labhub::protocol::{ChannelName, Endpoint, MAX_ENDPOINT_LEN, MAX_IPC_PATH_LEN, NameError};

/// The largest `--max-message-size` of `sub` and `call`: 1 TiB.
pub const MAX_MESSAGE_SIZE: u64 = 1 << 40;
/// One millisecond.
pub const MILLISECOND: Duration = Duration::from_millis(1);
/// Ten milliseconds: the shortest sampling interval.
pub const TEN_MS: Duration = Duration::from_millis(10);
/// One hour.
pub const HOUR: Duration = Duration::from_secs(3600);
/// One day: the longest timeout or interval any command takes.
pub const DAY: Duration = Duration::from_secs(86_400);
/// One day, in seconds.
pub const DAY_SECONDS: f64 = 86_400.0;
/// 365 days, in seconds: the longest run of a command that otherwise runs until Ctrl-C.
pub const YEAR_SECONDS: f64 = 365.0 * DAY_SECONDS;
/// Longest path accepted (Linux `PATH_MAX` less its terminating zero).
pub const MAX_PATH_LEN: usize = 4095;
/// Longest path component accepted (Linux `NAME_MAX`).
pub const MAX_PATH_COMPONENT_LEN: usize = 255;
/// Most subscribers `pub --wait-subscribers` waits for.
pub const MAX_SUBSCRIBERS_WAITED: usize = 100_000;

/// Longest key of a `--attr KEY=VALUE`.
pub const MAX_ATTR_KEY_LEN: usize = 64;
/// Longest value of a `--attr KEY=VALUE`.
pub const MAX_ATTR_VALUE_LEN: usize = 4096;

/// A `KEY=VALUE` attribute: KEY 1 to 64 characters of `[A-Za-z0-9_.-]`, VALUE at most 4096
/// bytes without control characters (stored as a string).
pub fn attribute(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE".to_owned())?;
    if key.is_empty()
        || key.len() > MAX_ATTR_KEY_LEN
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "the key must be 1 to {MAX_ATTR_KEY_LEN} characters of A-Z a-z 0-9 _ . -"
        ));
    }
    if value.len() > MAX_ATTR_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(format!(
            "the value must be at most {MAX_ATTR_VALUE_LEN} bytes without control characters"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A delivery mode: `lossless`, `latest`, `queue:N`, `every:K`, `max-rate:HZ`.
pub fn delivery_mode(text: &str) -> Result<labhub::shm::DeliveryMode, String> {
    text.parse()
        .map_err(|e: labhub::shm::DeliveryParseError| e.to_string())
}

/// A replay rate: `max` or a factor `1x`, `2x`, `0.5x` (above 0, at most 1000).
pub fn rate(text: &str) -> Result<labhub::record::Rate, String> {
    text.parse()
        .map_err(|e: labhub::record::RateParseError| e.to_string())
}

/// A clap value parser: a function from the argument's text to its value or a message.
pub trait Parser<T>: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {}
impl<T, F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static> Parser<T> for F {}

/// A whole number within `range` (decimal digits, optionally signed for signed types).
pub fn integer<T>(range: RangeInclusive<T>) -> impl Parser<T>
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |text| {
        let expected = || {
            format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            )
        };
        let value: T = text.parse().map_err(|_| expected())?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(expected())
        }
    }
}

/// `0` (which the flag gives a meaning of its own), or a finite number within `range`.
pub fn zero_or_number(range: RangeInclusive<f64>) -> impl Parser<f64> {
    move |text| {
        parse_finite(text)
            .filter(|v| *v == 0.0 || range.contains(v))
            .ok_or_else(|| {
                format!(
                    "expected 0 or a number from {} to {}",
                    range.start(),
                    range.end()
                )
            })
    }
}

/// A number of seconds within `range` (a decimal number such as `2.5`).
pub fn seconds(range: RangeInclusive<f64>) -> impl Parser<f64> {
    move |text| {
        parse_finite(text)
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                format!(
                    "expected a number of seconds from {} to {}",
                    range.start(),
                    range.end()
                )
            })
    }
}

fn parse_finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A duration within `range`: `500ms`, `2s`, `1m`, `1h 30m`… (humantime), or a bare decimal
/// number of seconds (`0.25`; a positive one below a nanosecond, such as `1e-300`, is refused).
pub fn duration(range: RangeInclusive<Duration>) -> impl Parser<Duration> {
    move |text| {
        let expected = || {
            format!(
                "expected a duration from {} to {} (e.g. 500ms, 2s, 1m; a bare number is seconds)",
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            )
        };
        let value = match text.parse::<f64>() {
            // A positive number too small for a nanosecond is refused rather than taken as 0.
            Ok(secs) => Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !(d.is_zero() && secs > 0.0))
                .ok_or_else(expected)?,
            Err(_) => humantime::parse_duration(text).map_err(|_| expected())?,
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(expected())
        }
    }
}

/// A byte count within `range`: digits with an optional unit (see the [module docs](self)).
pub fn size(range: RangeInclusive<u64>) -> impl Parser<u64> {
    move |text| {
        let expected = || {
            format!(
                "expected a size from {} to {} bytes (e.g. 4096, 64KiB, 64k = 65536, 1MiB; kB, MB, GB are powers of 1000)",
                range.start(),
                range.end()
            )
        };
        let value = parse_size(text).ok_or_else(expected)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(expected())
        }
    }
}

/// `text` as bytes: digits, optional blanks, an optional unit; `None` if malformed or too large.
fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mi" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gi" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// A channel name (1 to 128 bytes of ASCII letters, digits, `_`, `-`, `.`; not `.` or `..`).
pub fn channel_name(text: &str) -> Result<String, String> {
    ChannelName::new(text)
        .map(String::from)
        .map_err(|e| e.to_string())
}

/// The start of channel names: what a channel name may hold, possibly `.` or `..`.
pub fn channel_prefix(text: &str) -> Result<String, String> {
    match ChannelName::new(text) {
        Ok(_) | Err(NameError::Invalid { .. }) => Ok(text.to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// An endpoint to connect to: `tcp://HOST:PORT` or `ipc:///PATH` (at most 107 bytes of path).
/// A wildcard bind address (`tcp://*:P`, `tcp://0.0.0.0:P`) is dialled on 127.0.0.1.
pub fn connect_endpoint(text: &str) -> Result<String, String> {
    let dialable = dialable(text);
    Endpoint::new(dialable.as_str())
        .map(String::from)
        .map_err(|e| format!("{e} (expected tcp://HOST:PORT or ipc:///PATH)"))
}

/// A tcp bind address made dialable on this machine (`*` and `0.0.0.0` are not dialable).
pub fn dialable(endpoint: &str) -> String {
    for wildcard in ["tcp://*:", "tcp://0.0.0.0:"] {
        if let Some(port) = endpoint.strip_prefix(wildcard) {
            return format!("tcp://127.0.0.1:{port}");
        }
    }
    endpoint.to_owned()
}

/// An endpoint to bind: `tcp://HOST:PORT` (port 0 to 65535, or `*` for a free one) or
/// `ipc://PATH` (1 to 107 bytes).
pub fn bind_endpoint(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{why} (expected tcp://HOST:PORT, tcp://HOST:*, or ipc://PATH)"
        ))
    };
    if text.len() > MAX_ENDPOINT_LEN {
        return bad(&format!(
            "the endpoint is {} bytes long, the limit is {MAX_ENDPOINT_LEN}",
            text.len()
        ));
    }
    if !text.chars().all(|c| c.is_ascii_graphic()) {
        return bad("an endpoint is printable ASCII without spaces");
    }
    if let Some(addr) = text.strip_prefix("tcp://") {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return bad("a tcp endpoint needs host:port");
        };
        if host.is_empty() {
            return bad("the host is empty");
        }
        if port != "*" && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
        {
            return bad("the port must be a number from 0 to 65535, or *");
        }
        Ok(text.to_owned())
    } else if let Some(path) = text.strip_prefix("ipc://") {
        if path.is_empty() || path.len() > MAX_IPC_PATH_LEN {
            return bad(&format!(
                "the ipc path must be 1 to {MAX_IPC_PATH_LEN} bytes, it is {}",
                path.len()
            ));
        }
        Ok(text.to_owned())
    } else {
        bad("unknown transport")
    }
}

/// An IP address and port, `127.0.0.1:5572` or `[::1]:5572`, with the port in `ports` (0 asks
/// the system for a free port, where a range allows it). Host names are refused: the address
/// decides whether a token is required, so it must not depend on name resolution.
pub fn socket_address(ports: RangeInclusive<u16>) -> impl Parser<std::net::SocketAddr> {
    move |text| {
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            format!(
                "expected IP:PORT (e.g. 127.0.0.1:5572 or [::1]:5572), a port from {} to {}",
                ports.start(),
                ports.end()
            )
        })?;
        if ports.contains(&addr.port()) {
            Ok(addr)
        } else {
            Err(format!(
                "the port must be from {} to {}, it is {}",
                ports.start(),
                ports.end(),
                addr.port()
            ))
        }
    }
}

/// A file or directory path: not empty, at most 4095 bytes, no component over 255 bytes.
pub fn path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty".into());
    }
    if text.len() > MAX_PATH_LEN {
        return Err(format!(
            "the path is {} bytes long, the limit is {MAX_PATH_LEN}",
            text.len()
        ));
    }
    let path = PathBuf::from(text);
    for component in path.components() {
        if let Component::Normal(name) = component
            && name.len() > MAX_PATH_COMPONENT_LEN
        {
            return Err(format!(
                "a path component is {} bytes long, the limit is {MAX_PATH_COMPONENT_LEN}",
                name.len()
            ));
        }
    }
    Ok(path)
}

/// A CURVE public key: 40 Z85 characters, or a file holding one (read up to
/// [`keys::MAX_PUBLIC_KEY_FILE_LEN`] bytes, so an endless file such as `/dev/zero` is refused
/// at once).
pub fn public_key(text: &str) -> Result<PublicKey, String> {
    if text.len() == 40
        && let Ok(key) = PublicKey::from_z85(text)
    {
        return Ok(key);
    }
    let file = path(text).map_err(|e| format!("neither a 40-character Z85 key nor a file: {e}"))?;
    if !file.exists() {
        return Err("neither a 40-character Z85 key nor an existing file".into());
    }
    keys::read_public(&file).map_err(|e| error_chain(&e))
}

/// A log level: `off`, `error`, `warn`, `info`, `debug` or `trace`.
pub fn log_level(text: &str) -> Result<tracing::level_filters::LevelFilter, String> {
    text.parse()
        .map_err(|_| "expected one of off, error, warn, info, debug, trace".into())
}

/// `error` and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text += &format!(": {e}");
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_use_binary_units_unless_decimal_is_spelt_out() {
        let parse = size(1..=u64::MAX);
        for (text, bytes) in [
            ("4096", 4096),
            ("64k", 65_536),
            ("64K", 65_536),
            ("64Ki", 65_536),
            ("64KiB", 65_536),
            ("64 KiB", 65_536),
            ("64kB", 64_000),
            ("64KB", 64_000),
            ("1M", 1 << 20),
            ("1MiB", 1 << 20),
            ("1MB", 1_000_000),
            ("2G", 2 << 30),
            ("2GiB", 2 << 30),
            ("2GB", 2_000_000_000),
            ("7B", 7),
        ] {
            assert_eq!(parse(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "k",
            "-1",
            "1.5M",
            "12 parsecs",
            "18446744073709551616",
            "99999999999G",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_units_or_bare_seconds_within_the_range() {
        let parse = duration(TEN_MS..=DAY);
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1day"), Ok(DAY));
        let from_zero = duration(Duration::ZERO..=DAY);
        assert_eq!(from_zero("0"), Ok(Duration::ZERO));
        assert!(from_zero("1e-300").is_err());
        for bad in [
            "9ms", "1e19", "2e19", "1e400", "NaN", "inf", "-1", "-0.5", "25h", "1e-300", "x",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("10ms") && e.contains("1day"), "{bad}: {e}");
        }
    }

    #[test]
    fn endpoints_are_checked_by_transport() {
        assert_eq!(
            connect_endpoint("tcp://*:5570").as_deref(),
            Ok("tcp://127.0.0.1:5570")
        );
        assert!(connect_endpoint("ipc:///tmp/hub").is_ok());
        let long = format!("ipc:///{}", "a".repeat(300));
        assert!(connect_endpoint(&long).is_err());
        assert!(bind_endpoint(&long).is_err());
        assert!(bind_endpoint("tcp://127.0.0.1:*").is_ok());
        assert!(bind_endpoint("tcp://127.0.0.1:65536").is_err());
        assert!(connect_endpoint("localhost:5570").is_err());
    }

    #[test]
    fn socket_addresses_are_ip_and_port() {
        let listen = socket_address(0..=65535);
        assert_eq!(listen("127.0.0.1:0").unwrap().port(), 0);
        assert!(listen("[::1]:5572").unwrap().ip().is_loopback());
        assert!(listen("0.0.0.0:9100").is_ok());
        for bad in [
            "localhost:5572",
            "127.0.0.1",
            "127.0.0.1:65536",
            ":5572",
            "tcp://1.2.3.4:5",
            "",
        ] {
            assert!(listen(bad).is_err(), "{bad}");
        }
        let connect = socket_address(1..=65535);
        assert!(
            connect("127.0.0.1:0")
                .unwrap_err()
                .contains("from 1 to 65535")
        );
    }

    #[test]
    fn channel_prefixes_may_be_dots() {
        assert!(channel_prefix(".").is_ok());
        assert!(channel_prefix("cam").is_ok());
        assert!(channel_prefix("a/b").is_err());
        assert!(channel_prefix(&"a".repeat(129)).is_err());
    }

    proptest! {
        #[test]
        fn an_integer_is_accepted_exactly_within_its_range(v in any::<i64>(), lo in -50i64..50, span in 0i64..100) {
            let hi = lo + span;
            prop_assert_eq!(integer(lo..=hi)(&v.to_string()).is_ok(), (lo..=hi).contains(&v));
        }

        #[test]
        fn a_number_is_accepted_exactly_when_finite_and_in_range(v in any::<f64>()) {
            let ok = v.is_finite() && (0.001..=DAY_SECONDS).contains(&v);
            prop_assert_eq!(seconds(0.001..=DAY_SECONDS)(&v.to_string()).is_ok(), ok);
            prop_assert_eq!(seconds(0.001..=DAY_SECONDS)(&format!("{v:e}")).is_ok(), ok);
        }

        #[test]
        fn a_duration_in_range_round_trips_through_its_text(ms in 10u64..=86_400_000) {
            let d = Duration::from_millis(ms);
            let text = humantime::format_duration(d).to_string();
            prop_assert_eq!(duration(TEN_MS..=DAY)(&text), Ok(d));
        }

        #[test]
        fn no_text_makes_a_parser_panic(text in ".{0,40}") {
            let _ = integer(0u32..=10)(&text);
            let _ = zero_or_number(0.5..=1.0)(&text);
            let _ = seconds(0.5..=1.0)(&text);
            let _ = duration(Duration::ZERO..=DAY)(&text);
            let _ = size(0..=u64::MAX)(&text);
            let _ = connect_endpoint(&text);
            let _ = bind_endpoint(&text);
            let _ = path(&text);
            let _ = socket_address(0..=65535)(&text);
        }
    }
}
