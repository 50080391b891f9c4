//! Opened sinks: where the writer thread puts batches of whole lines.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::Level;

use super::format::{self, LEVEL_WIDTH, Line, TIMESTAMP_LEN};
use super::{LogError, Sink};
use crate::sys::LockFile;
use crate::sys::log_sys::{self, SyslogSeverity};

/// Largest run of whole lines handed to one `write(2)`; a single longer line is written alone.
pub(crate) const MAX_WRITE: usize = 64 * 1024;

/// A sink that is open and ready to write.
pub(crate) enum OpenSink {
    Console { color: bool },
    File { file: File, path: PathBuf },
    Rotating(RotatingFile),
    Syslog,
}

impl OpenSink {
    /// Opens `sink`, creating missing parent directories; every failure is reported here,
    /// before the sink is chosen.
    pub(crate) fn open(sink: &Sink) -> Result<Self, LogError> {
        match sink {
            Sink::Console => Ok(OpenSink::Console {
                color: io::stderr().is_terminal(),
            }),
            Sink::File(path) => Ok(OpenSink::File {
                file: open_append(path)?,
                path: path.clone(),
            }),
            Sink::RotatingFile {
                path,
                max_bytes,
                backups,
            } => {
                if *max_bytes == 0 {
                    return Err(LogError::InvalidRotation {
                        path: path.clone(),
                        reason: "max_bytes must be at least 1",
                    });
                }
                if path.file_name().is_none() {
                    return Err(LogError::InvalidRotation {
                        path: path.clone(),
                        reason: "the path has no file name",
                    });
                }
                let file = open_append(path)?;
                let lock_path = sidecar(path, ".lock");
                let lock =
                    LockFile::open_or_create(&lock_path).map_err(|source| LogError::Open {
                        path: lock_path.clone(),
                        source,
                    })?;
                Ok(OpenSink::Rotating(RotatingFile {
                    file,
                    lock,
                    path: path.clone(),
                    max_bytes: *max_bytes,
                    backups: *backups,
                    mode: 0o644,
                }))
            }
            Sink::Syslog { ident } => {
                log_sys::syslog_open(ident).map_err(|source| {
                    if source.kind() == io::ErrorKind::InvalidInput {
                        LogError::InvalidSyslogIdent {
                            ident: ident.clone(),
                        }
                    } else {
                        LogError::Syslog { source }
                    }
                })?;
                Ok(OpenSink::Syslog)
            }
        }
    }

    /// A short description for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            OpenSink::Console { .. } => "console".to_owned(),
            OpenSink::File { path, .. } => format!("file {}", path.display()),
            OpenSink::Rotating(r) => format!("rotating file {}", r.path.display()),
            OpenSink::Syslog => "syslog".to_owned(),
        }
    }

    /// Writes whole lines; `buf` is scratch space kept between calls.
    pub(crate) fn write_lines(
        &mut self,
        lines: &[Line],
        buf: &mut Vec<u8>,
        pid: u32,
    ) -> io::Result<()> {
        match self {
            OpenSink::Console { color } => {
                buf.clear();
                for line in lines {
                    if *color {
                        push_coloured(buf, line);
                    } else {
                        buf.extend_from_slice(line.bytes());
                    }
                }
                let mut err = io::stderr().lock();
                err.write_all(buf)
            }
            OpenSink::File { file, .. } => {
                // Runs of whole lines, each one write(2) on an O_APPEND descriptor, so lines
                // of other processes appending to the same file land between ours, never
                // inside them.
                let mut start = 0;
                while start < lines.len() {
                    buf.clear();
                    let mut end = start;
                    while end < lines.len()
                        && (end == start || buf.len() + lines[end].len() <= MAX_WRITE)
                    {
                        buf.extend_from_slice(lines[end].bytes());
                        end += 1;
                    }
                    file.write_all(buf)?;
                    start = end;
                }
                Ok(())
            }
            OpenSink::Rotating(r) => r.write_lines(lines, buf, pid),
            OpenSink::Syslog => {
                for line in lines {
                    log_sys::syslog_write(severity(line.level), &line.body());
                }
                Ok(())
            }
        }
    }

    /// Makes everything written so far durable (`fsync` for files).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            OpenSink::Console { .. } => io::stderr().flush(),
            OpenSink::File { file, .. } => sync(file),
            OpenSink::Rotating(r) => sync(&r.file),
            OpenSink::Syslog => Ok(()),
        }
    }
}

