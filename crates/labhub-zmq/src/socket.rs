//! Sockets: creation, endpoints, sending and receiving, options.

use std::cell::Cell;
use std::ffi::{CString, c_int, c_void};
use std::marker::PhantomData;
use std::ops::BitOr;
use std::sync::Arc;
use std::time::Duration;

use labhub_zmq_sys as sys;

use crate::context::{Context, DEFAULT_LINGER, RawContext};
use crate::curve::{CurvePublicKey, CurveSecretKey};
use crate::error::{ZmqError, last_errno};
use crate::message::Message;

/// The ZeroMQ socket patterns labhub uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketType {
    /// Exclusive pair (in-process signalling).
    Pair,
    /// Publisher: fans out to subscribers, drops when they are slow.
    Pub,
    /// Subscriber: receives the publisher's messages matching its topic prefixes.
    Sub,
    /// Strict request (send, receive, send, ...).
    Req,
    /// Strict reply (receive, send, ...).
    Rep,
    /// Asynchronous request side, load-balanced over its connections.
    Dealer,
    /// Asynchronous reply side; the first frame of each message is the peer's routing id.
    Router,
    /// Pipeline receiver.
    Pull,
    /// Pipeline sender.
    Push,
    /// Publisher that receives subscriptions as messages.
    XPub,
    /// Subscriber that sends subscriptions as messages.
    XSub,
}

impl SocketType {
    fn raw(self) -> c_int {
        match self {
            Self::Pair => sys::ZMQ_PAIR,
            Self::Pub => sys::ZMQ_PUB,
            Self::Sub => sys::ZMQ_SUB,
            Self::Req => sys::ZMQ_REQ,
            Self::Rep => sys::ZMQ_REP,
            Self::Dealer => sys::ZMQ_DEALER,
            Self::Router => sys::ZMQ_ROUTER,
            Self::Pull => sys::ZMQ_PULL,
            Self::Push => sys::ZMQ_PUSH,
            Self::XPub => sys::ZMQ_XPUB,
            Self::XSub => sys::ZMQ_XSUB,
        }
    }
}

/// The security mechanism of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// No security.
    Null,
    /// Clear-text user name and password.
    Plain,
    /// CurveZMQ.
    Curve,
    /// Another mechanism (GSSAPI).
    Other(i32),
}

/// Flags of a send or receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(c_int);

impl Flags {
    /// Block (within SNDTIMEO/RCVTIMEO).
    pub const NONE: Flags = Flags(0);
    /// Do not block: fail with `EAGAIN` ([`ZmqError::is_again`]) instead.
    pub const DONTWAIT: Flags = Flags(sys::ZMQ_DONTWAIT);
    /// Sending: more frames of this message follow.
    pub const SNDMORE: Flags = Flags(sys::ZMQ_SNDMORE);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// A libzmq socket. `Send` but not `Sync`: one thread owns it at a time (libzmq sockets are not
/// thread-safe); move it to another thread rather than share it.
///
/// Created with LINGER = [`DEFAULT_LINGER`]. Dropping it closes it; the context outlives it.
pub struct Socket {
    ptr: *mut c_void,
    // Keeps the context alive until this socket is closed.
    pub(crate) context: Arc<RawContext>,
    kind: SocketType,
    // The PAIR receiving this socket's monitor events, if enabled (see monitor.rs).
    pub(crate) monitor: Option<Box<Socket>>,
    // !Sync: libzmq sockets must not be used from two threads at once.
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: libzmq allows a socket to migrate between threads provided a full memory barrier
// separates the uses (zmq_socket(3)); moving a value to another thread in Rust implies one.
// The type is !Sync, so two threads never use it at once.
unsafe impl Send for Socket {}

impl Socket {
    /// A new socket in `context`, with LINGER = [`DEFAULT_LINGER`].
    pub fn new(context: &Context, kind: SocketType) -> Result<Self, ZmqError> {
        // SAFETY: the context is alive (borrowed); zmq_socket returns null on failure.
        let ptr = unsafe { sys::zmq_socket(context.inner.as_ptr(), kind.raw()) };
        if ptr.is_null() {
            return Err(ZmqError::last("zmq_socket", format!("{kind:?}")));
        }
        let socket = Self {
            ptr,
            context: Arc::clone(&context.inner),
            kind,
            monitor: None,
            _not_sync: PhantomData,
        };
        socket.set_linger(Some(DEFAULT_LINGER))?;
        Ok(socket)
    }

