//! ZeroMQ message channels through the Hub, CurveZMQ end to end.
//!
//! The binding side (`hub.publisher(name).create()`, `hub.req_server(name).create()`) makes
//! a fresh CURVE key pair for its socket, binds it, and registers the dialable endpoint and
//! the public key; its socket admits only the client keys the broker admits (see
//! [`super::admission`]). The connecting side (`hub.subscriber(name).topic("").open()`,
//! `hub.req_client(name).open()`) discovers the endpoint and the key over its authenticated
//! broker connection, attaches, and connects with the key as server key and the Hub's own
//! key pair as client keys: an impostor bound on the endpoint fails the handshake.
#![deny(unsafe_code)]

use std::ops::{Deref, DerefMut};

use labhub_zmq::{Context, CurveKeyPair, CurvePublicKey};

use super::heartbeat::Role;
use super::{ClientError, Hub};
use crate::msg::{
    BindBuilder, BindOptions, ClientCurve, ConnectBuilder, ConnectOptions, MsgError, Publisher,
    ReqClient, ReqServer, Subscriber,
};
use crate::protocol::{ChannelKind, ChannelName, ChannelSpec, CurveKey, Endpoint, Metadata};

/// Where a message-channel builder made by a [`Hub`] goes: channel `name`, registered with
/// (or found through) the Hub's broker. See [`Hub::publisher`], [`Hub::subscriber`],
/// [`Hub::req_server`], [`Hub::req_client`].
#[derive(Debug, Clone)]
pub struct OnHub {
    hub: Hub,
    name: String,
}

impl OnHub {
    fn channel(&self) -> Result<ChannelName, ClientError> {
        Ok(ChannelName::new(self.name.as_str())?)
    }
}

/// A message channel end registered with the broker (a publisher or request server) or
/// attached at it (a subscriber or request client). It dereferences to the channel itself
/// (bytes and JSON helpers: [`Publisher::send_json`], [`Subscriber::recv_json`],
/// [`ReqClient::request_json`], [`ReqServer::serve_one_json`]); dropping it unregisters or
/// detaches.
#[must_use = "dropping it unregisters or detaches the channel"]
pub struct Registered<T> {
    channel: T,
    name: ChannelName,
    role: Role,
    hub: Hub,
    /// A publisher's or server's hold on its name in this client; released after `forget`.
    _serving: Option<super::connection::ServingClaim>,
}

impl<T> std::fmt::Debug for Registered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("channel", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl<T> Registered<T> {
    /// The channel's name on the broker.
    pub fn channel_name(&self) -> &str {
        self.name.as_str()
    }
}

impl<T> Deref for Registered<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.channel
    }
}

impl<T> DerefMut for Registered<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.channel
    }
}

impl<T> Drop for Registered<T> {
    fn drop(&mut self) {
        // Message channels are not tracked for counters (id 0 names nothing).
        self.hub.forget(0, self.name.clone(), self.role);
    }
}

fn msg_err(channel: &ChannelName) -> impl FnOnce(MsgError) -> ClientError + '_ {
    move |source| ClientError::Msg {
        channel: channel.to_string(),
        source: Box::new(source),
    }
}

impl Hub {
    pub(crate) fn via(&self, name: &str) -> OnHub {
        OnHub {
            hub: self.clone(),
            name: name.to_owned(),
        }
    }

    /// A publisher to be registered as pub/sub channel `name`; `create` binds it (a free
    /// loopback port unless told otherwise), registers its dialable endpoint and CURVE key,
    /// and admits the subscribers whose keys the broker admits.
    ///
    /// ```no_run
    /// # use labhub::client::{ClientConfig, Hub};
    /// let hub = Hub::connect(ClientConfig::from_env()?)?;
    /// let status = hub.publisher("status").create()?;
    /// status.send("temps", "21.5")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publisher(&self, name: &str) -> BindBuilder<Publisher, OnHub> {
        BindBuilder::new(self.via(name))
    }

    /// A request server to be registered as req/rep channel `name`; `create` binds it,
    /// registers its endpoint and CURVE key, and admits the clients whose keys the broker
    /// admits.
    pub fn req_server(&self, name: &str) -> BindBuilder<ReqServer, OnHub> {
        BindBuilder::new(self.via(name))
    }

    /// A subscriber of pub/sub channel `name` (give it at least one topic prefix); `open`
    /// discovers the channel, attaches at the broker, then subscribes over CurveZMQ with the
    /// server key the broker announced.
    ///
    /// It attaches before it subscribes, so a publisher that saw the subscription arrive
    /// ([`Publisher::wait_for_subscribers`]) knows the subscriber is attached too, and may
    /// publish and withdraw the channel at once.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use labhub::client::{ClientConfig, Hub};
    /// let hub = Hub::connect(ClientConfig::from_env()?)?;
    /// let status = hub.subscriber("status").topic("").open()?;
    /// if let Some(message) = status.recv(Duration::from_secs(1))? {
    ///     println!("{:?}", message.payload());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscriber(&self, name: &str) -> ConnectBuilder<Subscriber, OnHub> {
        ConnectBuilder::new(self.via(name))
    }

    /// A request client of req/rep channel `name`; `open` discovers the channel, attaches at
    /// the broker and connects over CurveZMQ with the server key the broker announced.
    pub fn req_client(&self, name: &str) -> ConnectBuilder<ReqClient, OnHub> {
        ConnectBuilder::new(self.via(name))
    }

    /// Discovers channel `name` of `kind` and returns its endpoint and server key.
    pub(crate) fn find_server(
        &self,
        name: &ChannelName,
        kind: ChannelKind,
    ) -> Result<(String, CurvePublicKey), ClientError> {
        let info = self.discover(name.as_str())?;
        if info.spec.kind != kind {
            return Err(ClientError::WrongKind {
                channel: name.to_string(),
                expected: kind,
                found: info.spec.kind,
            });
        }
        let Some(endpoint) = info.spec.endpoint else {
            return Err(ClientError::BadReply {
                request: "discover",
                problem: format!(
                    "field channel.endpoint is missing for {} channel {name}",
                    kind.as_str()
                ),
            });
        };
        let Some(key) = info.spec.server_key else {
            return Err(ClientError::NoServerKey {
                channel: name.to_string(),
                kind,
            });
        };
        let key =
            CurvePublicKey::from_bytes(key.as_bytes()).map_err(|e| ClientError::BadReply {
                request: "discover",
                problem: format!("field channel.server_key: {e}"),
            })?;
        Ok((endpoint.into(), key))
    }
}

