//! The registry: who is alive and what exists, as a pure state machine.
//!
//! [`Registry`] owns no socket, file or clock. The server feeds it decoded requests with the
//! current time ([`Registry::handle`]) and calls [`Registry::tick`] periodically; the registry
//! answers with a [`Reply`] and pushes [`Effect`]s (notifications to publish, segments to
//! remove, audit events to append) for the server to carry out. Time comes in as an argument,
//! so the watchdog is tested by advancing an `Instant`, without sleeping.
//!
//! Liveness is per client id: every request that names a client refreshes it. A client silent
//! for longer than `heartbeat_interval × max_missed_heartbeats` expires: the channels it
//! produces go down (`channel_down`), the channels it consumes lose it (`consumer_dropped`, for
//! the producer), and it is forgotten, so its next heartbeat is answered `unknown_client` and it
//! registers again. A down shm channel stays listed while consumers hold its segment; when the
//! last one leaves, the registry asks for the segment to be removed: cleanup is
//! the broker's, never the producer's, so a producer that exits or restarts never pulls the
//! segment from under its consumers.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use labhub::broker::registry::{Registry, RegistryConfig, Origin};
//! use labhub::protocol::{self, Request};
//!
//! let mut reg = Registry::new(RegistryConfig::default());
//! let t0 = Instant::now();
//! let frames: Vec<&[u8]> = vec![b"labhub", b"1", b"heartbeat",
//!     br#"{"request_id": 1, "client": "nobody"}"#];
//! let req = protocol::decode_request(&frames).outcome.unwrap();
//! let mut effects = Vec::new();
//! let reply = reg.handle(t0, Origin::default(), &req, &mut effects);
//! assert_eq!(reply.error_code, protocol::ErrorCode::UnknownClient);
//! ```
#![deny(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::{
    ChannelInfo, ChannelKind, ChannelName, ChannelRequest, ChannelSpec, ChannelState, ClientId,
    Counters, Discover, DownReason, DropReason, ErrorCode, GrantRecord, GrantRequest, Heartbeat,
    List, Notification, Register, Reply, Request, Role, Sharing, ShmName,
};

use super::audit::AuditEvent;

/// Limits and timing of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// How often clients are asked to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// How many intervals a client may stay silent before it expires.
    pub max_missed_heartbeats: u32,
    /// The most channels the registry holds.
    pub max_channels: usize,
    /// The most clients the registry tracks.
    pub max_clients: usize,
    /// The most consumers one channel accepts.
    pub max_consumers_per_channel: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(1000),
            max_missed_heartbeats: 5,
            max_channels: 10_000,
            max_clients: 10_000,
            max_consumers_per_channel: 64,
        }
    }
}

impl RegistryConfig {
    /// How long a client may stay silent.
    pub fn expiry(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.max_missed_heartbeats)
    }
}

/// Who sent a request, as far as the transport knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The peer's CURVE public key (Z85), when authentication is on.
    pub key: Option<&'a str>,
}

/// Something the server must do on the registry's behalf.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Effect {
    /// Publish a notification.
    Notify(Notification),
    /// Unlink a channel's segment: nobody holds it any more.
    RemoveSegment {
        /// The channel it belonged to.
        channel: ChannelName,
        /// The segment.
        shm_name: ShmName,
    },
    /// Close the broker's descriptors of a memfd channel's segment: the channel is gone (the
    /// kernel frees the segment once its last holder closes it too).
    ReleaseSegment {
        /// The channel.
        channel: ChannelName,
    },
    /// Append to the audit trail.
    Audit(AuditEvent),
}

#[derive(Debug)]
struct Client {
    key: Option<String>,
    last_seen: Instant,
    produces: BTreeSet<ChannelName>,
    consumes: BTreeSet<ChannelName>,
}

#[derive(Debug)]
struct Channel {
    spec: ChannelSpec,
    producer: ClientId,
    producer_pid: Option<u32>,
    producer_host: Option<String>,
    state: ChannelState,
    consumers: BTreeSet<ClientId>,
    counters: Counters,
    /// Memfd channels: the latest grant per client and role, oldest first.
    grants: Vec<GrantRecord>,
}

