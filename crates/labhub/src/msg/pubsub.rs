//! Publish/subscribe: [`Publisher`] (XPUB, binds) and [`Subscriber`] (SUB, connects).

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use labhub_zmq::{
    Context, CurvePublicKey, Flags, Message as Frame, PollEvents, Socket, SocketType, poll,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::builder::{BindBuilder, ConnectBuilder, OnContext, ToEndpoint};
use super::endpoint::{BindOptions, ConnectOptions};
use super::link::Link;
use super::{FrameError, MsgError, PublisherBuilder, SubscriberBuilder};

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

impl BindBuilder<Publisher, OnContext> {
    /// Creates the socket and binds it.
    ///
    /// # Errors
    ///
    /// [`MsgError::InvalidOption`], [`MsgError::InvalidEndpoint`] or
    /// [`MsgError::Undialable`] for a bad option, [`MsgError::Zmq`] if binding fails.
    pub fn create(self) -> Result<Publisher, MsgError> {
        let (at, options) = self.into_parts();
        Publisher::bind_with(&at.context, &options)
    }
}

impl Publisher {
    /// A builder for a publisher on `context`, bound to
    /// [`DEFAULT_BIND`](super::DEFAULT_BIND) unless told otherwise.
    pub fn builder(context: &Context) -> PublisherBuilder {
        BindBuilder::new(OnContext {
            context: context.clone(),
        })
    }

    /// Creates the XPUB socket with `options` and binds it.
    pub(crate) fn bind_with(context: &Context, options: &BindOptions) -> Result<Self, MsgError> {
        let (socket, endpoint) = options.bind(context, SocketType::XPub)?;
        // Every subscribe message, also a second subscriber's for a prefix already
        // subscribed, so they can be counted. No peer knows the endpoint yet: none is missed.
        socket
            .set_xpub_verbose(true)
            .map_err(|e| MsgError::zmq("set xpub verbose", &endpoint, e))?;
        Ok(Self {
            socket,
            endpoint,
            curve_public: options.curve.as_ref().map(|keys| keys.public),
            subscriptions: Cell::new(0),
        })
    }

    /// The endpoint subscribers dial: never a wildcard host (see
    /// [`BindBuilder::advertise_host`]).
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
/// joiner"); a protocol that needs them must synchronise. A closed connection is reported
/// once, after the messages that came before it ([`MsgError::ConnectionClosed`]). `Send`,
/// not `Sync`.
pub struct Subscriber {
    link: Link,
    topics: Vec<Vec<u8>>,
}

impl ConnectBuilder<Subscriber, ToEndpoint> {
    /// Creates the socket, subscribes and connects.
    ///
    /// # Errors
    ///
    /// [`MsgError::NoTopics`] if no topic prefix was given, [`MsgError::InvalidOption`] or
    /// [`MsgError::InvalidEndpoint`] for a bad option, [`MsgError::Zmq`] if a socket call
    /// fails.
    pub fn open(self) -> Result<Subscriber, MsgError> {
        let (at, options) = self.into_parts();
        Subscriber::connect_with(&at.context, at.endpoint, &options)
    }
}

impl Subscriber {
    /// A builder for a subscriber on `context` to the publisher at `endpoint`.
    pub fn builder(context: &Context, endpoint: impl Into<String>) -> SubscriberBuilder {
        ConnectBuilder::new(ToEndpoint {
            context: context.clone(),
            endpoint: endpoint.into(),
        })
    }

    /// Creates the SUB socket with `options`, subscribes and connects to `endpoint`.
    pub(crate) fn connect_with(
        context: &Context,
        endpoint: String,
        options: &ConnectOptions,
    ) -> Result<Self, MsgError> {
        if options.topics.is_empty() {
            return Err(MsgError::NoTopics { endpoint });
        }
        let socket = options.connect(context, SocketType::Sub, &endpoint)?;
        let mut subscriber = Self {
            link: Link::new(socket, endpoint, options.max_message_size),
            topics: Vec::new(),
        };
        for topic in &options.topics {
            subscriber.subscribe(topic)?;
        }
        Ok(subscriber)
    }

    /// The publisher's endpoint.
    pub fn endpoint(&self) -> &str {
        self.link.endpoint()
    }

    /// The topic prefixes subscribed to.
    pub fn topics(&self) -> &[Vec<u8>] {
        &self.topics
    }

    /// Adds a topic prefix. Messages already in flight are not affected.
    pub fn subscribe(&mut self, prefix: impl AsRef<[u8]>) -> Result<(), MsgError> {
        let prefix = prefix.as_ref();
        self.link
            .socket()
            .subscribe(prefix)
            .map_err(|e| MsgError::zmq("subscribe", self.link.endpoint(), e))?;
        self.topics.push(prefix.to_vec());
        Ok(())
    }

    /// Waits up to `timeout` for a message; `None` if none came.
    ///
    /// # Errors
    ///
    /// A message that is not `[topic, payload]` is consumed and reported as
    /// [`MsgError::Malformed`], one over the maximum message size as [`MsgError::TooLarge`];
    /// a closed connection is [`MsgError::ConnectionClosed`] (once). After each the next call
    /// receives the next message. [`MsgError::Zmq`] if a socket call fails.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Message>, MsgError> {
        let Some(frames) = self.link.recv("message", timeout)? else {
            return Ok(None);
        };
        let found = frames.len();
        let Ok::<[Frame; PUBSUB_FRAMES], _>([topic, payload]) = frames.try_into() else {
            return Err(MsgError::Malformed {
                endpoint: self.link.endpoint().to_owned(),
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
                endpoint: self.link.endpoint().to_owned(),
                what: format!("message of topic \"{}\"", message.topic().escape_ascii()),
                source,
            }),
        }
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("endpoint", &self.link.endpoint())
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