/// `fsync`, except on files that cannot be synced (a character device such as `/dev/null`):
/// for them there is nothing to make durable.
fn sync(file: &File) -> io::Result<()> {
    match file.sync_all() {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

fn severity(level: Level) -> SyslogSeverity {
    match level {
        Level::ERROR => SyslogSeverity::Error,
        Level::WARN => SyslogSeverity::Warning,
        Level::INFO => SyslogSeverity::Info,
        _ => SyslogSeverity::Debug,
    }
}

fn push_coloured(buf: &mut Vec<u8>, line: &Line) {
    let text = line.bytes();
    let level_end = TIMESTAMP_LEN + 1 + LEVEL_WIDTH;
    if text.len() < level_end {
        buf.extend_from_slice(text);
        return;
    }
    let colour: &[u8] = match line.level {
        Level::ERROR => b"\x1b[31m",
        Level::WARN => b"\x1b[33m",
        Level::INFO => b"\x1b[32m",
        Level::DEBUG => b"\x1b[34m",
        Level::TRACE => b"\x1b[35m",
    };
    buf.extend_from_slice(&text[..=TIMESTAMP_LEN]);
    buf.extend_from_slice(colour);
    buf.extend_from_slice(&text[TIMESTAMP_LEN + 1..level_end]);
    buf.extend_from_slice(b"\x1b[0m");
    buf.extend_from_slice(&text[level_end..]);
}

/// `path` with `suffix` appended to its file name (`app.log` + `.1` = `app.log.1`).
pub(crate) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File, LogError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| LogError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// A size-rotating file shared safely by several processes.
///
/// Every batch is written under an exclusive `flock` on the sidecar `<path>.lock` (the log file
/// itself changes inode at each rotation, so it cannot carry the lock). Under the lock the
/// writer reopens `<path>` if another process rotated it, reads the size from the file, and
/// rotates before a line that would take the file past `max_bytes`. No line is written to a
/// file after it has been renamed, so none is lost or lands out of order.
pub(crate) struct RotatingFile {
    file: File,
    lock: LockFile,
    path: PathBuf,
    max_bytes: u64,
    backups: u32,
    mode: u32,
}

impl RotatingFile {
    #[cfg(feature = "broker")]
    /// Opens a rotating file of whole lines that are not log lines (the broker's audit trail):
    /// created with `mode`, rotated like a log sink but with no marker line, so every line in
    /// it is one of the caller's.
    pub(crate) fn open_plain(
        path: &Path,
        max_bytes: u64,
        backups: u32,
        mode: u32,
    ) -> io::Result<Self> {
        if max_bytes == 0 || path.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a rotating file needs a file name and max_bytes of at least 1",
            ));
        }
        let file = reopen(path, mode)?;
        let lock = LockFile::open_or_create(&sidecar(path, ".lock"))?;
        Ok(Self {
            file,
            lock,
            path: path.to_owned(),
            max_bytes,
            backups,
            mode,
        })
    }

    #[cfg(feature = "broker")]
    /// Appends whole lines (each ends with a newline), rotating as needed.
    pub(crate) fn write_plain<L: AsRef<[u8]>>(
        &mut self,
        lines: &[L],
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.lock.lock_exclusive()?;
        let before = self.file.metadata().map(|m| (m.dev(), m.ino(), m.len()));
        let result = self.write_locked(lines.iter().map(AsRef::as_ref), buf, |_| None);
        if result.is_err()
            && let Ok((dev, ino, len)) = before
            && let Ok(now) = self.file.metadata()
            && now.dev() == dev
            && now.ino() == ino
            && now.len() > len
        {
            // Take back a partly written batch (a full disk), so the file never holds half a
            // line; the caller writes the batch again later.
            let _ = self.file.set_len(len);
        }
        let unlocked = self.lock.unlock();
        result.and(unlocked)
    }

    #[cfg(feature = "broker")]
    /// Makes everything written so far durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        sync(&self.file)
    }

    fn write_lines(&mut self, lines: &[Line], buf: &mut Vec<u8>, pid: u32) -> io::Result<()> {
        self.lock.lock_exclusive()?;
        let backups = self.backups;
        let older = sidecar(&self.path, ".1");
        let result = self.write_locked(lines.iter().map(Line::bytes), buf, |_| {
            Some(if backups == 0 {
                format::internal_line(
                    Level::INFO,
                    pid,
                    format_args!("log file restarted (max_bytes reached, no backups kept)"),
                )
            } else {
                format::internal_line(
                    Level::INFO,
                    pid,
                    format_args!("log file rotated (older lines in {})", older.display()),
                )
            })
        });
        let unlocked = self.lock.unlock();
        result.and(unlocked)
    }

    fn write_locked<'a>(
        &mut self,
        lines: impl Iterator<Item = &'a [u8]>,
        buf: &mut Vec<u8>,
        marker: impl Fn(()) -> Option<Line>,
    ) -> io::Result<()> {
        self.reopen_if_rotated()?;
        let mut size = self.file.metadata()?.len();
        buf.clear();
        for line in lines {
            let len = line.len() as u64;
            let pending = buf.len() as u64;
            if size + pending > 0 && size + pending + len > self.max_bytes {
                if !buf.is_empty() {
                    self.file.write_all(buf)?;
                    buf.clear();
                }
                self.rotate()?;
                size = 0;
                // The marker goes in only if the line still fits after it, so a tiny
                // max_bytes never makes every line start a new file.
                if let Some(marker) = marker(())
                    && marker.len() as u64 + len <= self.max_bytes
                {
                    buf.extend_from_slice(marker.bytes());
                }
            } else if buf.len() + line.len() > MAX_WRITE {
                self.file.write_all(buf)?;
                size += buf.len() as u64;
                buf.clear();
            }
            buf.extend_from_slice(line);
        }
        if !buf.is_empty() {
            self.file.write_all(buf)?;
        }
        Ok(())
    }

    /// Another process may have rotated since our last write: if `<path>` is no longer the
    /// file we hold, open the new one.
    fn reopen_if_rotated(&mut self) -> io::Result<()> {
        let ours = self.file.metadata()?;
        let same = match fs::metadata(&self.path) {
            Ok(on_disk) => on_disk.dev() == ours.dev() && on_disk.ino() == ours.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !same {
            self.file = reopen(&self.path, self.mode)?;
        }
        Ok(())
    }

    /// Shifts `<path>.i` to `<path>.i+1` (dropping the oldest), `<path>` to `<path>.1`, and
    /// starts a new `<path>`. With zero backups the file is truncated in place instead.
    fn rotate(&mut self) -> io::Result<()> {
        if self.backups == 0 {
            return self.file.set_len(0);
        }
        let n = self.backups;
        remove_if_exists(&sidecar(&self.path, &format!(".{n}")))?;
        for i in (1..n).rev() {
            rename_if_exists(
                &sidecar(&self.path, &format!(".{i}")),
                &sidecar(&self.path, &format!(".{}", i + 1)),
            )?;
        }
        fs::rename(&self.path, sidecar(&self.path, ".1"))?;
        self.file = reopen(&self.path, self.mode)?;
        Ok(())
    }
}

fn reopen(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colouring_wraps_only_the_level() {
        let line = format::internal_line(Level::ERROR, 1, format_args!("boom"));
        let mut buf = Vec::new();
        push_coloured(&mut buf, &line);
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text.replace("\x1b[31m", "")
                .replace("\x1b[0m", "")
                .as_bytes(),
            line.bytes()
        );
        assert!(
            text[TIMESTAMP_LEN..].starts_with(" \x1b[31mERROR\x1b[0m 1:"),
            "{text:?}"
        );
    }
}
