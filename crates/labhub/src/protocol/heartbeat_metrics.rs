//! Validation of the heartbeat fields that feed the broker's metrics: the client's version,
//! its pid and its latency summaries.
#![deny(unsafe_code)]

use super::{
    DecodeError, Heartbeat, MAX_CLIENT_VERSION_LEN, MAX_HEARTBEAT_CHANNELS, MAX_LATENCY_ENTRIES,
    field_error,
};

/// Whether `text` may be a `client_version`: 1 to [`MAX_CLIENT_VERSION_LEN`] bytes of ASCII
/// letters, digits and `. _ - + /`, so that it is safe as a Prometheus label and in a terminal.
pub fn is_client_version(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_CLIENT_VERSION_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'/'))
}

/// Checks `client_version`, `pid` and `latency` of a heartbeat.
pub(super) fn validate(h: &Heartbeat) -> Result<(), DecodeError> {
    if let Some(version) = &h.client_version
        && !is_client_version(version)
    {
        return Err(field_error(
            "client_version",
            format!(
                "must be 1 to {MAX_CLIENT_VERSION_LEN} bytes of ASCII letters, digits, '.', '_', '-', '+', '/'"
            ),
        ));
    }
    if h.pid == Some(0) {
        return Err(field_error("pid", "must be a process id, not 0"));
    }
    if h.latency.len() > MAX_HEARTBEAT_CHANNELS {
        return Err(field_error(
            "latency",
            format!(
                "{} channels, the limit is {MAX_HEARTBEAT_CHANNELS}",
                h.latency.len()
            ),
        ));
    }
    let mut entries = 0usize;
    for (name, summary) in &h.latency {
        summary
            .check()
            .map_err(|problem| field_error(format!("latency.{name}.buckets"), problem))?;
        entries += summary.buckets.len();
    }
    if entries > MAX_LATENCY_ENTRIES {
        return Err(field_error(
            "latency",
            format!("{entries} bucket entries in all, the limit is {MAX_LATENCY_ENTRIES}"),
        ));
    }
    Ok(())
}
