//! Linux implementation of the platform layer.

mod flock;
pub use flock::LockFile;
