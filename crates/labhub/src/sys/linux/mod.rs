//! Linux implementation of the platform layer.

mod shm;
pub use shm::*;
