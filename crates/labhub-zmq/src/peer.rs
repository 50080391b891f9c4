//! Acting on one connection of a bound socket, known by the file descriptor and peer endpoint
//! that its monitor events carry ([`crate::MonitorEvent`]).
//!
//! libzmq owns these descriptors and closes them on its I/O thread whenever a connection ends,
//! so a number from an event may already be closed, or reused by a newer connection, by the
//! time it is used here. Every function therefore checks first that the descriptor is still a
//! socket connected to the expected peer endpoint, and otherwise does nothing. That check is
//! also why these functions take a raw number and call libc rather than rustix: a typed
//! borrowed descriptor would promise that it stays open, which a descriptor owned by another
//! thread cannot promise.
//!
//! Only TCP connections can be named this way: the peer of an accepted `ipc://` connection has
//! no address, so these functions refuse endpoints that are not `tcp://`.

use std::net::SocketAddr;

/// Whether `fd` is a TCP socket whose peer is `remote` (`tcp://ip:port`, as libzmq writes it).
pub fn is_connected_to(fd: u64, remote: &str) -> bool {
    match (raw_fd(fd), parse_tcp(remote)) {
        (Some(fd), Some(want)) => peer_address(fd) == Some(want),
        _ => false,
    }
}

/// Shuts down the TCP connection on `fd` in both directions if its peer is still `remote`;
/// libzmq then sees the connection end, closes the descriptor and frees everything it held for
/// it (a partly received message included). Returns whether it was shut down.
pub fn shut_down(fd: u64, remote: &str) -> bool {
    let (Some(raw), Some(want)) = (raw_fd(fd), parse_tcp(remote)) else {
        return false;
    };
    if peer_address(raw) != Some(want) {
        return false;
    }
    sys::shutdown(raw)
}

/// The kernel's byte counts of a TCP connection (`TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounts {
    /// Bytes received from the peer (`tcpi_bytes_received`).
    pub received: u64,
    /// Bytes sent to the peer and acknowledged by it (`tcpi_bytes_acked`).
    pub acked: u64,
}

/// The byte counts of the TCP connection `fd`, if its peer is still `remote`.
pub fn tcp_counts(fd: u64, remote: &str) -> Option<TcpCounts> {
    let (raw, want) = (raw_fd(fd)?, parse_tcp(remote)?);
    if peer_address(raw) != Some(want) {
        return None;
    }
    sys::tcp_counts(raw)
}

/// Wakes a poll loop when data arrives on any of a set of accepted TCP connections: an
/// edge-triggered epoll set whose descriptor [`ActivityWatch::poll_item`] puts in a
/// [`crate::poll`] set, so a loop can account for what each connection sends as it arrives
/// without waking while they are idle.
///
/// The kernel drops a connection from the set by itself when libzmq closes it.
#[derive(Debug)]
pub struct ActivityWatch {
    epoll: std::os::fd::OwnedFd,
}

impl ActivityWatch {
    /// An empty set.
    ///
    /// # Errors
    ///
    /// `epoll_create1` failed (out of descriptors), or the platform has no epoll.
    pub fn new() -> std::io::Result<Self> {
        sys::epoll_create().map(|epoll| Self { epoll })
    }

    /// Adds connection `fd` if its peer is still `remote`; returns whether it was added.
    pub fn watch(&self, fd: u64, remote: &str) -> bool {
        match raw_fd(fd) {
            Some(raw) if is_connected_to(fd, remote) => sys::epoll_add(&self.epoll, raw),
            _ => false,
        }
    }

    /// Removes `fd` (nothing happens if it is not in the set or already closed).
    pub fn unwatch(&self, fd: u64) {
        if let Some(raw) = raw_fd(fd) {
            sys::epoll_remove(&self.epoll, raw);
        }
    }

    /// Appends the connections that received data since the last call to `ready` (without
    /// waiting), at most 256 per call.
    pub fn ready(&self, out: &mut Vec<u64>) {
        sys::epoll_ready(&self.epoll, out);
    }

    /// An item for [`crate::poll`] that is readable while [`ActivityWatch::ready`] has
    /// something to report.
    pub fn poll_item(&self) -> crate::PollItem<'_> {
        use std::os::fd::AsRawFd;
        crate::PollItem::for_fd(self.epoll.as_raw_fd(), crate::PollEvents::IN)
    }
}

fn raw_fd(fd: u64) -> Option<i32> {
    i32::try_from(fd).ok().filter(|&fd| fd >= 0)
}

/// `tcp://1.2.3.4:5` or `tcp://[::1]:5` as libzmq writes a peer.
fn parse_tcp(remote: &str) -> Option<SocketAddr> {
    remote.strip_prefix("tcp://")?.parse().ok()
}

fn peer_address(fd: i32) -> Option<SocketAddr> {
    sys::peer_address(fd)
}

