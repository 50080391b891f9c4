//! The line format: one event, one line, formatted on the caller's thread.
//!
//! ```text
//! 2026-11-27T12:50:53.123456Z INFO  4242:4250 labhub::shm: open{channel="cam0"}: created slots=8
//! ```

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level};

use crate::sys::log_sys;

/// Length of the timestamp, `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
pub(crate) const TIMESTAMP_LEN: usize = 27;
/// Width the level is padded to.
pub(crate) const LEVEL_WIDTH: usize = 5;

/// One formatted line, ending in `\n`, plus what sinks need to know about it.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) text: String,
    pub(crate) level: Level,
    /// Byte offset of the target, i.e. the line without timestamp, level and ids (syslog
    /// adds its own).
    pub(crate) body_start: usize,
}

thread_local! {
    static THREAD_ID: u32 = log_sys::thread_id();
}

pub(crate) fn level_str(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN ",
        Level::INFO => "INFO ",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Writes `timestamp level pid:tid ` into `out` and returns where the body starts.
fn write_prefix(out: &mut String, level: Level, pid: u32) -> usize {
    let tid = THREAD_ID.with(|t| *t);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{} {} {}:{} ",
        humantime::format_rfc3339_micros(SystemTime::now()),
        level_str(level),
        pid,
        tid
    );
    out.len()
}

/// Formats a line the logger writes about itself (drop reports, rotation markers).
pub(crate) fn internal_line(level: Level, pid: u32, message: fmt::Arguments<'_>) -> Line {
    let mut text = String::with_capacity(128);
    let body_start = write_prefix(&mut text, level, pid);
    text.push_str("labhub::log: ");
    let _ = Escaped(&mut text).write_fmt(message);
    text.push('\n');
    Line {
        text,
        level,
        body_start,
    }
}

/// Formats an event; `spans` writes the `name{fields}:` chain of the event's scope, if any.
pub(crate) fn event_line(event: &Event<'_>, pid: u32, spans: impl FnOnce(&mut String)) -> Line {
    let meta = event.metadata();
    let level = *meta.level();
    let mut text = String::with_capacity(160);
    let body_start = write_prefix(&mut text, level, pid);
    text.push_str(meta.target());
    text.push_str(": ");
    spans(&mut text);
    let mut visitor = FieldVisitor {
        message: &mut text,
        fields: String::new(),
    };
    event.record(&mut visitor);
    let fields = visitor.fields;
    text.push_str(&fields);
    text.push('\n');
    Line {
        text,
        level,
        body_start,
    }
}

/// Appends span fields, ` name=value` each (leading space), for the span chain.
pub(crate) fn span_fields(attrs: &tracing::span::Attributes<'_>, out: &mut String) {
    let mut visitor = FieldVisitor {
        message: &mut String::new(),
        fields: std::mem::take(out),
    };
    attrs.record(&mut visitor);
    *out = visitor.fields;
}

/// Appends the fields of a `Span::record` call.
pub(crate) fn record_fields(values: &tracing::span::Record<'_>, out: &mut String) {
    let mut visitor = FieldVisitor {
        message: &mut String::new(),
        fields: std::mem::take(out),
    };
    values.record(&mut visitor);
    *out = visitor.fields;
}

/// Collects the `message` field into the line and every other field into ` name=value`.
struct FieldVisitor<'a> {
    message: &'a mut String,
    fields: String,
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = Escaped(self.message).write_str(value);
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(Escaped(self.message), "{value:?}");
        } else {
            let _ = write!(self.fields, " {}=", field.name());
            let _ = write!(Escaped(&mut self.fields), "{value:?}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let _ = write!(self.fields, " {}={}", field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let _ = write!(self.fields, " {}={}", field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let _ = write!(self.fields, " {}={}", field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let _ = write!(self.fields, " {}={}", field.name(), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = write!(self.fields, " {}=", field.name());
        let _ = write!(Escaped(&mut self.fields), "{:?}", value.to_string());
    }
}

/// A writer that keeps text on one line: control characters (newline, carriage return and
/// the rest, except tab) are written as escapes.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(|b| b.is_ascii_control() && b != b'\t') && !s.contains('\u{85}') {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            match c {
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push('\t'),
                c if c.is_control() => {
                    let _ = write!(self.0, "{}", c.escape_default());
                }
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_text_on_one_line() {
        let mut s = String::new();
        write!(Escaped(&mut s), "a\nb\r\tc\u{1b}").unwrap();
        assert_eq!(s, "a\\nb\\r\tc\\u{1b}");
    }

    #[test]
    fn internal_lines_have_the_documented_shape() {
        let line = internal_line(Level::WARN, 42, format_args!("x {}", 1));
        let t = &line.text;
        assert_eq!(
            &t[TIMESTAMP_LEN..TIMESTAMP_LEN + 1 + LEVEL_WIDTH + 1],
            " WARN  "
        );
        assert!(t[..TIMESTAMP_LEN].ends_with('Z'), "{t}");
        assert_eq!(&t[10..11], "T");
        assert!(t.ends_with(" labhub::log: x 1\n"), "{t}");
        assert!(t[line.body_start..].starts_with("labhub::log: "));
        let ids = t[TIMESTAMP_LEN + 7..line.body_start].trim_end();
        assert!(ids.starts_with("42:"), "{ids}");
    }
}
