//! The platform layer: the only module that calls operating-system APIs.
//!
//! Everything above it (sync, filelock, shm) is written against the items re-exported here,
//! so a port to another OS replaces one submodule and nothing else.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
#[allow(unused_imports)] // filled by the sync and shm work
pub use linux::*;
