//! The broker: the hub's authority for who is alive and what exists.
//!
//! It stays off the data path: producers and consumers exchange frames through shared memory
//! or their own sockets, and only ask the broker to register, discover, attach and (for
//! channels made through it) hand them the channel's memfds. A broker restart interrupts no
//! stream; clients told `unknown_client` register again (producers hand their memfds over
//! again).
//!
//! - [`registry`]: the pure state machine (channels, clients, watchdog), driven by an injected
//!   clock;
//! - [`server`]: the CURVE ROUTER + PUB loop with ZAP admission that feeds it;
//! - [`service`]: the lifecycle module and [`run_foreground`] (what `labhub hub` runs);
//! - [`config`], [`audit`], [`segments`]: configuration, the JSON-lines audit trail, segment
//!   cleanup (key files and the trusted-file checks are [`crate::keys`]);
//! - [`perimeter`]: what a network connection may cost before and after it authenticates;
//! - [`metrics`]: per-channel and per-consumer figures for Prometheus, `labhub top` and the
//!   live web monitor, served off the broker thread;
//! - [`grants`], [`access`]: broker-granted shared memory — tickets issued over CURVE,
//!   redeemed on a Unix socket for the memfds of a channel, by the per-channel access list;
//! - [`probe`]: a minimal synchronous client for tests and benchmarks.
//!
//! The wire format is [`crate::protocol`] (`docs/PROTOCOL.md`).
#![deny(unsafe_code)]

pub mod access;
pub mod audit;
pub mod config;
pub mod grants;
pub mod metrics;
pub mod perimeter;
pub mod probe;
pub mod registry;
pub mod segments;
pub mod server;
pub mod service;

pub use config::{BrokerConfig, ConfigError, ConfigLayer, PasswordPrompt};
pub use server::{Broker, BrokerError, BrokerStats, run};
pub use service::{BrokerInfo, ForegroundError, MODULE_NAME, module, run_foreground};
