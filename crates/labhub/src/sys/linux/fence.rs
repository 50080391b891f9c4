//! Asymmetric memory fences: a compiler-only barrier on a hot path, paired with a
//! `membarrier(2)` call on a rare path that makes every CPU running a registered process execute
//! a full barrier.
//!
//! A Dekker pair (each side stores its flag, then loads the other's) needs a store-load barrier
//! on both sides. A channel's producer commits every frame but a consumer goes to sleep rarely,
//! so the producer takes the light side (no instruction at all) and the sleeping consumer the
//! heavy side (one system call, a few microseconds, which it was about to spend sleeping anyway).

use std::sync::atomic::{AtomicU8, Ordering, compiler_fence};

const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

/// 0 unknown, 1 worked, 2 refused for good (then no process can register either).
static HEAVY: AtomicU8 = AtomicU8::new(0);

fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: membarrier takes two integer arguments and touches no user memory; an unknown
    // command or a kernel without it returns -1 (EINVAL, ENOSYS, or EPERM under seccomp).
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    }
}

/// Registers this process so that [`heavy_fence`] in any process orders its memory accesses.
/// Returns whether it may then use [`light_fence`] in a Dekker pair; if not, it must use a full
/// (SeqCst) barrier itself. Idempotent; a child created by `fork` inherits the registration.
pub fn register_light_fence() -> bool {
    let supported = membarrier(MEMBARRIER_CMD_QUERY);
    if supported < 0 || supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED == 0 {
        return false;
    }
    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0
}

/// The light side: keeps the compiler from moving memory accesses across it, and costs nothing
/// at run time. Correct only in a process that [`register_light_fence`] accepted, paired with
/// [`heavy_fence`] on the other side.
#[inline(always)]
pub fn light_fence() {
    compiler_fence(Ordering::SeqCst);
}

/// The heavy side: a full barrier here and on every CPU now running a registered process
/// (processes not running are ordered by their context switch). Returns false if the kernel
/// refuses it; the caller must then not rely on other processes' light fences.
///
/// Its cost falls on every CPU running a registered process at the time (an inter-processor
/// interrupt each), not only on the producer of interest: keep it off per-frame paths.
pub fn heavy_fence() -> bool {
    if HEAVY.load(Ordering::Relaxed) == 2 {
        return false;
    }
    if membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0 {
        HEAVY.store(1, Ordering::Relaxed);
        return true;
    }
    // Remember only a refusal that will not change (no such system call or command, or a
    // seccomp filter); a transient failure (ENOMEM) is retried next time.
    let errno = std::io::Error::last_os_error().raw_os_error();
    if matches!(errno, Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)) {
        HEAVY.store(2, Ordering::Relaxed);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_and_heavy_fence_agree() {
        // On a kernel with membarrier (4.16+) both work; without it both report it.
        let registered = register_light_fence();
        assert_eq!(heavy_fence(), registered);
        assert_eq!(heavy_fence(), registered, "the cached answer is the same");
    }
}
