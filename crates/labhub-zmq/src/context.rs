//! The libzmq context: I/O threads and the sockets' shared state.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use labhub_zmq_sys as sys;

use crate::error::{ZmqError, last_errno};
use crate::socket::{Socket, SocketType};

/// LINGER given to every new socket: how long unsent messages are kept after the socket is
/// closed. libzmq's default is forever, which makes terminating the context hang on a message
/// queued for a dead peer; a small bound keeps shutdown prompt while letting a last reply leave.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);

/// A libzmq context, shared by the sockets created from it. Cheap to clone; `Send + Sync`.
///
/// Every [`Socket`] keeps its context alive, so the context is terminated (`zmq_ctx_term`) only
/// after the last clone of it *and* its last socket are dropped: termination never waits for an
/// open socket, and since every socket is created with [`DEFAULT_LINGER`], it never waits
/// long for unsent messages either (unless a socket's LINGER was set to forever).
///
/// To wake threads blocked in a receive on this context's sockets, call [`Context::shutdown`]:
/// their calls then fail with `ETERM` ([`ZmqError::is_term`]).
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<RawContext>,
}

pub(crate) struct RawContext {
    ptr: *mut c_void,
}

// SAFETY: a libzmq context is thread-safe: zmq_socket, zmq_ctx_shutdown and zmq_ctx_term may be
// called from any thread (zmq_ctx(3)); the pointer is never written after creation.
unsafe impl Send for RawContext {}
// SAFETY: as above; all context functions are safe to call concurrently.
unsafe impl Sync for RawContext {}

impl RawContext {
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.ptr
    }
}

impl Drop for RawContext {
    fn drop(&mut self) {
        // Runs when the last Context clone and the last Socket are gone, so no socket is open:
        // zmq_ctx_term only waits for lingering messages, bounded by each socket's LINGER.
        loop {
            // SAFETY: `ptr` is a live context terminated exactly once; EINTR means it was not
            // terminated and must be retried.
            let rc = unsafe { sys::zmq_ctx_term(self.ptr) };
            if rc == 0 || last_errno() != sys::EINTR {
                break;
            }
        }
    }
}

impl Context {
    /// A new context with one I/O thread.
    pub fn new() -> Result<Self, ZmqError> {
        // SAFETY: zmq_ctx_new has no preconditions; it returns null on failure.
        let ptr = unsafe { sys::zmq_ctx_new() };
        if ptr.is_null() {
            return Err(ZmqError::last("zmq_ctx_new", ""));
        }
        let context = Self {
            inner: Arc::new(RawContext { ptr }),
        };
        // Not blocky: sockets created by other code on this context also default to LINGER 0
        // rather than forever. Every Socket of this crate sets DEFAULT_LINGER anyway.
        context.set_option("ZMQ_BLOCKY", sys::ZMQ_BLOCKY, 0)?;
        Ok(context)
    }

    /// Sets the number of I/O threads; only effective before the first socket is created.
    pub fn set_io_threads(&self, threads: i32) -> Result<(), ZmqError> {
        self.set_option("ZMQ_IO_THREADS", sys::ZMQ_IO_THREADS, threads)
    }

    fn set_option(&self, name: &'static str, option: i32, value: i32) -> Result<(), ZmqError> {
        // SAFETY: the context is alive (we hold it); zmq_ctx_set validates option and value.
        let rc = unsafe { sys::zmq_ctx_set(self.inner.as_ptr(), option, value) };
        if rc != 0 {
            return Err(ZmqError::last("zmq_ctx_set", name));
        }
        Ok(())
    }

    /// A new socket of this context, with LINGER set to [`DEFAULT_LINGER`].
    pub fn socket(&self, kind: SocketType) -> Result<Socket, ZmqError> {
        Socket::new(self, kind)
    }

    /// Makes every blocking call on this context's sockets, current and future, fail with
    /// `ETERM`, and new sockets fail to be created. Sockets must still be dropped; the context
    /// is freed when the last one is.
    pub fn shutdown(&self) {
        // SAFETY: the context is alive; zmq_ctx_shutdown is thread-safe and idempotent.
        unsafe { sys::zmq_ctx_shutdown(self.inner.as_ptr()) };
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("ptr", &self.inner.ptr)
            .finish()
    }
}