/// Binds a server with a fresh key pair, admitting the broker's keys, and registers it.
pub(crate) fn create_registered<T>(
    builder: BindBuilder<T, OnHub>,
    kind: ChannelKind,
    bind: fn(&Context, &BindOptions) -> Result<T, MsgError>,
    endpoint: fn(&T) -> &str,
) -> Result<Registered<T>, ClientError> {
    let (via, mut options) = builder.into_parts();
    let name = via.channel()?;
    let keys = CurveKeyPair::generate().map_err(|source| ClientError::Zmq {
        what: "generating a CURVE key pair",
        endpoint: options.endpoint.clone(),
        source,
    })?;
    let serving = via.hub.claim_serving(&name)?;
    via.hub.guard_servers()?;
    let server_key = CurveKey::from_bytes(*keys.public.as_bytes());
    options.curve = Some(keys);
    let channel = bind(via.hub.context(), &options).map_err(msg_err(&name))?;
    via.hub.register(ChannelSpec {
        name: name.clone(),
        kind,
        endpoint: Some(Endpoint::new(endpoint(&channel))?),
        server_key: Some(server_key),
        shm_name: None,
        sharing: None,
        size: None,
        policy: None,
        schema: None,
        metadata: Metadata::new(),
    })?;
    Ok(Registered {
        channel,
        name,
        role: Role::Producer,
        hub: via.hub,
        _serving: Some(serving),
    })
}

/// Discovers a server, attaches at the broker and connects to it over CurveZMQ.
fn open_attached<T>(
    builder: ConnectBuilder<T, OnHub>,
    kind: ChannelKind,
    connect: fn(&Context, String, &ConnectOptions) -> Result<T, MsgError>,
) -> Result<Registered<T>, ClientError> {
    let (via, mut options) = builder.into_parts();
    let name = via.channel()?;
    let (endpoint, server) = via.hub.find_server(&name, kind)?;
    options.curve = Some(ClientCurve {
        server,
        keys: via.hub.curve_keys().clone(),
    });
    via.hub.attach(name.as_str())?;
    let channel = match connect(via.hub.context(), endpoint, &options) {
        Ok(channel) => channel,
        Err(e) => {
            // Best effort: the broker also drops the attachment with this client.
            let _ = via.hub.detach(name.as_str());
            return Err(msg_err(&name)(e));
        }
    };
    Ok(Registered {
        channel,
        name,
        role: Role::Consumer,
        hub: via.hub,
        _serving: None,
    })
}

impl BindBuilder<Publisher, OnHub> {
    /// Creates the publisher and registers it (see [`Hub::publisher`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidName`] for a bad channel name, [`ClientError::Msg`] for a bad
    /// option or a failed bind, the broker's refusal ([`ClientError::Refused`], e.g.
    /// `already_exists`) or a failed request.
    pub fn create(self) -> Result<Registered<Publisher>, ClientError> {
        create_registered(
            self,
            ChannelKind::Pubsub,
            Publisher::bind_with,
            Publisher::endpoint,
        )
    }
}

impl BindBuilder<ReqServer, OnHub> {
    /// Creates the request server and registers it (see [`Hub::req_server`]).
    ///
    /// # Errors
    ///
    /// As for a publisher: [`ClientError::InvalidName`], [`ClientError::Msg`], the broker's
    /// refusal or a failed request.
    pub fn create(self) -> Result<Registered<ReqServer>, ClientError> {
        create_registered(
            self,
            ChannelKind::Reqrep,
            ReqServer::bind_with,
            ReqServer::endpoint,
        )
    }
}

impl ConnectBuilder<Subscriber, OnHub> {
    /// Discovers the channel, attaches and subscribes (see [`Hub::subscriber`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidName`] for a bad channel name; the broker's refusal
    /// ([`ClientError::Refused`], e.g. `not_found`); [`ClientError::WrongKind`] for a channel
    /// that is not pub/sub; [`ClientError::NoServerKey`] for one registered without CURVE;
    /// [`ClientError::Msg`] for no topic, a bad option or a failed connect.
    pub fn open(self) -> Result<Registered<Subscriber>, ClientError> {
        open_attached(self, ChannelKind::Pubsub, Subscriber::connect_with)
    }
}

impl ConnectBuilder<ReqClient, OnHub> {
    /// Discovers the channel, attaches and connects (see [`Hub::req_client`]).
    ///
    /// # Errors
    ///
    /// As for a subscriber, with req/rep in place of pub/sub.
    pub fn open(self) -> Result<Registered<ReqClient>, ClientError> {
        open_attached(self, ChannelKind::Reqrep, ReqClient::connect_with)
    }
}