    /// The socket's type.
    pub fn socket_type(&self) -> SocketType {
        self.kind
    }

    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.ptr
    }

    // ---- endpoints ------------------------------------------------------------------------

    fn endpoint_call(
        &self,
        op: &'static str,
        endpoint: &str,
        call: unsafe extern "C" fn(*mut c_void, *const std::ffi::c_char) -> c_int,
    ) -> Result<(), ZmqError> {
        let c_endpoint = CString::new(endpoint)
            .map_err(|_| ZmqError::invalid(op, "endpoint", format!("{endpoint:?} contains NUL")))?;
        // SAFETY: the socket is open and used by this thread only; the endpoint is a
        // NUL-terminated string alive for the call; `call` is one of zmq_bind/connect/unbind/
        // disconnect, all with this signature.
        let rc = unsafe { call(self.ptr, c_endpoint.as_ptr()) };
        if rc != 0 {
            return Err(ZmqError::last(op, endpoint));
        }
        Ok(())
    }

    /// Binds to an endpoint (`tcp://127.0.0.1:0` picks a free port: see
    /// [`Socket::last_endpoint`]; `ipc:///path`; `inproc://name`).
    pub fn bind(&self, endpoint: &str) -> Result<(), ZmqError> {
        self.endpoint_call("zmq_bind", endpoint, sys::zmq_bind)
    }

    /// Connects to an endpoint; succeeds before the peer exists (connection is asynchronous).
    pub fn connect(&self, endpoint: &str) -> Result<(), ZmqError> {
        self.endpoint_call("zmq_connect", endpoint, sys::zmq_connect)
    }

    /// Stops listening on an endpoint given to [`Socket::bind`] (use the resolved endpoint from
    /// [`Socket::last_endpoint`] for a wildcard port).
    pub fn unbind(&self, endpoint: &str) -> Result<(), ZmqError> {
        self.endpoint_call("zmq_unbind", endpoint, sys::zmq_unbind)
    }

    /// Disconnects from an endpoint given to [`Socket::connect`].
    pub fn disconnect(&self, endpoint: &str) -> Result<(), ZmqError> {
        self.endpoint_call("zmq_disconnect", endpoint, sys::zmq_disconnect)
    }

