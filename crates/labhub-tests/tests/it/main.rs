//! labhub's integration tests: one binary, one module per concept (one link on a 2-core CI).

mod broker;
mod client;
mod common;
mod e2e;
mod filelock;
mod lifecycle;
mod log;
mod memfd;
mod metrics;
mod monitor;
mod msg;
mod msg_hub;
mod shm;
mod sync;
