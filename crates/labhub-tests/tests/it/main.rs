//! labhub's integration tests: one binary, one module per concept (one link on a 2-core CI).
mod shm;

mod sync;

mod lifecycle;
mod log;
mod client;
mod e2e;
