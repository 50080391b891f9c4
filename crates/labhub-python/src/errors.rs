//! Rust errors as the typed exceptions of `labhub._errors`, and the boundary every Python call
//! crosses: a Rust panic becomes `labhub.InternalError`, never an unwinding across FFI.

use std::panic::{AssertUnwindSafe, catch_unwind};

use labhub::client::{ClientError, ConsumeError};
use labhub::msg::MsgError;
use labhub::protocol::ErrorCode;
use labhub::shm::{ChannelError, PublishError, ReadError, StateError};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// An exception of class `class` (a name in `labhub._errors`) with `message` and attributes.
pub fn raise(class: &str, message: impl Into<String>, attrs: &[(&str, String)]) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let build = || -> PyResult<PyErr> {
            let module = ERRORS.get_or_try_init(py, || {
                PyModule::import(py, "labhub._errors").map(Bound::unbind)
            })?;
            let cls = module.bind(py).getattr(class)?;
            let kwargs = PyDict::new(py);
            for (k, v) in attrs {
                kwargs.set_item(*k, v)?;
            }
            Ok(PyErr::from_value(
                cls.call((message.clone(),), Some(&kwargs))?,
            ))
        };
        build().unwrap_or_else(|e| e)
    })
}

/// Whether `err` is an instance of `class` (a name in `labhub._errors`).
pub fn is(py: Python<'_>, err: &PyErr, class: &str) -> bool {
    ERRORS
        .get(py)
        .and_then(|m| m.bind(py).getattr(class).ok())
        .is_some_and(|cls| err.value(py).is_instance(&cls).unwrap_or(false))
}

/// A `ValueError` naming the argument `arg`.
pub fn bad_value(arg: &str, problem: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{arg}: {problem}"))
}

/// A `TypeError` naming the argument `arg`.
pub fn bad_type(arg: &str, problem: impl std::fmt::Display) -> PyErr {
    PyTypeError::new_err(format!("{arg}: {problem}"))
}

/// Runs `body`, turning a Rust panic into `labhub.InternalError`.
pub fn guard<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(raise(
                "InternalError",
                format!("internal error in labhub (a bug; please report it): {what}"),
                &[],
            ))
        }
    }
}

/// Renders an error with its chain of causes.
pub fn chain_text(e: &dyn std::error::Error) -> String {
    chain(e)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += ": ";
        text += &s.to_string();
        source = s.source();
    }
    text
}

pub fn channel_error(e: ChannelError) -> PyErr {
    let text = chain(&e);
    match e {
        ChannelError::InvalidName { .. } => bad_value("name", text),
        ChannelError::InvalidConfig { field, reason } => bad_value(field, reason),
        ChannelError::NotFound { channel } => {
            raise("ChannelNotFound", text, &[("channel", channel)])
        }
        ChannelError::SchemaMismatch {
            channel,
            field,
            expected,
            found,
        } => raise(
            "SchemaMismatch",
            text,
            &[
                ("channel", channel),
                ("field", field.to_owned()),
                ("expected", expected),
                ("found", found),
            ],
        ),
        ChannelError::ConfigMismatch {
            channel,
            field,
            expected,
            found,
        } => raise(
            "ConfigMismatch",
            text,
            &[
                ("channel", channel),
                ("field", field.to_owned()),
                ("expected", expected),
                ("found", found),
            ],
        ),
        ChannelError::SizeMismatch { channel, .. } => {
            raise("ConfigMismatch", text, &[("channel", channel)])
        }
        ChannelError::ChannelBusy { channel, pid } => raise(
            "ChannelBusy",
            text,
            &[("channel", channel), ("pid", pid.to_string())],
        ),
        ChannelError::WrongSecret { channel } => {
            raise("WrongSecret", text, &[("channel", channel)])
        }
        ChannelError::ConsumerTableFull { channel, .. } => {
            raise("ConsumerTableFull", text, &[("channel", channel)])
        }
        _ => raise("ShmError", text, &[]),
    }
}

