//! Unix-domain `SOCK_SEQPACKET` sockets: the broker's grant socket and its clients. Each message
//! is one datagram (its boundaries kept) that may carry descriptors (`SCM_RIGHTS`); the peer's
//! credentials come from `SO_PEERCRED`.
// Used by the broker and the Hub client (cargo feature `zmq`).
#![cfg_attr(not(feature = "zmq"), allow(dead_code))]

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 2;

fn seqpacket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        flags,
        None,
    )?)
}

/// A non-blocking listening socket bound at `path` (which must not exist), its file given
/// `mode`.
#[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker side of grants
pub fn seqpacket_listen(path: &Path, mode: u32, backlog: i32) -> io::Result<OwnedFd> {
    let fd = seqpacket(true)?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// Accepts one pending connection, non-blocking and close-on-exec; `None` if none is pending.
#[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker side of grants
pub fn seqpacket_accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A blocking connection to the socket at `path`, whose sends and receives each give up after
/// `timeout`.
pub fn seqpacket_connect(path: &Path, timeout: Duration) -> io::Result<OwnedFd> {
    let fd = seqpacket(false)?;
    let timeout = Some(timeout.max(Duration::from_millis(1)));
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, timeout)?;
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Send, timeout)?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

/// Sends `bytes` as one message, with `fds` attached. A full peer buffer is `WouldBlock` on a
/// non-blocking socket.
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "message cut short",
        ));
    }
    Ok(())
}

/// One received message: its bytes and the descriptors it carried.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the message (at most the buffer's length).
    pub len: usize,
    /// The message was longer than the buffer (the rest is lost).
    pub truncated: bool,
    /// More descriptors came than [`MAX_FDS`] (the kernel closed the rest).
    #[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker side of grants
    pub fds_truncated: bool,
    /// The descriptors, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Receives one message into `buf`. `Ok(None)` on a non-blocking socket with nothing to read;
/// a message of 0 bytes with no descriptor is the peer's end of file.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = match rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(m) => m,
        Err(rustix::io::Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    Ok(Some(Received {
        len: msg.bytes.min(buf.len()),
        truncated: msg.flags.contains(ReturnFlags::TRUNC),
        fds_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
        fds,
    }))
}

/// The credentials of the peer of a connected Unix socket, as the kernel recorded them at
/// `connect` (`SO_PEERCRED`): pid, uid and gid, translated into this process's namespaces.
#[cfg_attr(not(feature = "broker"), allow(dead_code))] // the broker side of grants
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok((
        cred.pid.as_raw_nonzero().get() as u32,
        cred.uid.as_raw(),
        cred.gid.as_raw(),
    ))
}