#[cfg(target_os = "linux")]
mod sys {
    use std::mem::{MaybeUninit, size_of};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    pub(super) fn peer_address(fd: i32) -> Option<SocketAddr> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage` is writable for `len` bytes and `len` is a valid pointer; on a
        // descriptor that is closed or not a socket the call fails with EBADF/ENOTSOCK and
        // writes nothing. It has no other effect.
        let rc = unsafe { libc::getpeername(fd, storage.as_mut_ptr().cast(), &mut len) };
        if rc != 0 {
            return None;
        }
        // SAFETY: zero-initialised plain data, partly overwritten by the kernel.
        let storage = unsafe { storage.assume_init() };
        match i32::from(storage.ss_family) {
            libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, which it is large
                // and aligned enough for.
                let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((&raw const storage).cast()) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    pub(super) fn shutdown(fd: i32) -> bool {
        // SAFETY: shutdown(2) only changes the state of the connection on `fd`; the caller
        // checked just before that `fd` is the expected connection. It touches no memory.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) == 0 }
    }

    pub(super) fn epoll_create() -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    pub(super) fn epoll_add(epoll: &std::os::fd::OwnedFd, fd: i32) -> bool {
        use std::os::fd::AsRawFd;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
            u64: u64::try_from(fd).unwrap_or(0),
        };
        // SAFETY: `event` is a valid epoll_event for the call; adding a descriptor to an
        // epoll set only makes the kernel report its readiness there (EBADF if closed).
        unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) == 0 }
    }

    pub(super) fn epoll_remove(epoll: &std::os::fd::OwnedFd, fd: i32) {
        use std::os::fd::AsRawFd;
        // SAFETY: removing takes no event (null is allowed since Linux 2.6.9) and only
        // changes our epoll set.
        unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    pub(super) fn epoll_ready(epoll: &std::os::fd::OwnedFd, out: &mut Vec<u64>) {
        use std::os::fd::AsRawFd;
        const MAX: usize = 256;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        // SAFETY: `events` is writable for MAX entries; a zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), MAX as i32, 0) };
        for event in events.iter().take(usize::try_from(n).unwrap_or(0)) {
            out.push(event.u64);
        }
    }

    pub(super) fn tcp_counts(fd: i32) -> Option<super::TcpCounts> {
        let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` is writable for `len` bytes; the kernel writes at most `len` bytes
        // (fewer on older kernels, which leave the rest zero) and fails on a non-TCP socket.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: zero-initialised plain data, partly overwritten by the kernel.
        let info = unsafe { info.assume_init() };
        Some(super::TcpCounts {
            received: info.tcpi_bytes_received,
            acked: info.tcpi_bytes_acked,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::net::SocketAddr;

    pub(super) fn peer_address(_fd: i32) -> Option<SocketAddr> {
        None
    }

    pub(super) fn shutdown(_fd: i32) -> bool {
        false
    }

    pub(super) fn tcp_counts(_fd: i32) -> Option<super::TcpCounts> {
        None
    }

    pub(super) fn epoll_create() -> std::io::Result<std::os::fd::OwnedFd> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "connection watching needs epoll",
        ))
    }

    pub(super) fn epoll_add(_epoll: &std::os::fd::OwnedFd, _fd: i32) -> bool {
        false
    }

    pub(super) fn epoll_remove(_epoll: &std::os::fd::OwnedFd, _fd: i32) {}

    pub(super) fn epoll_ready(_epoll: &std::os::fd::OwnedFd, _out: &mut Vec<u64>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_connection_is_named_by_its_peer_and_can_be_shut_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let fd = server.as_raw_fd() as u64;
        let remote = format!("tcp://{peer}");
        assert!(is_connected_to(fd, &remote));
        assert!(!is_connected_to(fd, "tcp://127.0.0.1:1"));
        assert!(!is_connected_to(fd, "ipc:///tmp/x"));
        assert_eq!(
            tcp_counts(fd, &remote),
            Some(TcpCounts {
                received: 0,
                acked: 0
            })
        );
        assert!(!shut_down(fd, "tcp://127.0.0.1:1"));
        assert!(shut_down(fd, &remote));
        let mut buf = [0u8; 1];
        assert_eq!(
            (&client).read(&mut buf).unwrap(),
            0,
            "the peer sees the end"
        );
    }

    #[test]
    fn the_watch_reports_a_connection_that_received_data() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let fd = server.as_raw_fd() as u64;
        let watch = ActivityWatch::new().unwrap();
        assert!(!watch.watch(fd, "tcp://127.0.0.1:1"));
        assert!(watch.watch(fd, &format!("tcp://{peer}")));
        let mut ready = Vec::new();
        watch.ready(&mut ready);
        assert!(ready.is_empty());
        client.write_all(b"hello").unwrap();
        let mut items = [watch.poll_item()];
        crate::poll(&mut items, Some(std::time::Duration::from_secs(10))).unwrap();
        watch.ready(&mut ready);
        assert_eq!(ready, vec![fd]);
        let counts = tcp_counts(fd, &format!("tcp://{peer}")).unwrap();
        assert_eq!(counts.received, 5);
    }
}
