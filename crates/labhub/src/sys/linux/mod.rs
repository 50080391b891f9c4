//! Linux implementation of the platform layer.

pub mod log_sys;
