//! Raw bindings to the part of the libzmq 4.3.5 C API that labhub uses.
//!
//! The build script compiles libzmq from the `zeromq-src` crate with CURVE enabled and links it
//! against the static libsodium built by `libsodium-sys-stable`, so `cargo build` needs no system
//! package. The declarations below are written by hand from libzmq's public `zmq.h` (4.3.5, stable
//! API only: no DRAFT symbols) and cover exactly what `labhub-zmq` calls; use that crate, not this
//! one.
//!
//! This crate declares `links = "zmq"`: a dependency graph that also contains another libzmq
//! build (`zmq-sys`, `zmq2-sys`) is refused by cargo instead of linking two copies.
//!
//! Errno values: on Linux and macOS the POSIX codes come from the system `errno.h` (zmq.h only
//! defines them where the platform lacks them), and libzmq adds its own codes above
//! [`ZMQ_HAUSNUMERO`]. Always read the error with [`zmq_errno`], not the C runtime's errno.

#![no_std]
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int, c_long, c_short, c_void};

// Keep the libsodium crate linked: libzmq's CURVE code calls into it.
use libsodium_sys as _;

/// Opaque message storage, 64 bytes aligned to a pointer, as `zmq_msg_t` in zmq.h.
///
/// Initialise with [`zmq_msg_init`] / [`zmq_msg_init_size`] / [`zmq_msg_init_data`] before any
/// other use and release with [`zmq_msg_close`]. libzmq may keep pointers into the storage only
/// while a call is in progress, so the value may be moved between calls.
/// Deliberately neither `Clone` nor `Copy`: a bitwise copy would be closed twice.
#[repr(C)]
pub struct zmq_msg_t {
    _data: [u8; 64],
    // Zero-sized, forces the pointer-size alignment zmq.h requests (`aligned(sizeof(void *))`)
    // without making the type !Send as a raw pointer member would.
    _align: [usize; 0],
}

impl zmq_msg_t {
    /// Storage to pass to one of the `zmq_msg_init*` functions.
    pub const fn zeroed() -> Self {
        Self {
            _data: [0; 64],
            _align: [],
        }
    }
}

const _: () = assert!(core::mem::size_of::<zmq_msg_t>() == 64);
const _: () = assert!(core::mem::align_of::<zmq_msg_t>() == core::mem::size_of::<*const u8>());

/// The socket handle type inside [`zmq_pollitem_t`] (`zmq_fd_t`).
#[cfg(unix)]
pub type zmq_fd_t = c_int;

/// One entry of a [`zmq_poll`] set, as `zmq_pollitem_t` in zmq.h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct zmq_pollitem_t {
    /// A libzmq socket, or null to poll `fd` instead.
    pub socket: *mut c_void,
    /// A file descriptor, used only when `socket` is null.
    pub fd: zmq_fd_t,
    /// Requested events (`ZMQ_POLLIN`, `ZMQ_POLLOUT`).
    pub events: c_short,
    /// Returned events.
    pub revents: c_short,
}

/// Deallocation callback of [`zmq_msg_init_data`]; libzmq may call it from any thread.
pub type zmq_free_fn = unsafe extern "C" fn(data: *mut c_void, hint: *mut c_void);

// ---- errors -------------------------------------------------------------------------------

/// Base of libzmq's own error codes.
pub const ZMQ_HAUSNUMERO: c_int = 156_384_712;
/// The operation is not valid in the socket's current state (e.g. REQ sending twice).
pub const EFSM: c_int = ZMQ_HAUSNUMERO + 51;
/// The requested transport protocol is not compatible with the socket type.
pub const ENOCOMPATPROTO: c_int = ZMQ_HAUSNUMERO + 52;
/// The context was terminated.
pub const ETERM: c_int = ZMQ_HAUSNUMERO + 53;
/// No I/O thread is available.
pub const EMTHREAD: c_int = ZMQ_HAUSNUMERO + 54;