impl Channel {
    fn info(&self) -> ChannelInfo {
        ChannelInfo {
            spec: self.spec.clone(),
            producer: self.producer.clone(),
            producer_pid: self.producer_pid,
            producer_host: self.producer_host.clone(),
            state: self.state,
            consumers: u32::try_from(self.consumers.len()).unwrap_or(u32::MAX),
            counters: self.counters.clone(),
            grants: self.grants.clone(),
        }
    }

    fn is_memfd(&self) -> bool {
        self.spec.kind == ChannelKind::Shm && self.spec.sharing == Some(Sharing::Memfd)
    }

    fn forget_grants_of(&mut self, client: &ClientId, role: Option<Role>) {
        self.grants
            .retain(|g| &g.client != client || role.is_some_and(|r| r != g.role));
    }
}

/// The broker's state: clients, channels, consumers. See the module documentation.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    clients: HashMap<ClientId, Client>,
    channels: BTreeMap<ChannelName, Channel>,
}

/// How a client ended.
#[derive(Clone, Copy)]
enum Ended {
    /// Silent past its heartbeat timeout.
    Silent,
    /// Its process is gone.
    Process,
}

impl Registry {
    /// An empty registry.
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            config,
            clients: HashMap::new(),
            channels: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Number of channels held (up and down).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Number of live clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// A channel as `discover` would describe it, whatever its state.
    pub fn channel(&self, name: &str) -> Option<ChannelInfo> {
        let name = ChannelName::new(name).ok()?;
        self.channels.get(&name).map(Channel::info)
    }

