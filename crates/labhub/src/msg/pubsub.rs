//! Publish/subscribe: [`Publisher`] (XPUB, binds) and [`Subscriber`] (SUB, connects).

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurveKeyPair, CurvePublicKey, Flags, Message as Frame, PollEvents, Socket, SocketType,
    poll,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::endpoint::{self, BindOptions, ClientCurve};
use super::{DEFAULT_HWM, FrameError, MsgError, recv_frames};

/// Frames of a pub/sub message: topic, payload.
const PUBSUB_FRAMES: usize = 2;

/// A publisher: an XPUB socket bound to an endpoint, sending `[topic, payload]` messages to
/// every connected [`Subscriber`] whose prefixes match the topic.
///
/// Sending never blocks: a subscriber whose queue (the high-water mark) is full loses the
/// message, the publisher and the other subscribers go on. `Send`, not `Sync`: one thread
/// owns it.
///
/// A subscriber receives only what is sent after its subscription reached the publisher.
/// The XPUB socket reports each subscription, so [`Publisher::wait_for_subscribers`] can wait
/// for them instead of guessing with a sleep; [`Publisher::send`] drains the reports so they
/// never pile up. Subscribers see a plain PUB socket: the wire format is unchanged.
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<labhub::msg::Publisher>(); // one owning thread: not Sync
/// ```
pub struct Publisher {
    socket: Socket,
    endpoint: String,
    curve_public: Option<CurvePublicKey>,
    /// Subscribe messages received since creation.
    subscriptions: Cell<usize>,
}

/// First byte of an XPUB subscription message that subscribes (0 unsubscribes).
const SUBSCRIBE: u8 = 1;

/// Builds a [`Publisher`]; see [`Publisher::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create` is called"]
pub struct PublisherBuilder {
    context: Context,
    bind: BindOptions,
}

impl PublisherBuilder {
    /// The endpoint to bind: `tcp://HOST:PORT` (port 0 or `*` lets the system pick, a
    /// wildcard host listens on every interface) or `ipc://PATH`. Default
    /// [`DEFAULT_BIND`](super::DEFAULT_BIND).
    pub fn bind(mut self, endpoint: impl Into<String>) -> Self {
        self.bind.endpoint = endpoint.into();
        self
    }

    /// The host to report in [`Publisher::endpoint`] when binding to a wildcard host (an IP
    /// address or a name peers can resolve). Default: the loopback address.
    pub fn advertise_host(mut self, host: impl Into<String>) -> Self {
        self.bind.advertise_host = Some(host.into());
        self
    }

    /// Encrypts and authenticates with CurveZMQ: this is the server key pair; subscribers
    /// need its public half.
    pub fn curve(mut self, server_keys: &CurveKeyPair) -> Self {
        self.bind.curve = Some(server_keys.clone());
        self
    }

    /// Messages queued per subscriber before further ones are dropped for it. Default
    /// [`DEFAULT_HWM`](super::DEFAULT_HWM).
    pub fn send_hwm(mut self, messages: i32) -> Self {
        self.bind.hwm = messages;
        self
    }

    /// Creates the socket and binds it.
    pub fn create(self) -> Result<Publisher, MsgError> {
        let (socket, endpoint) = self.bind.bind(&self.context, SocketType::XPub)?;
        // Every subscribe message, also a second subscriber's for a prefix already
        // subscribed, so they can be counted. No peer knows the endpoint yet: none is missed.
        socket
            .set_xpub_verbose(true)
            .map_err(|e| MsgError::zmq("set xpub verbose", &endpoint, e))?;
        Ok(Publisher {
            socket,
            endpoint,
            curve_public: self.bind.curve.map(|keys| keys.public),
            subscriptions: Cell::new(0),
        })
    }
}

impl Publisher {
    /// A builder for a publisher on `context`, bound to
    /// [`DEFAULT_BIND`](super::DEFAULT_BIND) unless told otherwise.
    pub fn builder(context: &Context) -> PublisherBuilder {
        PublisherBuilder {
            context: context.clone(),
            bind: BindOptions::new(DEFAULT_HWM),
        }
    }

    /// The endpoint subscribers dial: never a wildcard host (see
    /// [`PublisherBuilder::advertise_host`]).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The CURVE public key subscribers need, if the publisher uses CURVE.
    pub fn curve_public_key(&self) -> Option<&CurvePublicKey> {
        self.curve_public.as_ref()
    }