/// System errno values libzmq reports (Linux numbering).
#[cfg(target_os = "linux")]
mod errno {
    use core::ffi::c_int;
    /// `ENOENT` from the platform's errno.h.
    pub const ENOENT: c_int = 2;
    /// `EINTR` from the platform's errno.h.
    pub const EINTR: c_int = 4;
    /// `EAGAIN` from the platform's errno.h.
    pub const EAGAIN: c_int = 11;
    /// `ENOMEM` from the platform's errno.h.
    pub const ENOMEM: c_int = 12;
    /// `EFAULT` from the platform's errno.h.
    pub const EFAULT: c_int = 14;
    /// `ENODEV` from the platform's errno.h.
    pub const ENODEV: c_int = 19;
    /// `EINVAL` from the platform's errno.h.
    pub const EINVAL: c_int = 22;
    /// `EMFILE` from the platform's errno.h.
    pub const EMFILE: c_int = 24;
    /// `ENOTSOCK` from the platform's errno.h.
    pub const ENOTSOCK: c_int = 88;
    /// `EMSGSIZE` from the platform's errno.h.
    pub const EMSGSIZE: c_int = 90;
    /// `EPROTONOSUPPORT` from the platform's errno.h.
    pub const EPROTONOSUPPORT: c_int = 93;
    /// `ENOTSUP` from the platform's errno.h.
    pub const ENOTSUP: c_int = 95;
    /// `EAFNOSUPPORT` from the platform's errno.h.
    pub const EAFNOSUPPORT: c_int = 97;
    /// `EADDRINUSE` from the platform's errno.h.
    pub const EADDRINUSE: c_int = 98;
    /// `EADDRNOTAVAIL` from the platform's errno.h.
    pub const EADDRNOTAVAIL: c_int = 99;
    /// `ENETDOWN` from the platform's errno.h.
    pub const ENETDOWN: c_int = 100;
    /// `ENETUNREACH` from the platform's errno.h.
    pub const ENETUNREACH: c_int = 101;
    /// `ENETRESET` from the platform's errno.h.
    pub const ENETRESET: c_int = 102;
    /// `ECONNABORTED` from the platform's errno.h.
    pub const ECONNABORTED: c_int = 103;
    /// `ECONNRESET` from the platform's errno.h.
    pub const ECONNRESET: c_int = 104;
    /// `ENOBUFS` from the platform's errno.h.
    pub const ENOBUFS: c_int = 105;
    /// `ENOTCONN` from the platform's errno.h.
    pub const ENOTCONN: c_int = 107;
    /// `ETIMEDOUT` from the platform's errno.h.
    pub const ETIMEDOUT: c_int = 110;
    /// `ECONNREFUSED` from the platform's errno.h.
    pub const ECONNREFUSED: c_int = 111;
    /// `EHOSTUNREACH` from the platform's errno.h.
    pub const EHOSTUNREACH: c_int = 113;
    /// `EINPROGRESS` from the platform's errno.h.
    pub const EINPROGRESS: c_int = 115;
}

