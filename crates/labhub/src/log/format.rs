//! The line format: one event, one line, formatted on the caller's thread.
//!
//! ```text
//! 2026-11-27T12:50:53.123456Z INFO  4242:4250 labhub::shm: open{channel="cam0"}: created slots=8
//! ```

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level};

use crate::sys;

/// Length of the timestamp, `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
pub(crate) const TIMESTAMP_LEN: usize = 27;
/// Width the level is padded to.
pub(crate) const LEVEL_WIDTH: usize = 5;

/// Lines up to this many bytes travel inside the queue slot; longer ones are boxed.
///
/// Formatting happens in a reused thread-local buffer and the bytes are copied into the
/// message, so the common line costs no allocation on the caller's thread and no free on
/// the writer's (with glibc, memory freed by another thread is slow to reuse).
pub(crate) const INLINE_LINE: usize = 224;

/// One formatted line, ending in `\n`, plus what sinks need to know about it.
pub(crate) struct Line {
    bytes: LineBytes,
    pub(crate) level: Level,
    /// Byte offset of the target, i.e. the line without timestamp, level and ids (syslog
    /// adds its own).
    pub(crate) body_start: usize,
}

// Large on purpose: the bytes live in the queue slot instead of on the heap.
#[allow(clippy::large_enum_variant)]
enum LineBytes {
    Inline { len: u8, buf: [u8; INLINE_LINE] },
    Boxed(Box<str>),
}

impl Line {
    fn new(text: &str, level: Level, body_start: usize) -> Line {
        let bytes = if text.len() <= INLINE_LINE {
            let mut buf = [0u8; INLINE_LINE];
            buf[..text.len()].copy_from_slice(text.as_bytes());
            LineBytes::Inline {
                len: text.len() as u8,
                buf,
            }
        } else {
            LineBytes::Boxed(text.into())
        };
        Line {
            bytes,
            level,
            body_start,
        }
    }

    /// The whole line, `\n` included (valid UTF-8).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            LineBytes::Inline { len, buf } => &buf[..usize::from(*len)],
            LineBytes::Boxed(text) => text.as_bytes(),
        }
    }

    /// The line from the target on, without the `\n`.
    pub(crate) fn body(&self) -> std::borrow::Cow<'_, str> {
        let bytes = self.bytes();
        let body = &bytes[self.body_start.min(bytes.len())..];
        String::from_utf8_lossy(body.strip_suffix(b"\n").unwrap_or(body))
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Line")
            .field(&String::from_utf8_lossy(self.bytes()))
            .finish()
    }
}

thread_local! {
    /// The buffer lines are formatted in, reused by every event of this thread.
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// `pid:tid ` of this thread, formatted once (for the pid it was formatted with).
    static IDS: RefCell<(u32, String)> = const { RefCell::new((0, String::new())) };
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
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{} {} ",
        humantime::format_rfc3339_micros(SystemTime::now()),
        level_str(level)
    );
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.0 != pid || ids.1.is_empty() {
            let tid = sys::gettid();
            *ids = (pid, format!("{pid}:{tid} "));
        }
        out.push_str(&ids.1);
    });
    out.len()
}

/// Formats a line the logger writes about itself (drop reports, rotation markers).
pub(crate) fn internal_line(level: Level, pid: u32, message: fmt::Arguments<'_>) -> Line {
    with_scratch(|text| {
        let body_start = write_prefix(text, level, pid);
        text.push_str("labhub::log: ");
        let _ = Escaped(text).write_fmt(message);
        text.push('\n');
        Line::new(text, level, body_start)
    })
}

/// Formats an event; `spans` writes the `name{fields}:` chain of the event's scope, if any.
pub(crate) fn event_line(event: &Event<'_>, pid: u32, spans: impl FnOnce(&mut String)) -> Line {
    let meta = event.metadata();
    let level = *meta.level();
    with_scratch(|text| {
        let body_start = write_prefix(text, level, pid);
        text.push_str(meta.target());
        text.push_str(": ");
        spans(text);
        let mut visitor = FieldVisitor::for_event(text);
        event.record(&mut visitor);
        visitor.finish();
        text.push('\n');
        Line::new(text, level, body_start)
    })
}

