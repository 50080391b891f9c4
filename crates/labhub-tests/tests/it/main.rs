//! labhub's integration tests: one binary, one module per concept (one link on a 2-core CI).

mod lifecycle;
mod log;
