//! ZeroMQ message channels through the hub: the binding side registers its dialable endpoint,
//! the connecting side discovers it and attaches.
#![deny(unsafe_code)]

use std::ops::{Deref, DerefMut};

use super::heartbeat::Role;
use super::{ClientError, Hub};
use crate::msg::{MsgError, Publisher, ReqClient, ReqServer, Subscriber};
use crate::protocol::{ChannelInfo, ChannelKind, ChannelName, ChannelSpec, Endpoint, Metadata};

/// A message channel end registered with the broker (a publisher or request server) or
/// attached at it (a subscriber or request client). It dereferences to the channel itself
/// (bytes and JSON helpers: [`Publisher::send_json`], [`Subscriber::recv_json`],
/// [`ReqClient::request_json`], [`ReqServer::serve_one_json`]); dropping it unregisters or
/// detaches.
pub struct Registered<T> {
    channel: T,
    name: ChannelName,
    role: Role,
    hub: Hub,
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

fn msg_err(channel: &str) -> impl FnOnce(MsgError) -> ClientError + '_ {
    move |source| ClientError::Msg {
        channel: channel.to_owned(),
        source: Box::new(source),
    }
}

impl Hub {
    fn register_endpoint(
        &self,
        name: &ChannelName,
        kind: ChannelKind,
        endpoint: &str,
    ) -> Result<(), ClientError> {
        self.register(ChannelSpec {
            name: name.clone(),
            kind,
            endpoint: Some(Endpoint::new(endpoint)?),
            shm_name: None,
            sharing: None,
            size: None,
            policy: None,
            schema: None,
            metadata: Metadata::new(),
        })
    }

    /// Discovers channel `name`, checks its kind, and returns its endpoint.
    fn find_endpoint(&self, name: &str, kind: ChannelKind) -> Result<ChannelInfo, ClientError> {
        let info = self.discover(name)?;
        if info.spec.kind != kind {
            return Err(ClientError::WrongKind {
                channel: name.to_owned(),
                expected: kind,
                found: info.spec.kind,
            });
        }
        if info.spec.endpoint.is_none() {
            return Err(ClientError::BadReply {
                request: "discover",
                problem: format!(
                    "field channel.endpoint is missing for {} channel {name}",
                    kind.as_str()
                ),
            });
        }
        Ok(info)
    }

    fn wrap<T>(&self, channel: T, name: ChannelName, role: Role) -> Registered<T> {
        Registered {
            channel,
            name,
            role,
            hub: self.clone(),
        }
    }

    /// Creates a publisher on a free loopback port and registers it as pub/sub channel `name`
    /// with its dialable endpoint.
    pub fn create_publisher(&self, name: &str) -> Result<Registered<Publisher>, ClientError> {
        let channel = ChannelName::new(name)?;
        let publisher = Publisher::builder(self.context())
            .create()
            .map_err(msg_err(name))?;
        self.register_endpoint(&channel, ChannelKind::Pubsub, publisher.endpoint())?;
        Ok(self.wrap(publisher, channel, Role::Producer))
    }

    /// Discovers pub/sub channel `name` and subscribes to the topics starting with one of
    /// `topics` (every topic when empty).
    ///
    /// It attaches at the broker before it subscribes, so a publisher that saw the subscription
    /// arrive ([`Publisher::wait_for_subscribers`]) knows the subscriber is attached too, and may
    /// publish and withdraw the channel at once.
    pub fn find_subscriber(
        &self,
        name: &str,
        topics: &[&[u8]],
    ) -> Result<Registered<Subscriber>, ClientError> {
        let channel = ChannelName::new(name)?;
        let info = self.find_endpoint(name, ChannelKind::Pubsub)?;
        let endpoint = info.spec.endpoint.map(String::from).unwrap_or_default();
        let mut builder = Subscriber::builder(self.context(), endpoint);
        builder = if topics.is_empty() {
            builder.all_topics()
        } else {
            topics.iter().fold(builder, |b, t| b.topic(t))
        };
        self.attach(name)?;
        let subscriber = match builder.open() {
            Ok(s) => s,
            Err(e) => {
                // Best effort: the broker also drops the attachment with this client.
                let _ = self.detach(name);
                return Err(msg_err(name)(e));
            }
        };
        Ok(self.wrap(subscriber, channel, Role::Consumer))
    }

    /// Creates a request server on a free loopback port and registers it as req/rep channel
    /// `name` with its dialable endpoint.
    pub fn create_req_server(&self, name: &str) -> Result<Registered<ReqServer>, ClientError> {
        let channel = ChannelName::new(name)?;
        let server = ReqServer::builder(self.context())
            .create()
            .map_err(msg_err(name))?;
        self.register_endpoint(&channel, ChannelKind::Reqrep, server.endpoint())?;
        Ok(self.wrap(server, channel, Role::Producer))
    }

    /// Discovers req/rep channel `name` and connects a request client to it.
    pub fn find_req_client(&self, name: &str) -> Result<Registered<ReqClient>, ClientError> {
        let channel = ChannelName::new(name)?;
        let info = self.find_endpoint(name, ChannelKind::Reqrep)?;
        let endpoint = info.spec.endpoint.map(String::from).unwrap_or_default();
        let client = ReqClient::builder(self.context(), endpoint)
            .open()
            .map_err(msg_err(name))?;
        self.attach(name)?;
        Ok(self.wrap(client, channel, Role::Consumer))
    }
}
