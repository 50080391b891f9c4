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
//! | [`sys`] | the only place that calls the operating system: futex, robust lists, flock, shared memory |
//! | [`lifecycle`] | modules with dependencies, started in order and stopped in reverse; owns the long-lived services |
//! | [`log`] | asynchronous logging on `tracing`, a lifecycle module |
//! | [`sync`] | process-shared, robust mutex and event that live inside shared memory |
//! | [`filelock`] | an exclusive cross-process, cross-thread lock on a path |
//! | [`shm`] | shared-memory data channels: producer, consumers, policies, flexible zone |
//! | [`protocol`] | the broker's wire messages: frames, types, typed decoding and validation |
//! | [`keys`] | CURVE key files, the allow list, and which files may be trusted |
//! | [`home`] | the labhub home and the broker's default endpoints |
//! | [`broker`] | the broker: registry and watchdog, config, audit trail, perimeter, CurveZMQ server |
//! | [`msg`] | ZeroMQ publish/subscribe and request/reply channels, optionally CurveZMQ-encrypted |
//! | [`client`] | the Hub client: a lifecycle module (heartbeat, re-registration) and the channel factories |
//!
//! Cargo features: `zmq` (keys, home, protocol, msg, client: libzmq, libsodium and the crypto
//! crates) and `broker` (the broker; implies `zmq`), both on by default. With
//! `default-features = false` the crate is sys, lifecycle, log, sync, filelock and shm alone.
//!
//! See `docs/ARCHITECTURE.md` for the design.
#![deny(missing_docs)]

#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "zmq")]
pub mod client;
pub mod filelock;
#[cfg(feature = "zmq")]
pub mod home;
#[cfg(feature = "zmq")]
pub mod keys;
pub mod lifecycle;
pub mod log;
#[cfg(feature = "zmq")]
pub mod msg;
#[cfg(feature = "zmq")]
pub mod protocol;
pub mod shm;
pub mod sync;
pub mod sys;
