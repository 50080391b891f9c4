//! Linux implementation of the platform layer.

pub mod log_sys;

mod fence;
pub use fence::{heavy_fence, light_fence, register_light_fence};
mod flock;
pub use flock::LockFile;
mod futex;
mod memfd;
mod process;
mod shm;
mod unix;

#[cfg(feature = "test-support")]
pub use futex::disable_robust_list_for_current_thread;
pub use futex::{
    ROBUST_NODE_OFFSET, RobustListNode, ThreadContext, current_thread, futex_wait, futex_wake,
};
pub use memfd::*;
pub use process::{ProcessId, getpid, gettid, thread_alive};
pub use shm::*;
#[cfg_attr(not(feature = "zmq"), allow(unused_imports))]
pub use unix::*;

/// Names (with the leading `/`) of this machine's POSIX shared-memory objects that start with
/// `prefix` (which itself starts with `/`). Linux keeps them as the files of `/dev/shm`.
pub fn shm_list(prefix: &str) -> std::io::Result<Vec<String>> {
    let bare = prefix.strip_prefix('/').unwrap_or(prefix);
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with(bare)
        {
            names.push(format!("/{name}"));
        }
    }
    names.sort();
    Ok(names)
}
