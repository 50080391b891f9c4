//! One frame of a ZeroMQ message, owned by libzmq's message structure.

use std::ffi::{CStr, CString, c_void};
use std::fmt;
use std::ops::Deref;

use labhub_zmq_sys as sys;

use crate::error::ZmqError;

/// One frame, received or to be sent, without copying its bytes.
///
/// Derefs to its bytes. A received frame can carry metadata ([`Message::property`], e.g. the
/// `User-Id` a ZAP handler assigned to the sender). A frame built from a `Vec<u8>` hands the
/// buffer to libzmq without copying; one built from a slice copies it.
pub struct Message {
    raw: sys::zmq_msg_t,
}

impl Message {
    /// An empty frame.
    pub fn new() -> Self {
        let mut raw = sys::zmq_msg_t::zeroed();
        // SAFETY: `raw` is writable storage of the right size and alignment; zmq_msg_init
        // cannot fail (it always returns 0).
        unsafe { sys::zmq_msg_init(&mut raw) };
        Self { raw }
    }

    /// A frame holding a copy of `data`.
    pub fn copy_from(data: &[u8]) -> Result<Self, ZmqError> {
        let mut raw = sys::zmq_msg_t::zeroed();
        // SAFETY: `raw` is writable storage for a zmq_msg_t.
        if unsafe { sys::zmq_msg_init_size(&mut raw, data.len()) } != 0 {
            return Err(ZmqError::last("zmq_msg_init_size", ""));
        }
        let mut msg = Self { raw };
        if !data.is_empty() {
            // SAFETY: the message was initialised with `data.len()` bytes owned by it alone,
            // so its data pointer is valid for that many writes and does not overlap `data`.
            unsafe {
                let dst = sys::zmq_msg_data(&mut msg.raw).cast::<u8>();
                std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            }
        }
        Ok(msg)
    }

    /// A frame that takes over `data` without copying; libzmq frees it when done.
    pub fn from_vec(data: Vec<u8>) -> Result<Self, ZmqError> {
        if data.is_empty() {
            return Ok(Self::new());
        }
        let boxed: Box<[u8]> = data.into_boxed_slice();
        let len = boxed.len();
        let ptr = Box::into_raw(boxed).cast::<u8>();
        let mut raw = sys::zmq_msg_t::zeroed();
        // SAFETY: `ptr` owns `len` bytes allocated as a Box<[u8]>; `free_boxed_slice` rebuilds
        // exactly that box from (ptr, hint = len) and is called once by libzmq.
        let rc = unsafe {
            sys::zmq_msg_init_data(
                &mut raw,
                ptr.cast::<c_void>(),
                len,
                Some(free_boxed_slice),
                len as *mut c_void,
            )
        };
        if rc != 0 {
            let err = ZmqError::last("zmq_msg_init_data", "");
            // SAFETY: libzmq refused the buffer (it frees nothing on failure); reclaim it.
            unsafe { free_boxed_slice(ptr.cast::<c_void>(), len as *mut c_void) };
            return Err(err);
        }
        Ok(Self { raw })
    }

    /// A frame that shares `data` without copying it: libzmq holds one reference until it has
    /// sent the frame, so the same bytes can back several frames (a frame kept to be sent
    /// again).
    pub fn from_shared(data: std::sync::Arc<Vec<u8>>) -> Result<Self, ZmqError> {
        if data.is_empty() {
            return Ok(Self::new());
        }
        let (ptr, len) = (data.as_ptr(), data.len());
        let hint = std::sync::Arc::into_raw(data);
        let mut raw = sys::zmq_msg_t::zeroed();
        // SAFETY: `ptr` points at `len` bytes of the Vec the Arc `hint` keeps alive and
        // unchanged (no `&mut` to a shared Vec exists); libzmq only reads them, then calls
        // `release_shared` once with `hint`, which gives the reference back.
        let rc = unsafe {
            sys::zmq_msg_init_data(
                &mut raw,
                ptr.cast_mut().cast::<c_void>(),
                len,
                Some(release_shared),
                hint.cast_mut().cast::<c_void>(),
            )
        };
        if rc != 0 {
            let err = ZmqError::last("zmq_msg_init_data", "");
            // SAFETY: libzmq refused the buffer and will not call the free function.
            unsafe { release_shared(ptr.cast_mut().cast::<c_void>(), hint.cast_mut().cast()) };
            return Err(err);
        }
        Ok(Self { raw })
    }