pub fn publish_error(e: PublishError) -> PyErr {
    let text = chain(&e);
    match e {
        PublishError::ShapeOutOfRange { .. } | PublishError::LengthMismatch { .. } => {
            bad_value("shape", text)
        }
        PublishError::Full { channel, .. } => raise("ChannelFull", text, &[("channel", channel)]),
        PublishError::Timeout { channel } => raise("TimeoutError", text, &[("channel", channel)]),
        _ => raise("Error", text, &[]),
    }
}

pub fn read_error(e: ReadError) -> PyErr {
    let text = chain(&e);
    match e {
        ReadError::Timeout => raise("TimeoutError", text, &[]),
        ReadError::Overwritten { frame_id } => {
            raise("Overwritten", text, &[("frame_id", frame_id.to_string())])
        }
        ReadError::ChecksumMismatch { frame_id, .. } => raise(
            "ChecksumMismatch",
            text,
            &[("frame_id", frame_id.to_string())],
        ),
        ReadError::Evicted { channel } => raise("Evicted", text, &[("channel", channel)]),
        _ => raise("CorruptFrame", text, &[]),
    }
}

pub fn consume_error(e: ConsumeError) -> PyErr {
    match e {
        ConsumeError::Read { source, .. } => read_error(source),
        ConsumeError::Resume { source, .. } => client_error(*source),
        other => {
            let text = chain(&other);
            match other {
                ConsumeError::Timeout { channel, .. } => {
                    raise("TimeoutError", text, &[("channel", channel)])
                }
                _ => raise("Error", text, &[]),
            }
        }
    }
}

pub fn client_error(e: ClientError) -> PyErr {
    let text = chain(&e);
    match e {
        ClientError::Shm { source, .. } => channel_error(source),
        ClientError::InvalidName(_) => bad_value("name", text),
        ClientError::Timeout { .. } => raise("TimeoutError", text, &[]),
        ClientError::Refused { code, channel, .. } => {
            let channel = channel.unwrap_or_default();
            match code {
                ErrorCode::NotFound => raise("ChannelNotFound", text, &[("channel", channel)]),
                ErrorCode::AlreadyExists => raise("ChannelBusy", text, &[("channel", channel)]),
                code => raise(
                    "BrokerError",
                    text,
                    &[("channel", channel), ("code", code.as_str().to_owned())],
                ),
            }
        }
        ClientError::AlreadyServing { channel } => {
            raise("ChannelBusy", text, &[("channel", channel)])
        }
        ClientError::LayoutMismatch {
            channel,
            field,
            broker,
            segment,
        } => raise(
            "SchemaMismatch",
            text,
            &[
                ("channel", channel),
                ("field", field.to_owned()),
                ("expected", broker),
                ("found", segment),
            ],
        ),
        ClientError::WrongKind { channel, .. } => raise(
            "SchemaMismatch",
            text,
            &[("channel", channel), ("field", "kind".into())],
        ),
        ClientError::Msg { channel, source } => msg_error(*source, &channel),
        ClientError::Config { .. } | ClientError::Key(_) => raise("ConfigError", text, &[]),
        _ => raise("BrokerError", text, &[]),
    }
}

/// A message channel's error on channel `channel`.
pub fn msg_error(e: MsgError, channel: &str) -> PyErr {
    let text = format!("message channel {channel}: {}", chain(&e));
    fn attrs(channel: &str, extra: Option<(&'static str, String)>) -> Vec<(&'static str, String)> {
        let mut a = vec![("channel", channel.to_owned())];
        a.extend(extra);
        a
    }
    match e {
        MsgError::Timeout { .. } | MsgError::SubscriberTimeout { .. } => {
            raise("TimeoutError", text, &attrs(channel, None))
        }
        MsgError::Remote { message, .. } => raise(
            "RemoteError",
            text,
            &attrs(channel, Some(("remote_message", message))),
        ),
        MsgError::InvalidOption { option, .. } => bad_value(option, text),
        MsgError::InvalidEndpoint { .. } => bad_value("bind", text),
        MsgError::NoTopics { .. } => bad_value("topics", text),
        _ => raise("MsgError", text, &attrs(channel, None)),
    }
}

pub fn state_error(e: StateError) -> PyErr {
    let text = chain(&e);
    match e {
        StateError::TooLarge { .. } | StateError::Serialize(_) => bad_value("state", text),
        _ => raise("StateError", text, &[]),
    }
}
