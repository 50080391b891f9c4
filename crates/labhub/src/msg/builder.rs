//! The builders of every message channel end: one binding builder for [`Publisher`] and
//! [`ReqServer`], one connecting builder for [`Subscriber`] and [`ReqClient`], each generic
//! over where the channel goes ([`OnContext`] / [`ToEndpoint`] here, the Hub's registered
//! channels in `crate::client`), so every option is written once.

use std::fmt;
use std::marker::PhantomData;

use labhub_zmq::{Context, CurveKeyPair, CurvePublicKey};

use super::endpoint::{BindOptions, ClientCurve, ConnectOptions};
use super::{Publisher, ReqClient, ReqServer, Subscriber};

/// Where a [`BindBuilder`] creates its channel when no broker is involved: a socket on this
/// context.
#[derive(Debug, Clone)]
pub struct OnContext {
    pub(crate) context: Context,
}

/// Where a [`ConnectBuilder`] connects when no broker is involved: a socket on this context,
/// connected to this endpoint.
#[derive(Debug, Clone)]
pub struct ToEndpoint {
    pub(crate) context: Context,
    pub(crate) endpoint: String,
}

/// Builds a binding channel end: a [`Publisher`] or a [`ReqServer`] (see
/// [`PublisherBuilder`], [`ReqServerBuilder`]). `W` says where it goes: [`OnContext`] for a
/// channel of its own (`create` gives the channel), or the Hub's target for a channel
/// registered with the broker (`hub.publisher(name)`, `hub.req_server(name)`).
///
/// Options are checked by `create`: a bad value is [`MsgError::InvalidOption`](super::MsgError)
/// naming it, before any socket exists.
#[must_use = "a builder does nothing until `create` is called"]
pub struct BindBuilder<T, W = OnContext> {
    at: W,
    options: BindOptions,
    channel: PhantomData<fn() -> T>,
}

/// Builds a [`Publisher`]; see [`Publisher::builder`].
pub type PublisherBuilder<W = OnContext> = BindBuilder<Publisher, W>;
/// Builds a [`ReqServer`]; see [`ReqServer::builder`].
pub type ReqServerBuilder<W = OnContext> = BindBuilder<ReqServer, W>;

impl<T, W> BindBuilder<T, W> {
    pub(crate) fn new(at: W) -> Self {
        Self {
            at,
            options: BindOptions::default(),
            channel: PhantomData,
        }
    }

    /// The endpoint to bind: `tcp://HOST:PORT` (port 0 or `*` lets the system pick, a
    /// wildcard host listens on every interface) or `ipc://PATH`. Default
    /// [`DEFAULT_BIND`](super::DEFAULT_BIND).
    pub fn bind(mut self, endpoint: impl Into<String>) -> Self {
        self.options.endpoint = endpoint.into();
        self
    }

    /// The host to report as the channel's endpoint when binding to a wildcard host (an IP
    /// address or a name peers can resolve). Default: the loopback address.
    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.options.advertise_host = Some(host.into());
        self
    }

    /// Messages queued per peer, each way, before a publisher drops further ones for that
    /// peer or a server's reply fails. 1 to `i32::MAX`; default
    /// [`DEFAULT_HWM`](super::DEFAULT_HWM).
    pub fn hwm(mut self, messages: u32) -> Self {
        self.options.hwm = messages;
        self
    }

    /// The largest message accepted from a peer (requests of a server, subscriptions of a
    /// publisher), all frames together, in bytes; a larger frame makes ZeroMQ close that
    /// peer's connection before it is read into memory. At least 1; default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`](super::DEFAULT_MAX_MESSAGE_SIZE).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.options.max_message_size = bytes;
        self
    }

    /// Where the channel goes and its options, for the terminal methods.
    pub(crate) fn into_parts(self) -> (W, BindOptions) {
        (self.at, self.options)
    }
}

impl<T> BindBuilder<T, OnContext> {
    /// Encrypts and authenticates with CurveZMQ: this is the server key pair; peers need its
    /// public half. Without a ZAP handler on the context every client key is admitted (the
    /// Hub's channels admit only the keys the broker admits).
    pub fn curve(mut self, server_keys: &CurveKeyPair) -> Self {
        self.options.curve = Some(server_keys.clone());
        self
    }
}

