//! The client side of broker-granted shared memory: a `grant` request over the CURVE
//! connection, then the ticket redeemed on the broker's grant socket for a memfd channel's
//! descriptors (docs/PROTOCOL.md, "Broker-granted shared memory").
#![deny(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ClientError, Hub};
use crate::protocol::{
    ChannelName, GrantAnswer, GrantMessage, GrantRequest, GrantTicket, MAX_GRANT_MESSAGE, Request,
    Role, Status,
};
use crate::shm::MemfdPair;
use crate::sys;

/// How long one send or receive on the grant socket may take.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// An open exchange on the grant socket, after the ticket was redeemed.
pub(crate) struct Redeemed {
    socket: OwnedFd,
    path: PathBuf,
    name: ChannelName,
    /// The descriptors the broker sent: a consumer's segment, or the one it held for a
    /// producer.
    pub pair: Option<MemfdPair>,
}

impl std::fmt::Debug for Redeemed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redeemed")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("pair", &self.pair.is_some())
            .finish_non_exhaustive()
    }
}

fn socket_err(name: &ChannelName, path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    let (channel, path) = (name.to_string(), path.to_owned());
    move |source| ClientError::GrantSocket {
        channel,
        path,
        source,
    }
}

fn exchange(
    socket: &OwnedFd,
    name: &ChannelName,
    path: &Path,
    message: &GrantMessage,
    fds: &[&OwnedFd],
) -> Result<(GrantAnswer, Vec<OwnedFd>), ClientError> {
    let bytes = serde_json::to_vec(message).unwrap_or_default();
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    sys::send_with_fds(socket.as_fd(), &bytes, &borrowed).map_err(socket_err(name, path))?;
    let mut buf = [0u8; MAX_GRANT_MESSAGE];
    let received = sys::recv_with_fds(socket.as_fd(), &mut buf)
        .map_err(socket_err(name, path))?
        .ok_or_else(|| {
            socket_err(name, path)(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        })?;
    let bad = |problem: String| ClientError::BadReply {
        request: "grant socket",
        problem,
    };
    if received.len == 0 && received.fds.is_empty() {
        return Err(bad(
            "the broker closed the grant socket without an answer".into()
        ));
    }
    if received.truncated {
        return Err(bad(format!(
            "an answer longer than {MAX_GRANT_MESSAGE} bytes"
        )));
    }
    let answer: GrantAnswer = serde_json::from_slice(&buf[..received.len])
        .map_err(|e| bad(format!("not a grant answer: {e}")))?;
    if answer.status != Status::Ok {
        return Err(ClientError::Refused {
            request: "grant socket",
            channel: Some(name.to_string()),
            code: answer.error_code,
            message: answer.message,
        });
    }
    if answer.descriptors as usize != received.fds.len() {
        return Err(bad(format!(
            "field descriptors is {}, the message carried {}",
            answer.descriptors,
            received.fds.len()
        )));
    }
    Ok((answer, received.fds))
}

impl Redeemed {
    /// Hands the broker this producer's segment (control, data), ending the exchange.
    pub(crate) fn provide(self, pair: &MemfdPair) -> Result<(), ClientError> {
        let message = GrantMessage::Provide {
            name: self.name.clone(),
        };
        exchange(
            &self.socket,
            &self.name,
            &self.path,
            &message,
            &[&pair.control, &pair.data],
        )
        .map(|_| ())
    }
}

impl Hub {
    /// Asks the broker for a ticket for `role` on memfd channel `name`.
    fn grant_ticket(&self, name: &ChannelName, role: Role) -> Result<GrantTicket, ClientError> {
        let reply = self.call(Request::Grant(GrantRequest {
            request_id: self.next_request_id(),
            client: self.client_id().clone(),
            name: name.clone(),
            role,
        }))?;
        reply.grant.ok_or_else(|| ClientError::BadReply {
            request: "grant",
            problem: "field grant is missing".into(),
        })
    }

    /// Gets a ticket for `role` on channel `name` and redeems it on the grant socket (the
    /// broker's, or the one this client's configuration names): the descriptors the broker
    /// sends, and for a producer the open exchange to provide its own on.
    ///
    /// # Errors
    /// The broker's refusals (`access_denied`, `not_found`, `channel_down`, `already_exists`,
    /// `invalid_ticket`), [`ClientError::GrantSocket`], [`ClientError::BadReply`].
    pub(crate) fn redeem(&self, name: &ChannelName, role: Role) -> Result<Redeemed, ClientError> {
        let ticket = self.grant_ticket(name, role)?;
        let path = self
            .grant_socket()
            .map_or_else(|| PathBuf::from(&ticket.socket), Path::to_owned);
        redeem_at(&path, &ticket.ticket, name, role)
    }
}

impl Hub {
    /// What channel `name`'s segment says about itself (header, counters, producer and
    /// consumers with their liveness), read without attaching: through a `consume` grant for
    /// a channel the broker shares by memfd, by name otherwise.
    ///
    /// # Errors
    /// Those of [`Hub::discover`](super::Hub::discover) and of the grant; a channel of another
    /// kind is [`ClientError::WrongKind`]; [`ClientError::Shm`] for a segment that cannot be
    /// read.
    pub fn inspect(&self, name: &str) -> Result<crate::shm::SegmentReport, ClientError> {
        let info = self.discover(name)?;
        let name = info.spec.name.clone();
        if info.spec.kind != crate::protocol::ChannelKind::Shm {
            return Err(ClientError::WrongKind {
                channel: name.to_string(),
                expected: crate::protocol::ChannelKind::Shm,
                found: info.spec.kind,
            });
        }
        let shm = |source| ClientError::Shm {
            channel: name.to_string(),
            source,
        };
        match info.spec.sharing {
            Some(crate::protocol::Sharing::Memfd) => {
                let pair = self.redeem(&name, Role::Consume)?.pair.ok_or_else(|| {
                    ClientError::BadReply {
                        request: "grant socket",
                        problem: "no descriptors for a consumer".into(),
                    }
                })?;
                crate::shm::inspect_memfd(&name, pair).map_err(shm)
            }
            _ => crate::shm::inspect(name.as_str()).map_err(shm),
        }
    }
}

/// Redeems `ticket` on the grant socket at `path`.
pub(crate) fn redeem_at(
    path: &Path,
    ticket: &str,
    name: &ChannelName,
    role: Role,
) -> Result<Redeemed, ClientError> {
    let socket = sys::seqpacket_connect(path, SOCKET_TIMEOUT).map_err(socket_err(name, path))?;
    let message = GrantMessage::Redeem {
        ticket: ticket.to_owned(),
        name: name.clone(),
        role,
    };
    let (_, mut fds) = exchange(&socket, name, path, &message, &[])?;
    let pair = match fds.len() {
        2 => {
            let data = fds.pop();
            let control = fds.pop();
            control
                .zip(data)
                .map(|(control, data)| MemfdPair { control, data })
        }
        _ => None,
    };
    if role == Role::Consume && pair.is_none() {
        return Err(ClientError::BadReply {
            request: "grant socket",
            problem: "a consumer's answer carried no descriptors".into(),
        });
    }
    Ok(Redeemed {
        socket,
        path: path.to_owned(),
        name: name.clone(),
        pair,
    })
}