    /// The last endpoint bound or connected, resolved: after binding `tcp://127.0.0.1:0` it
    /// names the port the system chose, e.g. `tcp://127.0.0.1:41234`.
    pub fn last_endpoint(&self) -> Result<String, ZmqError> {
        let bytes = self.get_bytes("ZMQ_LAST_ENDPOINT", sys::ZMQ_LAST_ENDPOINT, 1024)?;
        let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    // ---- sending --------------------------------------------------------------------------

    /// Sends one frame copied from `data`. With [`Flags::SNDMORE`] more frames follow.
    ///
    /// Retries when interrupted by a signal. Fails with `EAGAIN` under [`Flags::DONTWAIT`] or
    /// when SNDTIMEO expires, with `EHOSTUNREACH` on a ROUTER with ROUTER_MANDATORY and an
    /// unknown routing id.
    pub fn send(&self, data: impl AsRef<[u8]>, flags: Flags) -> Result<(), ZmqError> {
        let data = data.as_ref();
        loop {
            // SAFETY: the socket is open and owned by this thread; `data` is valid for
            // `data.len()` bytes, which libzmq copies before returning.
            let rc = unsafe {
                sys::zmq_send(
                    self.ptr,
                    data.as_ptr().cast::<c_void>(),
                    data.len(),
                    flags.0,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            if last_errno() != sys::EINTR {
                return Err(ZmqError::last("zmq_send", ""));
            }
        }
    }

    /// Sends one frame without copying it. With [`Flags::SNDMORE`] more frames follow.
    pub fn send_msg(&self, mut msg: Message, flags: Flags) -> Result<(), ZmqError> {
        loop {
            // SAFETY: the socket is open and owned by this thread; `msg` is initialised. On
            // success libzmq takes the content and leaves `msg` empty, still to be closed (its
            // Drop does it); on failure `msg` is unchanged.
            let rc = unsafe { sys::zmq_msg_send(msg.as_mut_ptr(), self.ptr, flags.0) };
            if rc >= 0 {
                return Ok(());
            }
            if last_errno() != sys::EINTR {
                return Err(ZmqError::last("zmq_msg_send", ""));
            }
        }
    }

    /// Sends a message of several frames (each copied). `flags` applies to every frame
    /// ([`Flags::DONTWAIT`]: once the first frame is accepted the rest are too).
    ///
    /// An empty list is refused: ZeroMQ messages have at least one frame.
    pub fn send_multipart<I, T>(&self, frames: I, flags: Flags) -> Result<(), ZmqError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut frames = frames.into_iter().peekable();
        if frames.peek().is_none() {
            return Err(ZmqError::invalid(
                "send_multipart",
                "frames",
                "a message needs at least one frame",
            ));
        }
        let flags = flags.without(Flags::SNDMORE);
        while let Some(frame) = frames.next() {
            let more = if frames.peek().is_some() {
                Flags::SNDMORE
            } else {
                Flags::NONE
            };
            self.send(frame, flags | more)?;
        }
        Ok(())
    }

    /// Sends a message of several frames without copying them.
    pub fn send_multipart_msgs(&self, frames: Vec<Message>, flags: Flags) -> Result<(), ZmqError> {
        if frames.is_empty() {
            return Err(ZmqError::invalid(
                "send_multipart_msgs",
                "frames",
                "a message needs at least one frame",
            ));
        }
        let flags = flags.without(Flags::SNDMORE);
        let last = frames.len() - 1;
        for (i, frame) in frames.into_iter().enumerate() {
            let more = if i < last {
                Flags::SNDMORE
            } else {
                Flags::NONE
            };
            self.send_msg(frame, flags | more)?;
        }
        Ok(())
    }

    // ---- receiving ------------------------------------------------------------------------

    /// Receives one frame ([`Message::more`] tells whether others follow).
    ///
    /// Retries when interrupted by a signal (the RCVTIMEO wait then starts again). Fails with
    /// `EAGAIN` ([`ZmqError::is_timeout`]) under [`Flags::DONTWAIT`] or when RCVTIMEO expires;
    /// the socket stays usable.
    pub fn recv(&self, flags: Flags) -> Result<Message, ZmqError> {
        let mut msg = Message::new();
        loop {
            // SAFETY: the socket is open and owned by this thread; `msg` is an initialised
            // message, which zmq_msg_recv replaces with the received frame.
            let rc = unsafe { sys::zmq_msg_recv(msg.as_mut_ptr(), self.ptr, flags.0) };
            if rc >= 0 {
                return Ok(msg);
            }
            if last_errno() != sys::EINTR {
                return Err(ZmqError::last("zmq_msg_recv", ""));
            }
        }
    }

    /// Receives all frames of one message. With [`Flags::DONTWAIT`], fails with `EAGAIN` if no
    /// message is waiting (frames of a message arrive together, so the rest never wait).
    pub fn recv_multipart(&self, flags: Flags) -> Result<Vec<Message>, ZmqError> {
        let mut frames = Vec::with_capacity(4);
        let first = self.recv(flags)?;
        let mut more = first.more();
        frames.push(first);
        while more {
            let frame = self.recv(Flags::NONE)?;
            more = frame.more();
            frames.push(frame);
        }
        Ok(frames)
    }

    /// [`Socket::recv_multipart`], each frame copied into a `Vec<u8>`.
    pub fn recv_multipart_bytes(&self, flags: Flags) -> Result<Vec<Vec<u8>>, ZmqError> {
        Ok(self
            .recv_multipart(flags)?
            .iter()
            .map(Message::to_vec)
            .collect())
    }

    // ---- raw options ----------------------------------------------------------------------

    fn set_raw(&self, name: &'static str, option: c_int, value: &[u8]) -> Result<(), ZmqError> {
        // SAFETY: the socket is open and owned by this thread; `value` is valid for its length
        // and libzmq copies it.
        let rc = unsafe {
            sys::zmq_setsockopt(
                self.ptr,
                option,
                value.as_ptr().cast::<c_void>(),
                value.len(),
            )
        };
        if rc != 0 {
            return Err(ZmqError::last("zmq_setsockopt", name));
        }
        Ok(())
    }

    fn set_int(&self, name: &'static str, option: c_int, value: c_int) -> Result<(), ZmqError> {
        self.set_raw(name, option, &value.to_ne_bytes())
    }

    fn set_bool(&self, name: &'static str, option: c_int, value: bool) -> Result<(), ZmqError> {
        self.set_int(name, option, c_int::from(value))
    }

    fn set_millis(
        &self,
        name: &'static str,
        option: c_int,
        value: Option<Duration>,
    ) -> Result<(), ZmqError> {
        let ms = match value {
            None => -1,
            Some(d) => duration_to_millis(name, d)?,
        };
        self.set_int(name, option, ms)
    }

    fn get_bytes(
        &self,
        name: &'static str,
        option: c_int,
        capacity: usize,
    ) -> Result<Vec<u8>, ZmqError> {
        let mut buf = vec![0u8; capacity];
        let mut len = buf.len();
        // SAFETY: the socket is open and owned by this thread; `buf` is writable for `len`
        // bytes and libzmq writes at most `len`, storing the actual length back.
        let rc = unsafe {
            sys::zmq_getsockopt(
                self.ptr,
                option,
                buf.as_mut_ptr().cast::<c_void>(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(ZmqError::last("zmq_getsockopt", name));
        }
        buf.truncate(len);
        Ok(buf)
    }

    fn get_int(&self, name: &'static str, option: c_int) -> Result<c_int, ZmqError> {
        let bytes = self.get_bytes(name, option, size_of::<c_int>())?;
        let array: [u8; size_of::<c_int>()] = bytes.as_slice().try_into().map_err(|_| {
            ZmqError::invalid(
                "zmq_getsockopt",
                "option size",
                format!("{name}: {} bytes", bytes.len()),
            )
        })?;
        Ok(c_int::from_ne_bytes(array))
    }

    fn get_millis(&self, name: &'static str, option: c_int) -> Result<Option<Duration>, ZmqError> {
        let ms = self.get_int(name, option)?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    // ---- typed options --------------------------------------------------------------------

    /// LINGER: how long unsent messages are kept after close; `None` is forever (which can
    /// make context termination hang on a dead peer). Default here: [`DEFAULT_LINGER`].
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_LINGER", sys::ZMQ_LINGER, linger)
    }

    /// LINGER; `None` is forever.
    pub fn linger(&self) -> Result<Option<Duration>, ZmqError> {
        self.get_millis("ZMQ_LINGER", sys::ZMQ_LINGER)
    }

    /// RCVTIMEO: how long a receive waits before failing with `EAGAIN`; `None` is forever.
    pub fn set_rcvtimeo(&self, timeout: Option<Duration>) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_RCVTIMEO", sys::ZMQ_RCVTIMEO, timeout)
    }

    /// RCVTIMEO; `None` is forever.
    pub fn rcvtimeo(&self) -> Result<Option<Duration>, ZmqError> {
        self.get_millis("ZMQ_RCVTIMEO", sys::ZMQ_RCVTIMEO)
    }

    /// SNDTIMEO: how long a send waits for room before failing with `EAGAIN`; `None` forever.
    pub fn set_sndtimeo(&self, timeout: Option<Duration>) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_SNDTIMEO", sys::ZMQ_SNDTIMEO, timeout)
    }

    /// ROUTING_ID (formerly IDENTITY): how a ROUTER peer addresses this socket; 1 to 255
    /// bytes, set before connecting. Random defaults can collide across restarts: set it.
    pub fn set_routing_id(&self, id: &[u8]) -> Result<(), ZmqError> {
        if id.is_empty() || id.len() > 255 {
            return Err(ZmqError::invalid(
                "set_routing_id",
                "routing id",
                format!("must be 1 to 255 bytes, found {}", id.len()),
            ));
        }
        self.set_raw("ZMQ_ROUTING_ID", sys::ZMQ_ROUTING_ID, id)
    }

    /// ROUTING_ID (empty if none was set).
    pub fn routing_id(&self) -> Result<Vec<u8>, ZmqError> {
        self.get_bytes("ZMQ_ROUTING_ID", sys::ZMQ_ROUTING_ID, 255)
    }

    /// RCVHWM: messages queued per inbound connection before the socket stops reading it
    /// (0: no limit).
    pub fn set_rcvhwm(&self, messages: i32) -> Result<(), ZmqError> {
        self.set_int("ZMQ_RCVHWM", sys::ZMQ_RCVHWM, messages)
    }

    /// SNDHWM: messages queued per outbound connection before sends block or drop
    /// (0: no limit).
    pub fn set_sndhwm(&self, messages: i32) -> Result<(), ZmqError> {
        self.set_int("ZMQ_SNDHWM", sys::ZMQ_SNDHWM, messages)
    }

    /// MAXMSGSIZE: a peer sending a larger frame is disconnected; `None` means no limit.
    pub fn set_maxmsgsize(&self, bytes: Option<u64>) -> Result<(), ZmqError> {
        let value: i64 = match bytes {
            None => -1,
            Some(n) => i64::try_from(n).map_err(|_| {
                ZmqError::invalid("set_maxmsgsize", "size", format!("{n} exceeds i64::MAX"))
            })?,
        };
        self.set_raw("ZMQ_MAXMSGSIZE", sys::ZMQ_MAXMSGSIZE, &value.to_ne_bytes())
    }

    /// SUB: receive messages whose first frame starts with `prefix` (empty: everything).
    pub fn subscribe(&self, prefix: &[u8]) -> Result<(), ZmqError> {
        self.set_raw("ZMQ_SUBSCRIBE", sys::ZMQ_SUBSCRIBE, prefix)
    }

    /// SUB: remove a prefix given to [`Socket::subscribe`].
    pub fn unsubscribe(&self, prefix: &[u8]) -> Result<(), ZmqError> {
        self.set_raw("ZMQ_UNSUBSCRIBE", sys::ZMQ_UNSUBSCRIBE, prefix)
    }

    /// XPUB_VERBOSE: every subscribe message is received, also one for a prefix another
    /// subscriber already has (by default only the first is).
    pub fn set_xpub_verbose(&self, on: bool) -> Result<(), ZmqError> {
        self.set_bool("ZMQ_XPUB_VERBOSE", sys::ZMQ_XPUB_VERBOSE, on)
    }

    /// ROUTER_MANDATORY: sending to an unknown routing id fails with `EHOSTUNREACH` instead
    /// of being dropped silently.
    pub fn set_router_mandatory(&self, on: bool) -> Result<(), ZmqError> {
        self.set_bool("ZMQ_ROUTER_MANDATORY", sys::ZMQ_ROUTER_MANDATORY, on)
    }

    /// IMMEDIATE: queue messages only on completed connections (a send with no live peer then
    /// blocks or fails instead of queueing for a peer that may never come).
    pub fn set_immediate(&self, on: bool) -> Result<(), ZmqError> {
        self.set_bool("ZMQ_IMMEDIATE", sys::ZMQ_IMMEDIATE, on)
    }

    /// HEARTBEAT_IVL: interval of ZMTP PINGs on each connection (zero: none).
    pub fn set_heartbeat_ivl(&self, interval: Duration) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_HEARTBEAT_IVL", sys::ZMQ_HEARTBEAT_IVL, Some(interval))
    }

    /// HEARTBEAT_TIMEOUT: a connection with no traffic for this long after a PING is closed.
    pub fn set_heartbeat_timeout(&self, timeout: Duration) -> Result<(), ZmqError> {
        self.set_millis(
            "ZMQ_HEARTBEAT_TIMEOUT",
            sys::ZMQ_HEARTBEAT_TIMEOUT,
            Some(timeout),
        )
    }

    /// HEARTBEAT_TTL: tells the peer to close the connection after this long without traffic
    /// (tenths of a second resolution, at most 6553.5 s).
    pub fn set_heartbeat_ttl(&self, ttl: Duration) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_HEARTBEAT_TTL", sys::ZMQ_HEARTBEAT_TTL, Some(ttl))
    }