    /// Waits up to `timeout` until `count` subscribe messages have reached the publisher
    /// since it was created, and returns how many have (at least `count`). A message sent
    /// after this returns reaches every subscriber counted.
    ///
    /// Subscribers cannot be told apart on an XPUB socket, so this counts subscriptions, not
    /// subscribers: a subscriber with three topic prefixes counts three times, and one that
    /// left still counts. With one prefix per subscriber, `count` is the number of
    /// subscribers. Fails with [`MsgError::SubscriberTimeout`] if fewer came in time; the
    /// publisher stays usable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use labhub::msg::{Context, Publisher, Subscriber};
    ///
    /// let context = Context::new()?;
    /// let publisher = Publisher::builder(&context).create()?;
    /// let subscriber = Subscriber::builder(&context, publisher.endpoint()).all_topics().open()?;
    /// publisher.wait_for_subscribers(1, Duration::from_secs(10))?;
    /// publisher.send("cam0", "frame 1")?; // no slow-joiner loss: it is subscribed
    /// let message = subscriber.recv(Duration::from_secs(10))?.expect("a message");
    /// assert_eq!(message.payload(), b"frame 1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_for_subscribers(&self, count: usize, timeout: Duration) -> Result<usize, MsgError> {
        // No deadline (a timeout too large to add) waits forever.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.drain_subscriptions()?;
            let seen = self.subscriptions.get();
            if seen >= count {
                return Ok(seen);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(MsgError::SubscriberTimeout {
                    endpoint: self.endpoint.clone(),
                    expected: count,
                    found: seen,
                    timeout,
                });
            }
            let mut items = [self.socket.poll_item(PollEvents::IN)];
            poll(&mut items, left).map_err(|e| MsgError::zmq("poll", &self.endpoint, e))?;
        }
    }

    /// Subscribe messages received since creation, as of the last call of
    /// [`wait_for_subscribers`](Self::wait_for_subscribers) or [`send`](Self::send) (which
    /// receive them).
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.get()
    }

    /// Receives the subscription messages waiting, without blocking, and counts the
    /// subscribe ones.
    fn drain_subscriptions(&self) -> Result<(), MsgError> {
        loop {
            match self.socket.recv(Flags::DONTWAIT) {
                Ok(message) => {
                    if message.first() == Some(&SUBSCRIBE) {
                        self.subscriptions
                            .set(self.subscriptions.get().saturating_add(1));
                    }
                }
                Err(e) if e.is_again() => return Ok(()),
                Err(e) => return Err(MsgError::zmq("receive subscriptions", &self.endpoint, e)),
            }
        }
    }

    /// Sends `payload` under `topic` (which may be empty; it is always the first frame).
    /// Never blocks; a subscriber whose queue is full misses the message.
    pub fn send(&self, topic: impl AsRef<[u8]>, payload: impl AsRef<[u8]>) -> Result<(), MsgError> {
        // Subscription reports queue on the socket until received: take them off first.
        self.drain_subscriptions()?;
        self.socket
            .send_multipart([topic.as_ref(), payload.as_ref()], Flags::DONTWAIT)
            .map_err(|e| MsgError::zmq("send", &self.endpoint, e))
    }

    /// Sends `value` as JSON under `topic`.
    pub fn send_json<T: Serialize + ?Sized>(
        &self,
        topic: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), MsgError> {
        let payload = serde_json::to_vec(value).map_err(|source| MsgError::Encode {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        self.send(topic, payload)
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .field("curve", &self.curve_public.is_some())
            .field("subscriptions", &self.subscriptions.get())
            .finish()
    }
}

/// A subscriber: a SUB socket connected to a [`Publisher`]'s endpoint, receiving the messages
/// whose topic starts with one of its prefixes. At least one prefix is required (the empty
/// prefix matches every topic), so it is never connected yet silently deaf.
///
/// Messages sent before the connection is complete are not received (ZeroMQ's "slow
/// joiner"); a protocol that needs them must synchronise. `Send`, not `Sync`.
pub struct Subscriber {
    socket: Socket,
    endpoint: String,
    topics: Vec<Vec<u8>>,
}

/// Builds a [`Subscriber`]; see [`Subscriber::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct SubscriberBuilder {
    context: Context,
    endpoint: String,
    topics: Vec<Vec<u8>>,
    curve: Option<ClientCurve>,
    hwm: i32,
}

impl SubscriberBuilder {
    /// Receives messages whose topic starts with `prefix` (byte-wise; `"cam"` matches
    /// `"cam0"` and `"camera"`). May be given several times.
    pub fn topic(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.topics.push(prefix.as_ref().to_vec());
        self
    }

    /// Receives every message (the empty prefix).
    pub fn all_topics(self) -> Self {
        self.topic([])
    }