    /// Every channel as `list` describes it, with the client ids of its consumers, by name.
    pub fn channels_with_consumers(
        &self,
    ) -> impl Iterator<Item = (ChannelInfo, Vec<ClientId>)> + '_ {
        self.channels
            .values()
            .map(|ch| (ch.info(), ch.consumers.iter().cloned().collect()))
    }

    /// The ids of the live clients, in no particular order.
    pub fn client_ids(&self) -> impl Iterator<Item = &ClientId> + '_ {
        self.clients.keys()
    }

    /// Whether a client id is live.
    pub fn knows_client(&self, client: &str) -> bool {
        ClientId::new(client).is_ok_and(|c| self.clients.contains_key(&c))
    }

    /// When the earliest live client would expire if it stays silent.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.clients
            .values()
            .map(|c| c.last_seen + self.config.expiry())
            .min()
    }

    fn with_heartbeat(&self, mut reply: Reply) -> Reply {
        reply.heartbeat_interval_ms =
            Some(u64::try_from(self.config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX));
        reply.max_missed_heartbeats = Some(self.config.max_missed_heartbeats);
        reply
    }

    /// Handles one validated request at time `now`.
    pub fn handle(
        &mut self,
        now: Instant,
        origin: Origin<'_>,
        request: &Request,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let id = request.request_id();
        // A client id is bound to the key that first used it, so that one admitted client
        // cannot unregister or heartbeat for another.
        if let (Some(client), Some(key)) = (request.client(), origin.key)
            && let Some(known) = self.clients.get(client)
            && known.key.as_deref().is_some_and(|k| k != key)
        {
            return Reply::error(
                Some(id),
                ErrorCode::NotOwner,
                format!("client id {client} is in use by another key"),
            );
        }
        match request {
            Request::Register(r) => self.register(now, origin, r, effects),
            Request::Discover(d) => self.discover(now, d, effects),
            Request::Unregister(r) => self.unregister(now, r, effects),
            Request::Attach(r) => self.attach(now, origin, r, effects),
            Request::Detach(r) => self.detach(now, r, effects),
            Request::Heartbeat(h) => self.heartbeat(now, h),
            Request::List(l) => self.list(l),
            // The server answers it from its own state.
            Request::Status(r) => Reply::ok(r.request_id),
            Request::Grant(g) => self.grant(now, origin, g),
        }
    }

    /// `grant`: whether `g.client` may get a ticket for `g.role` on the channel now (the
    /// server checks the access list and mints the ticket). A consumer needs an up memfd
    /// channel; a producer a channel nobody else produces live. Admits the client.
    fn grant(&mut self, now: Instant, origin: Origin<'_>, g: &GrantRequest) -> Reply {
        let id = g.request_id;
        let refuse = |code, message: String| Reply::error(Some(id), code, message);
        match (g.role, self.channels.get(&g.name)) {
            (Role::Consume, None) => {
                return refuse(ErrorCode::NotFound, format!("no channel named {}", g.name));
            }
            (Role::Consume, Some(ch)) if ch.state != ChannelState::Up => {
                return refuse(
                    ErrorCode::ChannelDown,
                    format!(
                        "channel {} is down: its producer {} is gone",
                        g.name, ch.producer
                    ),
                );
            }
            (Role::Consume, Some(ch)) if !ch.is_memfd() => {
                return refuse(
                    ErrorCode::InvalidField,
                    format!(
                        "invalid field name: channel {} is not shared through the broker (memfd)",
                        g.name
                    ),
                );
            }
            (Role::Produce, Some(ch))
                if ch.state == ChannelState::Up && ch.producer != g.client =>
            {
                return refuse(
                    ErrorCode::AlreadyExists,
                    format!(
                        "channel {} is registered by live client {}",
                        g.name, ch.producer
                    ),
                );
            }
            _ => {}
        }
        if !self.admit(now, origin, &g.client) {
            return refuse(
                ErrorCode::LimitReached,
                format!(
                    "the broker tracks {} clients, its limit",
                    self.config.max_clients
                ),
            );
        }
        Reply::ok(id)
    }

    /// Records a grant the server handed out on its grant socket (shown in the channel's
    /// `grants`). Kept per client and role; a channel keeps at most
    /// `max_consumers_per_channel + 1` (the oldest go first).
    pub fn record_grant(&mut self, name: &ChannelName, record: GrantRecord) {
        let limit = self.config.max_consumers_per_channel.saturating_add(1);
        if let Some(ch) = self.channels.get_mut(name) {
            ch.forget_grants_of(&record.client, Some(record.role));
            if ch.grants.len() >= limit {
                ch.grants.remove(0);
            }
            ch.grants.push(record);
        }
    }

    /// Whether `name` is a memfd channel that is up.
    pub fn memfd_channel_up(&self, name: &ChannelName) -> bool {
        self.channels
            .get(name)
            .is_some_and(|ch| ch.state == ChannelState::Up && ch.is_memfd())
    }

    fn touch(&mut self, now: Instant, client: &ClientId) -> bool {
        match self.clients.get_mut(client) {
            Some(c) => {
                c.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Makes `client` live, creating it if needed; false when the client limit is reached.
    fn admit(&mut self, now: Instant, origin: Origin<'_>, client: &ClientId) -> bool {
        if self.touch(now, client) {
            return true;
        }
        if self.clients.len() >= self.config.max_clients {
            return false;
        }
        self.clients.insert(
            client.clone(),
            Client {
                key: origin.key.map(str::to_owned),
                last_seen: now,
                produces: BTreeSet::new(),
                consumes: BTreeSet::new(),
            },
        );
        true
    }

    fn register(
        &mut self,
        now: Instant,
        origin: Origin<'_>,
        r: &Register,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let id = r.request_id;
        let name = &r.channel.name;
        let refuse = |effects: &mut Vec<Effect>, code: ErrorCode, message: String| {
            effects.push(Effect::Audit(AuditEvent::RegisterRefused {
                channel: name.clone(),
                client: r.client.clone(),
                code: code.as_str(),
            }));
            Reply::error(Some(id), code, message)
        };
        let how = match self.channels.get(name) {
            Some(ch) if ch.producer == r.client => "refresh",
            Some(ch) if ch.state == ChannelState::Up => {
                let message = format!(
                    "channel {name} is registered by live client {}",
                    ch.producer
                );
                return refuse(effects, ErrorCode::AlreadyExists, message);
            }
            Some(_) => "takeover",
            None if self.channels.len() >= self.config.max_channels => {
                let message = format!(
                    "the broker holds {} channels, its limit",
                    self.config.max_channels
                );
                return refuse(effects, ErrorCode::LimitReached, message);
            }
            None => "new",
        };
        if !self.admit(now, origin, &r.client) {
            let message = format!(
                "the broker tracks {} clients, its limit",
                self.config.max_clients
            );
            return refuse(effects, ErrorCode::LimitReached, message);
        }
        let previous = self.channels.remove(name);
        let (consumers, counters, announce, mut grants) = match previous {
            Some(old) => {
                if old.producer != r.client
                    && let Some(c) = self.clients.get_mut(&old.producer)
                {
                    c.produces.remove(name);
                }
                let changed = old.state != ChannelState::Up || old.spec != r.channel;
                (old.consumers, old.counters, changed, old.grants)
            }
            None => (BTreeSet::new(), Counters::new(), true, Vec::new()),
        };
        // One producer: the previous one's grant is gone with it.
        grants.retain(|g| g.role != Role::Produce || g.client == r.client);
        let channel = Channel {
            spec: r.channel.clone(),
            producer: r.client.clone(),
            producer_pid: r.pid,
            producer_host: r.host.clone(),
            state: ChannelState::Up,
            consumers,
            counters,
            grants,
        };
        if announce {
            effects.push(Effect::Notify(Notification::ChannelUp {
                channel: Box::new(channel.info()),
            }));
        }
        self.channels.insert(name.clone(), channel);
        if let Some(c) = self.clients.get_mut(&r.client) {
            c.produces.insert(name.clone());
        }
        effects.push(Effect::Audit(AuditEvent::Registered {
            channel: name.clone(),
            kind: r.channel.kind,
            client: r.client.clone(),
            key: origin.key.map(str::to_owned),
            how,
        }));
        self.with_heartbeat(Reply::ok(id))
    }

    fn discover(&mut self, now: Instant, d: &Discover, effects: &mut Vec<Effect>) -> Reply {
        if let Some(client) = &d.client {
            self.touch(now, client);
        }
        let reply = match self.channels.get(&d.name) {
            Some(ch) if ch.state == ChannelState::Up => {
                let mut reply = Reply::ok(d.request_id);
                reply.channel = Some(ch.info());
                reply
            }
            Some(ch) => Reply::error(
                Some(d.request_id),
                ErrorCode::ChannelDown,
                format!(
                    "channel {} is down: its producer {} is gone",
                    d.name, ch.producer
                ),
            ),
            None => Reply::error(
                Some(d.request_id),
                ErrorCode::NotFound,
                format!("no channel named {}", d.name),
            ),
        };
        effects.push(Effect::Audit(AuditEvent::Discovered {
            channel: d.name.clone(),
            client: d.client.clone(),
            outcome: reply.error_code.as_str(),
        }));
        reply
    }

    fn unregister(&mut self, now: Instant, r: &ChannelRequest, effects: &mut Vec<Effect>) -> Reply {
        self.touch(now, &r.client);
        let Some(ch) = self.channels.get(&r.name) else {
            return Reply::error(
                Some(r.request_id),
                ErrorCode::NotFound,
                format!("no channel named {}", r.name),
            );
        };
        if ch.producer != r.client {
            return Reply::error(
                Some(r.request_id),
                ErrorCode::NotOwner,
                format!(
                    "channel {} is produced by {}, not {}",
                    r.name, ch.producer, r.client
                ),
            );
        }
        effects.push(Effect::Audit(AuditEvent::Unregistered {
            channel: r.name.clone(),
            client: r.client.clone(),
        }));
        self.take_down(&r.name, DownReason::Unregistered, effects);
        Reply::ok(r.request_id)
    }

    fn attach(
        &mut self,
        now: Instant,
        origin: Origin<'_>,
        r: &ChannelRequest,
        effects: &mut Vec<Effect>,
    ) -> Reply {
        let id = r.request_id;
        match self.channels.get(&r.name) {
            None => {
                return Reply::error(
                    Some(id),
                    ErrorCode::NotFound,
                    format!("no channel named {}", r.name),
                );
            }
            Some(ch) if ch.state != ChannelState::Up => {
                return Reply::error(
                    Some(id),
                    ErrorCode::ChannelDown,
                    format!(
                        "channel {} is down: its producer {} is gone",
                        r.name, ch.producer
                    ),
                );
            }
            Some(ch)
                if !ch.consumers.contains(&r.client)
                    && ch.consumers.len() >= self.config.max_consumers_per_channel =>
            {
                return Reply::error(
                    Some(id),
                    ErrorCode::ChannelFull,
                    format!(
                        "channel {} has {} consumers, its limit",
                        r.name, self.config.max_consumers_per_channel
                    ),
                );
            }
            Some(_) => {}
        }
        if !self.admit(now, origin, &r.client) {
            return Reply::error(
                Some(id),
                ErrorCode::LimitReached,
                format!(
                    "the broker tracks {} clients, its limit",
                    self.config.max_clients
                ),
            );
        }
        if let Some(c) = self.clients.get_mut(&r.client) {
            c.consumes.insert(r.name.clone());
        }
        let Some(ch) = self.channels.get_mut(&r.name) else {
            return Reply::error(Some(id), ErrorCode::Internal, "channel vanished");
        };
        if ch.consumers.insert(r.client.clone()) {
            effects.push(Effect::Audit(AuditEvent::Attached {
                channel: r.name.clone(),
                client: r.client.clone(),
            }));
        }
        let mut reply = Reply::ok(id);
        reply.channel = Some(ch.info());
        self.with_heartbeat(reply)
    }

    fn detach(&mut self, now: Instant, r: &ChannelRequest, effects: &mut Vec<Effect>) -> Reply {
        self.touch(now, &r.client);
        let Some(ch) = self.channels.get_mut(&r.name) else {
            return Reply::error(
                Some(r.request_id),
                ErrorCode::NotFound,
                format!("no channel named {}", r.name),
            );
        };
        if !ch.consumers.remove(&r.client) {
            return Reply::error(
                Some(r.request_id),
                ErrorCode::NotAttached,
                format!("{} is not a consumer of {}", r.client, r.name),
            );
        }
        ch.forget_grants_of(&r.client, Some(Role::Consume));
        if let Some(c) = self.clients.get_mut(&r.client) {
            c.consumes.remove(&r.name);
        }
        effects.push(Effect::Audit(AuditEvent::Detached {
            channel: r.name.clone(),
            client: r.client.clone(),
        }));
        self.remove_if_unheld(&r.name, effects);
        Reply::ok(r.request_id)
    }

    fn heartbeat(&mut self, now: Instant, h: &Heartbeat) -> Reply {
        let Some(client) = self.clients.get_mut(&h.client) else {
            return Reply::error(
                Some(h.request_id),
                ErrorCode::UnknownClient,
                format!(
                    "client {} is not known (the broker restarted or the client expired): register and attach again",
                    h.client
                ),
            );
        };
        client.last_seen = now;
        for (name, counters) in &h.channels {
            if let Some(ch) = self.channels.get_mut(name)
                && ch.producer == h.client
            {
                ch.counters.clone_from(counters);
            }
        }
        self.with_heartbeat(Reply::ok(h.request_id))
    }

    fn list(&self, l: &List) -> Reply {
        let prefix = l.prefix.as_deref().unwrap_or("");
        let channels = self
            .channels
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.as_str().starts_with(prefix))
            .filter(|(_, ch)| l.kind.is_none_or(|k| k == ch.spec.kind))
            .map(|(_, ch)| ch.info())
            .collect();
        let mut reply = Reply::ok(l.request_id);
        reply.channels = Some(channels);
        reply
    }

    /// Expires clients silent since before `now - expiry`; call it periodically.
    pub fn tick(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let expiry = self.config.expiry();
        let mut expired: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_seen) > expiry)
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in expired {
            self.expire(&id, Ended::Silent, effects);
        }
    }

    /// The client producing `name`, while the channel is up.
    pub fn live_producer_of(&self, name: &ChannelName) -> Option<&ClientId> {
        self.channels
            .get(name)
            .filter(|ch| ch.state == ChannelState::Up)
            .map(|ch| &ch.producer)
    }

    /// Expires `id` now, as its heartbeat timeout would later: its process is known to have
    /// ended (the broker checks that; the registry takes its word).
    pub fn expire_ended(&mut self, id: &ClientId, effects: &mut Vec<Effect>) {
        self.expire(id, Ended::Process, effects);
    }

    fn expire(&mut self, id: &ClientId, how: Ended, effects: &mut Vec<Effect>) {
        let (down, dropped) = match how {
            Ended::Silent => (DownReason::HeartbeatTimeout, DropReason::HeartbeatTimeout),
            Ended::Process => (DownReason::ProcessEnded, DropReason::ProcessEnded),
        };
        let Some(client) = self.clients.remove(id) else {
            return;
        };
        for ch in self.channels.values_mut() {
            ch.forget_grants_of(id, None);
        }
        for name in &client.produces {
            if self
                .channels
                .get(name)
                .is_some_and(|ch| &ch.producer == id && ch.state == ChannelState::Up)
            {
                self.take_down(name, down, effects);
            }
        }
        for name in &client.consumes {
            let Some(ch) = self.channels.get_mut(name) else {
                continue;
            };
            if ch.consumers.remove(id) {
                let producer = ch.producer.clone();
                effects.push(Effect::Notify(Notification::ConsumerDropped {
                    name: name.clone(),
                    producer: producer.clone(),
                    consumer: id.clone(),
                    reason: dropped,
                }));
                effects.push(Effect::Audit(AuditEvent::ConsumerDropped {
                    channel: name.clone(),
                    consumer: id.clone(),
                    producer,
                    reason: dropped,
                }));
                self.remove_if_unheld(name, effects);
            }
        }
        effects.push(Effect::Audit(AuditEvent::ClientExpired {
            client: id.clone(),
        }));
    }

    /// Marks a channel down, announces it, and removes it at once if nobody holds it.
    fn take_down(&mut self, name: &ChannelName, reason: DownReason, effects: &mut Vec<Effect>) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        ch.state = ChannelState::Down;
        let producer = ch.producer.clone();
        if let Some(c) = self.clients.get_mut(&producer) {
            c.produces.remove(name);
        }
        effects.push(Effect::Notify(Notification::ChannelDown {
            name: name.clone(),
            producer: producer.clone(),
            reason,
        }));
        effects.push(Effect::Audit(AuditEvent::ChannelDown {
            channel: name.clone(),
            producer,
            reason,
        }));
        self.remove_if_unheld(name, effects);
    }

    /// Removes a down channel nobody consumes, asking for its segment to be unlinked.
    fn remove_if_unheld(&mut self, name: &ChannelName, effects: &mut Vec<Effect>) {
        let unheld = self
            .channels
            .get(name)
            .is_some_and(|ch| ch.state == ChannelState::Down && ch.consumers.is_empty());
        if !unheld {
            return;
        }
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        effects.push(Effect::Audit(AuditEvent::ChannelRemoved {
            channel: name.clone(),
        }));
        if ch.is_memfd() {
            effects.push(Effect::ReleaseSegment {
                channel: name.clone(),
            });
        } else if ch.spec.kind == ChannelKind::Shm
            && let Some(shm_name) = ch.spec.shm_name
        {
            effects.push(Effect::RemoveSegment {
                channel: name.clone(),
                shm_name,
            });
        }
    }
}

#[cfg(test)]
mod tests;