impl<T, W: Clone> Clone for BindBuilder<T, W> {
    fn clone(&self) -> Self {
        Self {
            at: self.at.clone(),
            options: self.options.clone(),
            channel: PhantomData,
        }
    }
}

impl<T, W: fmt::Debug> fmt::Debug for BindBuilder<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindBuilder")
            .field("at", &self.at)
            .field("options", &self.options)
            .finish()
    }
}

/// Builds a connecting channel end: a [`Subscriber`] or a [`ReqClient`] (see
/// [`SubscriberBuilder`], [`ReqClientBuilder`]). `W` says where it connects: [`ToEndpoint`]
/// for a given endpoint (`open` gives the channel), or the Hub's target for a channel found
/// through the broker (`hub.subscriber(name)`, `hub.req_client(name)`).
///
/// Options are checked by `open`: a bad value is [`MsgError::InvalidOption`](super::MsgError)
/// naming it, before any socket exists.
#[must_use = "a builder does nothing until `open` is called"]
pub struct ConnectBuilder<T, W = ToEndpoint> {
    at: W,
    options: ConnectOptions,
    channel: PhantomData<fn() -> T>,
}

/// Builds a [`Subscriber`]; see [`Subscriber::builder`].
pub type SubscriberBuilder<W = ToEndpoint> = ConnectBuilder<Subscriber, W>;
/// Builds a [`ReqClient`]; see [`ReqClient::builder`].
pub type ReqClientBuilder<W = ToEndpoint> = ConnectBuilder<ReqClient, W>;

impl<T, W> ConnectBuilder<T, W> {
    pub(crate) fn new(at: W) -> Self {
        Self {
            at,
            options: ConnectOptions::default(),
            channel: PhantomData,
        }
    }

    /// Messages queued each way before a subscriber drops further ones or a client's
    /// request waits. 1 to `i32::MAX`; default [`DEFAULT_HWM`](super::DEFAULT_HWM).
    pub fn hwm(mut self, messages: u32) -> Self {
        self.options.hwm = messages;
        self
    }

    /// The largest message accepted (a publication, a reply), all frames together, in bytes.
    /// A larger frame makes ZeroMQ close the connection before it is read into memory (and
    /// not reconnect); a larger message of smaller frames is dropped with
    /// [`MsgError::TooLarge`](super::MsgError::TooLarge). At least 1; default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`](super::DEFAULT_MAX_MESSAGE_SIZE).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.options.max_message_size = bytes;
        self
    }

    /// Where the channel connects and its options, for the terminal methods.
    pub(crate) fn into_parts(self) -> (W, ConnectOptions) {
        (self.at, self.options)
    }
}

impl<W> ConnectBuilder<Subscriber, W> {
    /// Receives messages whose topic starts with `prefix` (byte-wise; `"cam"` matches
    /// `"cam0"` and `"camera"`; `""` matches every topic). May be given several times; at
    /// least once before `open`.
    pub fn topic(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.options.topics.push(prefix.as_ref().to_vec());
        self
    }

    /// Receives every message (the empty prefix).
    pub fn all_topics(self) -> Self {
        self.topic([])
    }
}

impl<T> ConnectBuilder<T, ToEndpoint> {
    /// Connects with CurveZMQ to a server whose public key is `server`, authenticating
    /// with `own_keys`.
    pub fn curve(mut self, server: &CurvePublicKey, own_keys: &CurveKeyPair) -> Self {
        self.options.curve = Some(ClientCurve {
            server: *server,
            keys: own_keys.clone(),
        });
        self
    }
}

impl<T, W: Clone> Clone for ConnectBuilder<T, W> {
    fn clone(&self) -> Self {
        Self {
            at: self.at.clone(),
            options: self.options.clone(),
            channel: PhantomData,
        }
    }
}

impl<T, W: fmt::Debug> fmt::Debug for ConnectBuilder<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectBuilder")
            .field("at", &self.at)
            .field("options", &self.options)
            .finish()
    }
}
