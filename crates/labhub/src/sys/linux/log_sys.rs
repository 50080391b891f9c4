//! The OS calls the `log` module needs beyond `std` and the rest of `sys`: `syslog(3)`.

use std::ffi::{CStr, CString};
use std::io;
use std::sync::Mutex;

/// Severity of a syslog message (the subset the logger maps its levels onto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogSeverity {
    /// `LOG_ERR`
    Error,
    /// `LOG_WARNING`
    Warning,
    /// `LOG_INFO`
    Info,
    /// `LOG_DEBUG`
    Debug,
}

/// Idents handed to `openlog`, which keeps the pointer rather than a copy: each distinct ident
/// is allocated once and lives for the rest of the process.
static IDENTS: Mutex<Vec<&'static CStr>> = Mutex::new(Vec::new());

/// Opens the process's syslog connection under `ident` (facility `LOG_USER`, pid included).
///
/// Returns `InvalidInput` if `ident` contains a NUL byte. glibc connects lazily and drops
/// messages silently when no syslog daemon listens, so this never fails for lack of a daemon.
pub fn syslog_open(ident: &str) -> io::Result<()> {
    let owned = CString::new(ident).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "syslog ident contains a NUL byte",
        )
    })?;
    let mut idents = IDENTS.lock().unwrap_or_else(|p| p.into_inner());
    let stored: &'static CStr = match idents.iter().copied().find(|s| *s == owned.as_c_str()) {
        Some(s) => s,
        None => {
            let leaked: &'static CStr = Box::leak(owned.into_boxed_c_str());
            idents.push(leaked);
            leaked
        }
    };
    // SAFETY: `stored` is a NUL-terminated string that is never freed, as openlog requires.
    unsafe { libc::openlog(stored.as_ptr(), libc::LOG_PID, libc::LOG_USER) };
    Ok(())
}

/// Sends one message to syslog. Interior NUL bytes are replaced so the message is never cut.
pub fn syslog_write(severity: SyslogSeverity, message: &str) {
    let priority = match severity {
        SyslogSeverity::Error => libc::LOG_ERR,
        SyslogSeverity::Warning => libc::LOG_WARNING,
        SyslogSeverity::Info => libc::LOG_INFO,
        SyslogSeverity::Debug => libc::LOG_DEBUG,
    };
    let text = match CString::new(message) {
        Ok(c) => c,
        Err(_) => CString::new(message.replace('\0', "\\0")).unwrap_or_default(),
    };
    // SAFETY: the format is a static "%s" and its one argument a valid NUL-terminated string
    // that outlives the call.
    unsafe { libc::syslog(libc::LOG_USER | priority, c"%s".as_ptr(), text.as_ptr()) };
}
