//! The flexible zone: one serialised state object, versioned, written by the producer and read by
//! consumers without ever showing a half-written state.
//!
//! Two buffers, each guarded by its own seqlock word (odd while written, `2v` when it holds
//! version v). Version v lives in buffer `v % 2`, so writing v+1 never disturbs a reader of v; a
//! reader of v-1 that is slower than a whole write sees the word change and retries.
#![deny(unsafe_code)]

use std::sync::atomic::{Ordering, fence};

use super::error::StateError;
use super::layout::{View, state_format_code};

/// Read attempts before giving up with [`StateError::Contended`].
const READ_ATTEMPTS: u32 = 10_000;

fn serialize<T: serde::Serialize>(format: u32, value: &T) -> Result<Vec<u8>, StateError> {
    match format {
        state_format_code::JSON => {
            serde_json::to_vec(value).map_err(|e| StateError::Serialize(e.to_string()))
        }
        #[cfg(feature = "msgpack")]
        state_format_code::MSGPACK => {
            rmp_serde::to_vec_named(value).map_err(|e| StateError::Serialize(e.to_string()))
        }
        other => Err(StateError::UnsupportedFormat { format: other }),
    }
}

fn deserialize<T: serde::de::DeserializeOwned>(format: u32, bytes: &[u8]) -> Result<T, StateError> {
    match format {
        state_format_code::JSON => {
            serde_json::from_slice(bytes).map_err(|e| StateError::Deserialize(e.to_string()))
        }
        #[cfg(feature = "msgpack")]
        state_format_code::MSGPACK => {
            rmp_serde::from_slice(bytes).map_err(|e| StateError::Deserialize(e.to_string()))
        }
        other => Err(StateError::UnsupportedFormat { format: other }),
    }
}

/// Writes `value` as the next version. Only the producer calls this.
pub(super) fn write_state<T: serde::Serialize>(view: &View, value: &T) -> Result<u64, StateError> {
    let bytes = serialize(view.geometry().params.state_format, value)?;
    write_state_bytes(view, &bytes)
}

/// Writes `bytes`, a state already serialised in the channel's format, as the next version.
pub(super) fn write_state_bytes(view: &View, bytes: &[u8]) -> Result<u64, StateError> {
    let params = view.geometry().params;
    if bytes.len() as u64 > params.flex_size {
        return Err(StateError::TooLarge {
            size: bytes.len() as u64,
            capacity: params.flex_size,
        });
    }
    let h = view.header();
    let current = h.flex_version.load(Ordering::Acquire);
    // The seq words hold 2v: a version another process wrote near u64::MAX / 2 would
    // overflow them (no producer gets there: one write per nanosecond would take 292 years).
    let v = current
        .checked_add(1)
        .filter(|&v| v <= u64::MAX / 2)
        .ok_or(StateError::CorruptVersion { version: current })?;
    let b = (v % 2) as usize;
    let (fh, _) = view.flex(b);
    fh.seq.store(v * 2 - 1, Ordering::Relaxed);
    fence(Ordering::Release);
    write_bytes(view, b, bytes);
    fh.len.store(bytes.len() as u64, Ordering::Relaxed);
    fh.seq.store(v * 2, Ordering::Release);
    h.flex_version.store(v, Ordering::Release);
    Ok(v)
}

/// Copies the serialised state into buffer `b`, which the caller (the producer) marked odd.
#[allow(unsafe_code)]
fn write_bytes(view: &View, b: usize, bytes: &[u8]) {
    // SAFETY: only the producer writes the flexible zone (a second producer is refused at
    // create), and it marked buffer `b` as being written (odd seq) just before.
    unsafe { view.flex_write(b, bytes) }
}

/// Reads the current version, copying it out and re-checking its seqlock word.
pub(super) fn read_state<T: serde::de::DeserializeOwned>(
    view: &View,
) -> Result<Option<(u64, T)>, StateError> {
    let format = view.geometry().params.state_format;
    match read_state_bytes(view)? {
        Some((v, bytes)) => deserialize(format, &bytes).map(|t| Some((v, t))),
        None => Ok(None),
    }
}

/// Reads the current version's serialised bytes, re-checking its seqlock word.
pub(super) fn read_state_bytes(view: &View) -> Result<Option<(u64, Vec<u8>)>, StateError> {
    let params = view.geometry().params;
    let h = view.header();
    for attempt in 0..READ_ATTEMPTS {
        let v = h.flex_version.load(Ordering::Acquire);
        if v == 0 {
            return Ok(None);
        }
        if v > u64::MAX / 2 {
            return Err(StateError::CorruptVersion { version: v });
        }
        let b = (v % 2) as usize;
        let (fh, _) = view.flex(b);
        let s1 = fh.seq.load(Ordering::Acquire);
        if s1 == v * 2 {
            let len = fh.len.load(Ordering::Relaxed);
            let copy = view.flex_read(b, len);
            fence(Ordering::Acquire);
            if fh.seq.load(Ordering::Relaxed) == s1 {
                if len > params.flex_size {
                    return Err(StateError::Deserialize(format!(
                        "stored length {len} exceeds the zone of {} bytes",
                        params.flex_size
                    )));
                }
                return Ok(Some((v, copy)));
            }
        }
        if attempt % 64 == 63 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    Err(StateError::Contended)
}
