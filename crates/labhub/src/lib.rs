//! labhub: a data exchange hub for laboratory software.
//!
//! Programs on one machine exchange frames through shared-memory channels at memory speed;
//! programs on several machines find each other and exchange control messages through a
//! CurveZMQ-encrypted broker. This crate is the library under the `labhub` command.
//!
//! The modules are layered; each uses only those listed before it:
//!
//! | module | what it is |
//! |---|---|
//! | `sys` (private) | the only place that calls the operating system: futex, robust lists, flock, shared memory |
//! | [`lifecycle`] | modules with dependencies, started in order and stopped in reverse; owns the long-lived services |
//! | [`log`] | asynchronous logging on `tracing`, a lifecycle module |
//! | [`sync`] | process-shared, robust mutex and event that live inside shared memory |
//! | [`filelock`] | an exclusive cross-process, cross-thread lock on a path |
//! | [`name`] | the one validated channel name, and its segment name |
//! | [`shm`] | shared-memory channels of typed n-dimensional frames: one builder, loans, held frames, inspection |
//! | [`latency`] | frame latency as a fixed log-bucket histogram, mergeable across processes |
//! | [`protocol`] | the broker's wire messages: frames, types, typed decoding and validation |
//! | [`keys`] | CURVE key files, the allow list, and which files may be trusted |
//! | [`home`] | the labhub home and the broker's default endpoints |
//! | [`broker`] | the broker: registry and watchdog, config, audit trail, perimeter, CurveZMQ server |
//! | [`msg`] | ZeroMQ publish/subscribe and request/reply channels, optionally CurveZMQ-encrypted |
//! | [`client`] | the Hub client: a lifecycle module (heartbeat, re-registration) and channels through the broker |
//! | `record` | recording channels to Zarr v3 with their metadata, and replay (feature `record`) |
//!
//! Cargo features: `zmq` (keys, home, protocol, msg, client: libzmq, libsodium and the crypto
//! crates) and `broker` (the broker; implies `zmq`), both on by default; `record` (zarrs, no C
//! code) for recording and replay, off by default. With
//! `default-features = false` the crate is sys, lifecycle, log, sync, filelock, name and shm
//! alone.
//!
//! See `docs/ARCHITECTURE.md` for the design.
//!
//! # Example
//!
//! A producer and a consumer of a shared-memory channel of 2 × 3 `f32` frames, in one process
//! here (in real use, two programs), with no broker. Through a broker the same builder starts
//! with `hub.channel(name)` (`labhub::client::Hub::channel`, feature `zmq`).
//!
//! ```
//! use labhub::shm::{self, Channel, Policy};
//! use std::time::Duration;
//! # let name = format!("doc-crate-{}", std::process::id());
//! let mut producer = Channel::new(&name).policy(Policy::ring(4)).frames::<f32>(&[2, 3]).create()?;
//! let mut consumer = Channel::new(&name).frames::<f32>(&[2, 3]).open()?;
//!
//! producer.publish(&[0.0, 0.5, 1.0, 1.5, 2.0, 2.5], &[2, 3])?;
//!
//! let frame = consumer.next(Some(Duration::from_secs(5)))?;
//! assert_eq!(frame.shape(), &[2, 3]);
//! assert_eq!(frame.held().unwrap()[5], 2.5); // in place, no copy
//! # drop(frame); drop(consumer); drop(producer);
//! shm::remove_channel(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "bridge")]
pub mod bridge;
#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "zmq")]
pub mod client;
pub mod filelock;
#[cfg(feature = "zmq")]
pub mod home;
#[cfg(feature = "zmq")]
pub mod keys;
pub mod latency;
pub mod lifecycle;
pub mod log;
#[cfg(feature = "zmq")]
pub mod msg;
pub mod name;
#[cfg(feature = "zmq")]
pub mod protocol;
#[cfg(feature = "record")]
pub mod record;
pub mod shm;
pub mod sync;
pub(crate) mod sys;