    /// RECONNECT_IVL: wait before reconnecting a lost connection; `None` disables reconnection.
    pub fn set_reconnect_ivl(&self, interval: Option<Duration>) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_RECONNECT_IVL", sys::ZMQ_RECONNECT_IVL, interval)
    }

    /// RECONNECT_IVL_MAX: upper bound of the exponential reconnect backoff (zero: no backoff).
    pub fn set_reconnect_ivl_max(&self, interval: Duration) -> Result<(), ZmqError> {
        self.set_millis(
            "ZMQ_RECONNECT_IVL_MAX",
            sys::ZMQ_RECONNECT_IVL_MAX,
            Some(interval),
        )
    }

    /// HANDSHAKE_IVL: a connection whose ZMTP/CURVE handshake takes longer is closed (zero:
    /// no limit; libzmq's default 30 s).
    pub fn set_handshake_ivl(&self, limit: Duration) -> Result<(), ZmqError> {
        self.set_millis("ZMQ_HANDSHAKE_IVL", sys::ZMQ_HANDSHAKE_IVL, Some(limit))
    }

    /// REQ_RELAXED: a REQ socket may send a new request without receiving the reply to the
    /// previous one, so it recovers after a receive timeout. Pair with REQ_CORRELATE so a late
    /// reply to the old request is discarded.
    pub fn set_req_relaxed(&self, on: bool) -> Result<(), ZmqError> {
        self.set_bool("ZMQ_REQ_RELAXED", sys::ZMQ_REQ_RELAXED, on)
    }

