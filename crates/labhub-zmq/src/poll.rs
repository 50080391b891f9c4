//! Waiting for several sockets at once (`zmq_poll`).

use std::ffi::{c_long, c_short};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use labhub_zmq_sys as sys;

use crate::error::{ZmqError, last_errno};
use crate::socket::Socket;

/// Events to wait for or that occurred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PollEvents(c_short);

impl PollEvents {
    /// A message can be received without blocking.
    pub const IN: PollEvents = PollEvents(sys::ZMQ_POLLIN);
    /// A message can be sent without blocking.
    pub const OUT: PollEvents = PollEvents(sys::ZMQ_POLLOUT);
    /// Both.
    pub const IN_OUT: PollEvents = PollEvents(sys::ZMQ_POLLIN | sys::ZMQ_POLLOUT);

    /// Whether every event of `other` is set.
    pub fn contains(self, other: PollEvents) -> bool {
        self.0 & other.0 == other.0
    }

    /// No event.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One socket (or descriptor) in a [`poll`] set. Built by [`Socket::poll_item`]; borrows the
/// socket, so the set lives on the socket's owning thread.
#[repr(transparent)]
pub struct PollItem<'a> {
    raw: sys::zmq_pollitem_t,
    _socket: PhantomData<&'a Socket>,
}

impl PollItem<'_> {
    /// An item waiting for `events` on a plain descriptor that the caller keeps open while
    /// the item lives (the borrow that builds it ties the two together).
    pub(crate) fn for_fd(fd: std::ffi::c_int, events: PollEvents) -> Self {
        PollItem {
            raw: sys::zmq_pollitem_t {
                socket: std::ptr::null_mut(),
                fd,
                events: events.0,
                revents: 0,
            },
            _socket: PhantomData,
        }
    }
}

impl<'a> PollItem<'a> {
    /// An item waiting for `events` on a plain descriptor (a socket of another kind, a pipe),
    /// which stays open while the item lives.
    pub fn from_fd(fd: std::os::fd::BorrowedFd<'a>, events: PollEvents) -> Self {
        use std::os::fd::AsRawFd;
        PollItem::for_fd(fd.as_raw_fd(), events)
    }
}

impl PollItem<'_> {
    /// The events that occurred in the last [`poll`].
    pub fn revents(&self) -> PollEvents {
        PollEvents(self.raw.revents)
    }

    /// A message can be received without blocking.
    pub fn is_readable(&self) -> bool {
        self.revents().contains(PollEvents::IN)
    }

    /// A message can be sent without blocking.
    pub fn is_writable(&self) -> bool {
        self.revents().contains(PollEvents::OUT)
    }
}

impl Socket {
    /// An item for [`poll`] waiting for `events` on this socket.
    pub fn poll_item(&self, events: PollEvents) -> PollItem<'_> {
        PollItem {
            raw: sys::zmq_pollitem_t {
                socket: self.as_ptr(),
                fd: 0,
                events: events.0,
                revents: 0,
            },
            _socket: PhantomData,
        }
    }
}

/// Waits until at least one item has an event or `timeout` passes (`None`: forever;
/// zero: just check). Returns how many items have events; read them with
/// [`PollItem::revents`].
///
/// A signal interrupting the wait restarts it with the time that remains.
///
/// ```
/// # use labhub_zmq::{Context, SocketType, PollEvents, poll};
/// # use std::time::Duration;
/// let context = Context::new()?;
/// let socket = context.socket(SocketType::Pull)?;
/// socket.bind("inproc://poll-doc")?;
/// let mut items = [socket.poll_item(PollEvents::IN)];
/// assert_eq!(poll(&mut items, Some(Duration::from_millis(10)))?, 0);
/// assert!(!items[0].is_readable());
/// # Ok::<(), labhub_zmq::ZmqError>(())
/// ```
pub fn poll(items: &mut [PollItem<'_>], timeout: Option<Duration>) -> Result<usize, ZmqError> {
    let count = i32::try_from(items.len())
        .map_err(|_| ZmqError::invalid("poll", "items", format!("{} is too many", items.len())))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait_ms: c_long = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder still waits.
                c_long::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(c_long::MAX)
            }
        };
        for item in items.iter_mut() {
            item.raw.revents = 0;
        }
        // SAFETY: PollItem is repr(transparent) over zmq_pollitem_t, so the slice is a valid
        // array of `count` items; each holds an open socket borrowed for the call and owned by
        // this thread (Socket is !Sync), or a descriptor its builder keeps open.
        let rc = unsafe {
            sys::zmq_poll(
                items.as_mut_ptr().cast::<sys::zmq_pollitem_t>(),
                count,
                wait_ms,
            )
        };
        if rc >= 0 {
            // rc is non-negative and at most `count`.
            return Ok(usize::try_from(rc).unwrap_or(0));
        }
        if last_errno() != sys::EINTR {
            return Err(ZmqError::last("zmq_poll", ""));
        }
    }
}