    /// Connects with CurveZMQ to a publisher whose public key is `server`, authenticating
    /// with `own_keys`.
    pub fn curve(mut self, server: &CurvePublicKey, own_keys: &CurveKeyPair) -> Self {
        self.curve = Some(ClientCurve {
            server: *server,
            keys: own_keys.clone(),
        });
        self
    }

    /// Messages queued before further ones are dropped. Default
    /// [`DEFAULT_HWM`](super::DEFAULT_HWM).
    pub fn recv_hwm(mut self, messages: i32) -> Self {
        self.hwm = messages;
        self
    }

    /// Creates the socket, subscribes and connects. Fails with [`MsgError::NoTopics`] if no
    /// topic prefix was given.
    pub fn open(self) -> Result<Subscriber, MsgError> {
        if self.topics.is_empty() {
            return Err(MsgError::NoTopics {
                endpoint: self.endpoint,
            });
        }
        let socket = endpoint::connect(
            &self.context,
            SocketType::Sub,
            &self.endpoint,
            self.curve.as_ref(),
            self.hwm,
        )?;
        let mut subscriber = Subscriber {
            socket,
            endpoint: self.endpoint,
            topics: Vec::new(),
        };
        for topic in self.topics {
            subscriber.subscribe(topic)?;
        }
        Ok(subscriber)
    }
}

impl Subscriber {
    /// A builder for a subscriber on `context` to the publisher at `endpoint`.
    pub fn builder(context: &Context, endpoint: impl Into<String>) -> SubscriberBuilder {
        SubscriberBuilder {
            context: context.clone(),
            endpoint: endpoint.into(),
            topics: Vec::new(),
            curve: None,
            hwm: DEFAULT_HWM,
        }
    }

    /// The publisher's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The topic prefixes subscribed to.
    pub fn topics(&self) -> &[Vec<u8>] {
        &self.topics
    }

    /// Adds a topic prefix. Messages already in flight are not affected.
    pub fn subscribe(&mut self, prefix: impl AsRef<[u8]>) -> Result<(), MsgError> {
        let prefix = prefix.as_ref();
        self.socket
            .subscribe(prefix)
            .map_err(|e| MsgError::zmq("subscribe", &self.endpoint, e))?;
        self.topics.push(prefix.to_vec());
        Ok(())
    }

    /// Waits up to `timeout` for a message; `None` if none came.
    ///
    /// A message that is not `[topic, payload]` is consumed and reported as
    /// [`MsgError::Malformed`]; the next call receives the next message.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Message>, MsgError> {
        let Some(frames) = recv_frames(&self.socket, timeout)
            .map_err(|e| MsgError::zmq("receive", &self.endpoint, e))?
        else {
            return Ok(None);
        };
        let found = frames.len();
        let Ok::<[Frame; PUBSUB_FRAMES], _>([topic, payload]) = frames.try_into() else {
            return Err(MsgError::Malformed {
                endpoint: self.endpoint.clone(),
                what: "message",
                problem: FrameError::FrameCount {
                    expected: PUBSUB_FRAMES,
                    found,
                },
            });
        };
        Ok(Some(Message { topic, payload }))
    }

    /// Waits up to `timeout` for a message and decodes its payload as JSON; `None` if none
    /// came. A payload that is not a `T` is consumed and reported as [`MsgError::Decode`].
    pub fn recv_json<T: DeserializeOwned>(
        &self,
        timeout: Duration,
    ) -> Result<Option<JsonMessage<T>>, MsgError> {
        let Some(message) = self.recv(timeout)? else {
            return Ok(None);
        };
        match serde_json::from_slice(message.payload()) {
            Ok(value) => Ok(Some(JsonMessage {
                topic: message.topic().to_vec(),
                value,
            })),
            Err(source) => Err(MsgError::Decode {
                endpoint: self.endpoint.clone(),
                what: format!("message of topic \"{}\"", message.topic().escape_ascii()),
                source,
            }),
        }
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("endpoint", &self.endpoint)
            .field("topics", &self.topics.len())
            .finish()
    }
}

/// A received pub/sub message; its frames are not copied.
pub struct Message {
    topic: Frame,
    payload: Frame,
}

impl Message {
    /// The topic (first frame).
    pub fn topic(&self) -> &[u8] {
        &self.topic
    }

    /// The topic as text, if it is UTF-8.
    pub fn topic_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.topic).ok()
    }

    /// The payload (second frame).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic().escape_ascii().to_string())
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A received pub/sub message with its payload decoded from JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonMessage<T> {
    /// The topic.
    pub topic: Vec<u8>,
    /// The decoded payload.
    pub value: T,
}