    /// REQ_CORRELATE: a REQ socket tags requests and accepts only the reply to the last one.
    pub fn set_req_correlate(&self, on: bool) -> Result<(), ZmqError> {
        self.set_bool("ZMQ_REQ_CORRELATE", sys::ZMQ_REQ_CORRELATE, on)
    }

    /// TCP_KEEPALIVE: `None` leaves the OS default, otherwise on or off (the kernel then probes
    /// an idle connection and closes it when the peer host is gone).
    pub fn set_tcp_keepalive(&self, on: Option<bool>) -> Result<(), ZmqError> {
        let value = match on {
            None => -1,
            Some(on) => c_int::from(on),
        };
        self.set_int("ZMQ_TCP_KEEPALIVE", sys::ZMQ_TCP_KEEPALIVE, value)
    }

    /// ZAP_DOMAIN: the domain passed to the ZAP handler for connections to this socket.
    pub fn set_zap_domain(&self, domain: &str) -> Result<(), ZmqError> {
        self.set_raw("ZMQ_ZAP_DOMAIN", sys::ZMQ_ZAP_DOMAIN, domain.as_bytes())
    }

    /// CURVE_SERVER: this socket is a CURVE server; also set its secret key with
    /// [`Socket::set_curve_secretkey`] (or use [`Socket::set_curve_server_keys`]).
    pub fn set_curve_server(&self, on: bool) -> Result<(), ZmqError> {
        self.set_bool("ZMQ_CURVE_SERVER", sys::ZMQ_CURVE_SERVER, on)
    }