    /// A frame that refers to `data` without copying it and never frees it: one buffer can
    /// back any number of frames (tests send very large multipart messages this way).
    ///
    /// # Errors
    ///
    /// A libzmq error from `zmq_msg_init_data`.
    pub fn from_static(data: &'static [u8]) -> Result<Self, ZmqError> {
        if data.is_empty() {
            return Ok(Self::new());
        }
        let mut raw = sys::zmq_msg_t::zeroed();
        // SAFETY: `data` lives for the whole program and libzmq only reads it; with no free
        // function libzmq never frees it.
        let rc = unsafe {
            sys::zmq_msg_init_data(
                &mut raw,
                data.as_ptr().cast_mut().cast::<c_void>(),
                data.len(),
                None,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(ZmqError::last("zmq_msg_init_data", ""));
        }
        Ok(Self { raw })
    }

    /// The frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `raw` is initialised; zmq_msg_size only reads it.
        let len = unsafe { sys::zmq_msg_size(&self.raw) };
        if len == 0 {
            return &[];
        }
        // zmq_msg_data takes a mutable pointer but only computes the address of the content.
        let raw = std::ptr::from_ref(&self.raw).cast_mut();
        // SAFETY: the content of an initialised message is valid for `len` bytes for as long
        // as the message lives and is not modified while shared (this type never writes to it
        // after construction); the returned slice borrows `self`.
        unsafe { std::slice::from_raw_parts(sys::zmq_msg_data(raw).cast::<u8>(), len) }
    }

    /// Copies the bytes into a `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// Whether more frames of the same message follow this received frame.
    pub fn more(&self) -> bool {
        // SAFETY: `raw` is initialised; zmq_msg_more only reads it.
        unsafe { sys::zmq_msg_more(&self.raw) != 0 }
    }

    /// A metadata property of a received frame: `"User-Id"` (set by the ZAP handler),
    /// `"Peer-Address"`, `"Socket-Type"`, `"Routing-Id"`, or ZAP metadata. `None` if absent.
    pub fn property(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: `raw` is initialised and `name` NUL-terminated; zmq_msg_gets returns null or
        // a NUL-terminated string owned by the message's metadata, alive while the message is.
        let value = unsafe { sys::zmq_msg_gets(&self.raw, name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, alive for this call (see above).
        Some(
            unsafe { CStr::from_ptr(value) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// The `User-Id` a ZAP handler assigned to the connection this frame came from.
    pub fn user_id(&self) -> Option<String> {
        self.property("User-Id")
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut sys::zmq_msg_t {
        &mut self.raw
    }
}

/// Frees a buffer handed to libzmq by [`Message::from_vec`].
///
/// # Safety
///
/// `data` and `hint` (the length) must come from `Box::<[u8]>::into_raw` of a non-empty box,
/// and this must be called once per buffer.
unsafe extern "C" fn free_boxed_slice(data: *mut c_void, hint: *mut c_void) {
    let len = hint as usize;
    let slice = std::ptr::slice_from_raw_parts_mut(data.cast::<u8>(), len);
    // SAFETY: per this function's contract the pointer and length describe a Box<[u8]> that
    // nobody else frees. Dropping a byte box cannot panic, so nothing unwinds into libzmq.
    drop(unsafe { Box::from_raw(slice) });
}

/// Gives back the reference a [`Message::from_shared`] frame held.
///
/// # Safety
/// `hint` comes from `Arc::<Vec<u8>>::into_raw` and is passed here once.
unsafe extern "C" fn release_shared(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: per this function's contract. Dropping the Arc (and maybe the Vec) cannot
    // panic, so nothing unwinds into libzmq; Arc's count is atomic, so this may run on a
    // libzmq I/O thread.
    drop(unsafe { std::sync::Arc::from_raw(hint.cast_const().cast::<Vec<u8>>()) });
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: `raw` is initialised and closed exactly once, here.
        unsafe { sys::zmq_msg_close(&mut self.raw) };
    }
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len())
            .field("more", &self.more())
            .finish()
    }
}

// SAFETY: a message is plain storage plus (for large frames) a heap content block whose
// reference count libzmq updates atomically; it has no thread affinity, and closing it from
// another thread is allowed. The free callback of `from_vec` may run on any thread.
unsafe impl Send for Message {}
// SAFETY: shared access only reads the size, the data pointer and metadata, none of which
// change after construction or receipt.
unsafe impl Sync for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_from_a_vec_keeps_its_bytes() {
        let msg = Message::from_vec(vec![1, 2, 3]).unwrap();
        assert_eq!(&*msg, &[1, 2, 3]);
        let big = Message::from_vec(vec![7; 1 << 20]).unwrap();
        assert_eq!(big.len(), 1 << 20);
        assert!(big.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_copied_message_and_an_empty_message_have_the_right_bytes() {
        assert_eq!(&*Message::copy_from(b"hello").unwrap(), b"hello");
        assert!(Message::new().is_empty());
        assert!(Message::copy_from(b"").unwrap().is_empty());
        assert!(Message::from_vec(Vec::new()).unwrap().is_empty());
    }
}