/// System errno values libzmq reports (macOS numbering).
#[cfg(target_os = "macos")]
mod errno {
    use core::ffi::c_int;
    /// `ENOENT` from the platform's errno.h.
    pub const ENOENT: c_int = 2;
    /// `EINTR` from the platform's errno.h.
    pub const EINTR: c_int = 4;
    /// `EAGAIN` from the platform's errno.h.
    pub const EAGAIN: c_int = 35;
    /// `ENOMEM` from the platform's errno.h.
    pub const ENOMEM: c_int = 12;
    /// `EFAULT` from the platform's errno.h.
    pub const EFAULT: c_int = 14;
    /// `ENODEV` from the platform's errno.h.
    pub const ENODEV: c_int = 19;
    /// `EINVAL` from the platform's errno.h.
    pub const EINVAL: c_int = 22;
    /// `EMFILE` from the platform's errno.h.
    pub const EMFILE: c_int = 24;
    /// `ENOTSOCK` from the platform's errno.h.
    pub const ENOTSOCK: c_int = 38;
    /// `EMSGSIZE` from the platform's errno.h.
    pub const EMSGSIZE: c_int = 40;
    /// `EPROTONOSUPPORT` from the platform's errno.h.
    pub const EPROTONOSUPPORT: c_int = 43;
    /// `ENOTSUP` from the platform's errno.h.
    pub const ENOTSUP: c_int = 45;
    /// `EAFNOSUPPORT` from the platform's errno.h.
    pub const EAFNOSUPPORT: c_int = 47;
    /// `EADDRINUSE` from the platform's errno.h.
    pub const EADDRINUSE: c_int = 48;
    /// `EADDRNOTAVAIL` from the platform's errno.h.
    pub const EADDRNOTAVAIL: c_int = 49;
    /// `ENETDOWN` from the platform's errno.h.
    pub const ENETDOWN: c_int = 50;
    /// `ENETUNREACH` from the platform's errno.h.
    pub const ENETUNREACH: c_int = 51;
    /// `ENETRESET` from the platform's errno.h.
    pub const ENETRESET: c_int = 52;
    /// `ECONNABORTED` from the platform's errno.h.
    pub const ECONNABORTED: c_int = 53;
    /// `ECONNRESET` from the platform's errno.h.
    pub const ECONNRESET: c_int = 54;
    /// `ENOBUFS` from the platform's errno.h.
    pub const ENOBUFS: c_int = 55;
    /// `ENOTCONN` from the platform's errno.h.
    pub const ENOTCONN: c_int = 57;
    /// `ETIMEDOUT` from the platform's errno.h.
    pub const ETIMEDOUT: c_int = 60;
    /// `ECONNREFUSED` from the platform's errno.h.
    pub const ECONNREFUSED: c_int = 61;
    /// `EHOSTUNREACH` from the platform's errno.h.
    pub const EHOSTUNREACH: c_int = 65;
    /// `EINPROGRESS` from the platform's errno.h.
    pub const EINPROGRESS: c_int = 36;
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!(
    "labhub-zmq-sys: errno values are defined for Linux and macOS only; add this platform's"
);

pub use errno::*;

// ---- context ------------------------------------------------------------------------------

/// Context option: number of I/O threads.
pub const ZMQ_IO_THREADS: c_int = 1;
/// Context option: maximum number of sockets.
pub const ZMQ_MAX_SOCKETS: c_int = 2;
/// Context option: whether `zmq_ctx_term` blocks forever by default (LINGER -1 on new sockets).
pub const ZMQ_BLOCKY: c_int = 70;

// ---- socket types -------------------------------------------------------------------------

/// Exclusive pair.
pub const ZMQ_PAIR: c_int = 0;
/// Publisher.
pub const ZMQ_PUB: c_int = 1;
/// Subscriber.
pub const ZMQ_SUB: c_int = 2;
/// Strict request.
pub const ZMQ_REQ: c_int = 3;
/// Strict reply.
pub const ZMQ_REP: c_int = 4;
/// Asynchronous request, load-balanced.
pub const ZMQ_DEALER: c_int = 5;
/// Asynchronous reply, addressed by routing id.
pub const ZMQ_ROUTER: c_int = 6;
/// Pipeline receiver.
pub const ZMQ_PULL: c_int = 7;
/// Pipeline sender.
pub const ZMQ_PUSH: c_int = 8;
/// Publisher that sees subscriptions.
pub const ZMQ_XPUB: c_int = 9;
/// Subscriber that sends subscriptions as messages.
pub const ZMQ_XSUB: c_int = 10;

// ---- socket options -----------------------------------------------------------------------

/// Routing id of the socket (binary, 1..=255 bytes; `ZMQ_IDENTITY` before 4.2).
pub const ZMQ_ROUTING_ID: c_int = 5;
/// Alias of [`ZMQ_ROUTING_ID`].
pub const ZMQ_IDENTITY: c_int = ZMQ_ROUTING_ID;
/// SUB: add a topic prefix filter.
pub const ZMQ_SUBSCRIBE: c_int = 6;
/// SUB: remove a topic prefix filter.
pub const ZMQ_UNSUBSCRIBE: c_int = 7;
/// Whether more frames of the current message follow (int).
pub const ZMQ_RCVMORE: c_int = 13;
/// Pending events of the socket (int, `ZMQ_POLLIN | ZMQ_POLLOUT`).
pub const ZMQ_EVENTS: c_int = 15;
/// Socket type (int).
pub const ZMQ_TYPE: c_int = 16;
/// How long unsent messages are kept after close, ms (-1 forever, 0 drop).
pub const ZMQ_LINGER: c_int = 17;
/// Reconnect interval, ms.
pub const ZMQ_RECONNECT_IVL: c_int = 18;
/// Maximum reconnect interval, ms (0: no backoff).
pub const ZMQ_RECONNECT_IVL_MAX: c_int = 21;
/// Largest inbound message accepted, bytes (int64, -1 no limit).
pub const ZMQ_MAXMSGSIZE: c_int = 22;
/// Send high-water mark, messages.
pub const ZMQ_SNDHWM: c_int = 23;
/// Receive high-water mark, messages.
pub const ZMQ_RCVHWM: c_int = 24;
/// Receive timeout, ms (-1 forever).
pub const ZMQ_RCVTIMEO: c_int = 27;
/// Send timeout, ms (-1 forever).
pub const ZMQ_SNDTIMEO: c_int = 28;
/// Last endpoint bound or connected (string).
pub const ZMQ_LAST_ENDPOINT: c_int = 32;
/// ROUTER: fail with EHOSTUNREACH on unroutable messages instead of dropping them.
pub const ZMQ_ROUTER_MANDATORY: c_int = 33;
/// TCP keepalive (-1 OS default, 0 off, 1 on).
pub const ZMQ_TCP_KEEPALIVE: c_int = 34;
/// Queue messages only to completed connections.
pub const ZMQ_IMMEDIATE: c_int = 39;
/// XPUB: pass every subscription message up, duplicates included (int 0/1).
pub const ZMQ_XPUB_VERBOSE: c_int = 40;
/// Security mechanism in use (int: `ZMQ_NULL`, `ZMQ_PLAIN`, `ZMQ_CURVE`).
pub const ZMQ_MECHANISM: c_int = 43;
/// Act as CURVE server (int 0/1).
pub const ZMQ_CURVE_SERVER: c_int = 47;
/// Long-term public key (32 bytes binary or 40 Z85 characters).
pub const ZMQ_CURVE_PUBLICKEY: c_int = 48;
/// Long-term secret key (32 bytes binary or 40 Z85 characters).
pub const ZMQ_CURVE_SECRETKEY: c_int = 49;
/// Server's public key, set on a CURVE client (32 bytes binary or 40 Z85 characters).
pub const ZMQ_CURVE_SERVERKEY: c_int = 50;
/// REQ: match replies to requests.
pub const ZMQ_REQ_CORRELATE: c_int = 52;
/// REQ: allow a new request without waiting for the reply (recovers from a lost reply).
pub const ZMQ_REQ_RELAXED: c_int = 53;
/// ZAP domain of the socket (string).
pub const ZMQ_ZAP_DOMAIN: c_int = 55;
/// ZMTP handshake time limit, ms (0 none).
pub const ZMQ_HANDSHAKE_IVL: c_int = 66;
/// Interval between ZMTP heartbeat PINGs, ms (0 off).
pub const ZMQ_HEARTBEAT_IVL: c_int = 75;
/// Time to live announced to the peer in PINGs, ms.
pub const ZMQ_HEARTBEAT_TTL: c_int = 76;
/// How long to wait for a PONG before closing the connection, ms.
pub const ZMQ_HEARTBEAT_TIMEOUT: c_int = 77;
/// Connect timeout for TCP, ms (0 OS default).
pub const ZMQ_CONNECT_TIMEOUT: c_int = 79;

// ---- message properties and send/recv flags ----------------------------------------------

/// Message property: more frames follow.
pub const ZMQ_MORE: c_int = 1;
/// Send/recv flag: do not block; fail with EAGAIN instead.
pub const ZMQ_DONTWAIT: c_int = 1;
/// Send flag: more frames follow this one.
pub const ZMQ_SNDMORE: c_int = 2;

// ---- security mechanisms ------------------------------------------------------------------

/// No security.
pub const ZMQ_NULL: c_int = 0;
/// Clear-text user name and password.
pub const ZMQ_PLAIN: c_int = 1;
/// CurveZMQ.
pub const ZMQ_CURVE: c_int = 2;

// ---- poll ---------------------------------------------------------------------------------

/// At least one message can be received without blocking.
pub const ZMQ_POLLIN: c_short = 1;
/// At least one message can be sent without blocking.
pub const ZMQ_POLLOUT: c_short = 2;
/// Error on a plain file descriptor.
pub const ZMQ_POLLERR: c_short = 4;

// ---- monitor events -----------------------------------------------------------------------

/// Connection established.
pub const ZMQ_EVENT_CONNECTED: u16 = 0x0001;
/// Synchronous connect failed, it is being retried.
pub const ZMQ_EVENT_CONNECT_DELAYED: u16 = 0x0002;
/// Asynchronous reconnect attempt.
pub const ZMQ_EVENT_CONNECT_RETRIED: u16 = 0x0004;
/// Socket bound to an address, ready to accept.
pub const ZMQ_EVENT_LISTENING: u16 = 0x0008;
/// Bind failed.
pub const ZMQ_EVENT_BIND_FAILED: u16 = 0x0010;
/// Connection accepted.
pub const ZMQ_EVENT_ACCEPTED: u16 = 0x0020;
/// Accept failed.
pub const ZMQ_EVENT_ACCEPT_FAILED: u16 = 0x0040;
/// Connection closed.
pub const ZMQ_EVENT_CLOSED: u16 = 0x0080;
/// Close failed.
pub const ZMQ_EVENT_CLOSE_FAILED: u16 = 0x0100;
/// Session broken.
pub const ZMQ_EVENT_DISCONNECTED: u16 = 0x0200;
/// Monitoring stopped.
pub const ZMQ_EVENT_MONITOR_STOPPED: u16 = 0x0400;
/// Handshake failed for an unspecified system reason; value is an errno.
pub const ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: u16 = 0x0800;
/// Handshake (and authentication, if any) succeeded.
pub const ZMQ_EVENT_HANDSHAKE_SUCCEEDED: u16 = 0x1000;
/// ZMTP or ZAP protocol error; value is a `ZMQ_PROTOCOL_ERROR_*` code.
pub const ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: u16 = 0x2000;
/// Authentication refused; value is the ZAP status code (300, 400, 500).
pub const ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: u16 = 0x4000;
/// Every event.
pub const ZMQ_EVENT_ALL: c_int = 0xFFFF;

unsafe extern "C" {
    /// The calling thread's last libzmq error code.
    pub fn zmq_errno() -> c_int;
    /// Static, NUL-terminated description of an error code.
    pub fn zmq_strerror(errnum: c_int) -> *const c_char;
    /// The library version.
    pub fn zmq_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
    /// 1 if the library supports a capability ("ipc", "curve", ...), else 0.
    pub fn zmq_has(capability: *const c_char) -> c_int;

    /// A new context, or null.
    pub fn zmq_ctx_new() -> *mut c_void;
    /// Terminates a context: blocks until every socket is closed and lingering is over.
    pub fn zmq_ctx_term(context: *mut c_void) -> c_int;
    /// Makes every blocking call on the context's sockets fail with ETERM; does not free it.
    pub fn zmq_ctx_shutdown(context: *mut c_void) -> c_int;
    /// Sets an integer context option.
    pub fn zmq_ctx_set(context: *mut c_void, option: c_int, optval: c_int) -> c_int;
    /// Reads an integer context option.
    pub fn zmq_ctx_get(context: *mut c_void, option: c_int) -> c_int;

    /// Initialises an empty message.
    pub fn zmq_msg_init(msg: *mut zmq_msg_t) -> c_int;
    /// Initialises a message of `size` uninitialised bytes.
    pub fn zmq_msg_init_size(msg: *mut zmq_msg_t, size: usize) -> c_int;
    /// Initialises a message that takes ownership of `data`, released through `ffn(data, hint)`.
    pub fn zmq_msg_init_data(
        msg: *mut zmq_msg_t,
        data: *mut c_void,
        size: usize,
        ffn: Option<zmq_free_fn>,
        hint: *mut c_void,
    ) -> c_int;
    /// Sends a message frame; on success the message is emptied (ownership passes to libzmq).
    pub fn zmq_msg_send(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    /// Receives a frame into an initialised message; returns its size or -1.
    pub fn zmq_msg_recv(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    /// Releases a message.
    pub fn zmq_msg_close(msg: *mut zmq_msg_t) -> c_int;
    /// Pointer to the message content.
    pub fn zmq_msg_data(msg: *mut zmq_msg_t) -> *mut c_void;
    /// Size of the message content.
    pub fn zmq_msg_size(msg: *const zmq_msg_t) -> usize;
    /// 1 if more frames follow this received one.
    pub fn zmq_msg_more(msg: *const zmq_msg_t) -> c_int;
    /// A metadata property of a received message ("User-Id", "Peer-Address", ...), or null.
    pub fn zmq_msg_gets(msg: *const zmq_msg_t, property: *const c_char) -> *const c_char;

    /// A new socket of the given type, or null.
    pub fn zmq_socket(context: *mut c_void, type_: c_int) -> *mut c_void;
    /// Closes a socket; pending messages linger per ZMQ_LINGER inside the context.
    pub fn zmq_close(socket: *mut c_void) -> c_int;
    /// Sets a socket option from a buffer.
    pub fn zmq_setsockopt(
        socket: *mut c_void,
        option: c_int,
        optval: *const c_void,
        optvallen: usize,
    ) -> c_int;
    /// Reads a socket option into a buffer; `optvallen` is in/out.
    pub fn zmq_getsockopt(
        socket: *mut c_void,
        option: c_int,
        optval: *mut c_void,
        optvallen: *mut usize,
    ) -> c_int;
    /// Binds to an endpoint (NUL-terminated).
    pub fn zmq_bind(socket: *mut c_void, addr: *const c_char) -> c_int;
    /// Connects to an endpoint (NUL-terminated).
    pub fn zmq_connect(socket: *mut c_void, addr: *const c_char) -> c_int;
    /// Stops listening on a bound endpoint.
    pub fn zmq_unbind(socket: *mut c_void, addr: *const c_char) -> c_int;
    /// Disconnects from a connected endpoint.
    pub fn zmq_disconnect(socket: *mut c_void, addr: *const c_char) -> c_int;
    /// Sends a frame copied from a buffer.
    pub fn zmq_send(socket: *mut c_void, buf: *const c_void, len: usize, flags: c_int) -> c_int;
    /// Starts publishing the socket's events on a PAIR endpoint (`inproc://...`); null stops.
    pub fn zmq_socket_monitor(socket: *mut c_void, addr: *const c_char, events: c_int) -> c_int;
    /// As `zmq_socket_monitor`, choosing the event format: version 2 sends the event as a
    /// u64, a value count, the values (u64 each), then the local and the remote endpoint.
    /// Part of libzmq 4.3's DRAFT API, which the build enables.
    pub fn zmq_socket_monitor_versioned(
        socket: *mut c_void,
        addr: *const c_char,
        events: u64,
        event_version: c_int,
        socket_type: c_int,
    ) -> c_int;

    /// Waits for events on several sockets; `timeout` ms (-1 forever). Returns the number of
    /// items with events, or -1.
    pub fn zmq_poll(items: *mut zmq_pollitem_t, nitems: c_int, timeout: c_long) -> c_int;

    /// Z85-encodes `size` bytes (a multiple of 4) into `dest` (size * 5 / 4 + 1 bytes, NUL
    /// included); returns `dest` or null.
    pub fn zmq_z85_encode(dest: *mut c_char, data: *const u8, size: usize) -> *mut c_char;
    /// Decodes a NUL-terminated Z85 string (length a multiple of 5) into `dest`
    /// (len * 4 / 5 bytes); returns `dest` or null.
    pub fn zmq_z85_decode(dest: *mut u8, string: *const c_char) -> *mut u8;
    /// Generates a CURVE key pair as two 41-byte Z85 strings (NUL included).
    pub fn zmq_curve_keypair(z85_public_key: *mut c_char, z85_secret_key: *mut c_char) -> c_int;
    /// Derives the Z85 public key (41 bytes out) from a Z85 secret key (40 characters + NUL).
    pub fn zmq_curve_public(z85_public_key: *mut c_char, z85_secret_key: *const c_char) -> c_int;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn linked_library_is_4_3_5_with_curve() {
        let (mut major, mut minor, mut patch) = (0, 0, 0);
        // SAFETY: three valid, writable int pointers.
        unsafe { zmq_version(&mut major, &mut minor, &mut patch) };
        assert_eq!((major, minor, patch), (4, 3, 5));
        // SAFETY: a NUL-terminated static string.
        assert_eq!(unsafe { zmq_has(c"curve".as_ptr()) }, 1);
    }
}