    /// CURVE_PUBLICKEY: this socket's long-term public key (clients).
    pub fn set_curve_publickey(&self, key: &CurvePublicKey) -> Result<(), ZmqError> {
        self.set_raw(
            "ZMQ_CURVE_PUBLICKEY",
            sys::ZMQ_CURVE_PUBLICKEY,
            key.as_bytes(),
        )
    }

    /// CURVE_SECRETKEY: this socket's long-term secret key.
    pub fn set_curve_secretkey(&self, key: &CurveSecretKey) -> Result<(), ZmqError> {
        self.set_raw(
            "ZMQ_CURVE_SECRETKEY",
            sys::ZMQ_CURVE_SECRETKEY,
            key.as_bytes(),
        )
    }

    /// CURVE_SERVERKEY: the server's public key, set on a client; makes this socket a CURVE
    /// client.
    pub fn set_curve_serverkey(&self, key: &CurvePublicKey) -> Result<(), ZmqError> {
        self.set_raw(
            "ZMQ_CURVE_SERVERKEY",
            sys::ZMQ_CURVE_SERVERKEY,
            key.as_bytes(),
        )
    }

    /// Makes this socket a CURVE server with the given secret key. Set before binding.
    pub fn set_curve_server_keys(&self, secret: &CurveSecretKey) -> Result<(), ZmqError> {
        self.set_curve_server(true)?;
        self.set_curve_secretkey(secret)
    }