/// Runs `f` on this thread's cleared scratch buffer (or a fresh one if it is in use, should
/// formatting ever re-enter).
fn with_scratch(f: impl FnOnce(&mut String) -> Line) -> Line {
    let mut f = Some(f);
    let line = SCRATCH.with(|scratch| {
        let mut text = scratch.try_borrow_mut().ok()?;
        text.clear();
        let line = (f.take()?)(&mut text);
        if text.capacity() > 64 * 1024 {
            // One huge line should not pin its buffer for the thread's life.
            *text = String::with_capacity(512);
        }
        Some(line)
    });
    match (line, f) {
        (Some(line), _) => line,
        (None, Some(f)) => f(&mut String::with_capacity(256)),
        (None, None) => unreachable!("the closure ran, so it returned a line"),
    }
}

/// Appends span fields, ` name=value` each (leading space), for the span chain.
pub(crate) fn span_fields(attrs: &tracing::span::Attributes<'_>, out: &mut String) {
    attrs.record(&mut FieldVisitor::for_span(out));
}

/// Appends the fields of a `Span::record` call.
pub(crate) fn record_fields(values: &tracing::span::Record<'_>, out: &mut String) {
    values.record(&mut FieldVisitor::for_span(out));
}

/// Writes the `message` field, then every other field as ` name=value`.
///
/// The macros put the message first, so fields normally go straight into the line; fields
/// seen before the message wait in `early`.
struct FieldVisitor<'a> {
    line: &'a mut String,
    early: String,
    /// The message is written (or, for spans, `message` is an ordinary field).
    message_done: bool,
    is_span: bool,
}

impl<'a> FieldVisitor<'a> {
    fn for_event(line: &'a mut String) -> Self {
        FieldVisitor {
            line,
            early: String::new(),
            message_done: false,
            is_span: false,
        }
    }

    fn for_span(out: &'a mut String) -> Self {
        FieldVisitor {
            line: out,
            early: String::new(),
            message_done: true,
            is_span: true,
        }
    }

    fn fields(&mut self) -> &mut String {
        if self.message_done {
            self.line
        } else {
            &mut self.early
        }
    }

    fn is_message(&self, field: &Field) -> bool {
        !self.is_span && field.name() == "message"
    }

    fn message_written(&mut self) {
        self.message_done = true;
        self.line.push_str(&self.early);
    }

    /// Completes an event without a message: its fields follow the `: ` directly.
    fn finish(self) {
        if !self.message_done {
            self.line
                .push_str(self.early.strip_prefix(' ').unwrap_or(&self.early));
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.is_message(field) {
            let _ = Escaped(self.line).write_str(value);
            self.message_written();
        } else {
            let _ = write!(self.fields(), " {}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.is_message(field) {
            let _ = write!(Escaped(self.line), "{value:?}");
            self.message_written();
        } else {
            let out = self.fields();
            let _ = write!(out, " {}=", field.name());
            let _ = write!(Escaped(out), "{value:?}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let _ = write!(self.fields(), " {}={}", field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let _ = write!(self.fields(), " {}={}", field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let _ = write!(self.fields(), " {}={}", field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let _ = write!(self.fields(), " {}={}", field.name(), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let out = self.fields();
        let _ = write!(out, " {}=", field.name());
        let _ = write!(Escaped(out), "{:?}", value.to_string());
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
        let t = String::from_utf8(line.bytes().to_vec()).unwrap();
        assert_eq!(
            &t[TIMESTAMP_LEN..TIMESTAMP_LEN + 1 + LEVEL_WIDTH + 1],
            " WARN  "
        );
        assert!(t[..TIMESTAMP_LEN].ends_with('Z'), "{t}");
        assert_eq!(&t[10..11], "T");
        assert!(t.ends_with(" labhub::log: x 1\n"), "{t}");
        assert!(t[line.body_start..].starts_with("labhub::log: "));
        assert_eq!(line.body(), "labhub::log: x 1");
        let ids = t[TIMESTAMP_LEN + 7..line.body_start].trim_end();
        assert!(ids.starts_with("42:"), "{ids}");
    }
}
