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
//! | [`latency`] | frame latency as a fixed log-bucket histogram, mergeable across processes |
//! | [`protocol`] | the broker's wire messages: frames, types, typed decoding and validation |
//! | [`broker`] | the broker: registry and watchdog, keys, config, audit trail, CurveZMQ server |
//! | [`msg`] | ZeroMQ publish/subscribe and request/reply channels, optionally CurveZMQ-encrypted |
//! | [`client`] | the Hub client: a lifecycle module (heartbeat, re-registration) and the channel factories |
//!
//! See `docs/ARCHITECTURE.md` for the design.
#![deny(missing_docs)]

pub mod broker;
pub mod client;
pub mod filelock;
pub mod latency;
pub mod lifecycle;
pub mod log;
pub mod msg;
pub mod protocol;
pub mod shm;
pub mod sync;
pub mod sys;