    /// Makes this socket a CURVE client of `server` with its own key pair. Set before
    /// connecting.
    pub fn set_curve_client_keys(
        &self,
        server: &CurvePublicKey,
        public: &CurvePublicKey,
        secret: &CurveSecretKey,
    ) -> Result<(), ZmqError> {
        self.set_curve_serverkey(server)?;
        self.set_curve_publickey(public)?;
        self.set_curve_secretkey(secret)
    }

    /// The security mechanism configured on this socket.
    pub fn mechanism(&self) -> Result<Mechanism, ZmqError> {
        Ok(match self.get_int("ZMQ_MECHANISM", sys::ZMQ_MECHANISM)? {
            sys::ZMQ_NULL => Mechanism::Null,
            sys::ZMQ_PLAIN => Mechanism::Plain,
            sys::ZMQ_CURVE => Mechanism::Curve,
            other => Mechanism::Other(other),
        })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.monitor.is_some() {
            // Stop monitoring while our receiving PAIR is still connected: libzmq sends events
            // with a blocking send, which would stall its I/O thread on a closed receiver.
            // SAFETY: the socket is open; a null endpoint stops its monitor synchronously.
            unsafe { sys::zmq_socket_monitor(self.ptr, std::ptr::null(), 0) };
        }
        // SAFETY: the socket is open and closed exactly once, here, by its owning thread. Its
        // unsent messages linger inside the context per LINGER; the context is terminated
        // only after this (we hold an Arc to it).
        unsafe { sys::zmq_close(self.ptr) };
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("kind", &self.kind)
            .field("ptr", &self.ptr)
            .finish()
    }
}

/// Milliseconds of a duration for an int option, rounding up so a short positive timeout
/// never becomes 0 ("do not wait").
pub(crate) fn duration_to_millis(name: &'static str, d: Duration) -> Result<c_int, ZmqError> {
    let ms = d.as_nanos().div_ceil(1_000_000);
    c_int::try_from(ms).map_err(|_| {
        ZmqError::invalid(
            "duration",
            "milliseconds",
            format!("{name}: {ms} ms exceeds i32::MAX"),
        )
    })
}
