//! Inspection: what a channel's segment says about itself — header, schema, policy, counters,
//! producer and consumers with their liveness — read without attaching, for the CLI
//! (`labhub info`, `ls`, `watch`) and the broker's segment cleanup.
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::element::ElementType;
use super::error::ChannelError;
use super::layout::{self, consumer_state};
use super::producer::policy_of;
use super::{DeliveryMode, Policy};
use crate::name::ChannelName;
use crate::sys;

/// A channel's segment as its header describes it, read by [`inspect`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SegmentReport {
    /// The channel.
    pub channel: ChannelName,
    /// How the segment is shared: a named segment, or memfds a broker hands out.
    pub sharing: Sharing,
    /// The named segment's OS name (`/labhub.<uid>.<channel>`); `None` for memfds.
    pub shm_name: Option<String>,
    /// The layout version of the segment.
    pub layout_version: u32,
    /// Size of the data region in bytes (what a broker announces as the channel's size).
    pub total_size: u64,
    /// Size of the control region in bytes.
    pub control_size: u64,
    /// A random id of this incarnation of the channel (a memfd channel taken over by a
    /// restarted producer is a new incarnation of it).
    pub instance: u64,
    /// The policy (`latest`, `double`, `ring:N:block`, …; a blocking ring's timeout is not
    /// stored in the segment and shown as the default).
    pub policy: Policy,
    /// Number of slots.
    pub slots: u32,
    /// Bytes of the largest frame.
    pub slot_size: u64,
    /// The element type.
    pub element: ElementType,
    /// Its numpy dtype string (`<u2`, …).
    pub numpy_dtype: &'static str,
    /// The largest frame shape.
    pub max_shape: Vec<u64>,
    /// The application's schema name, if any.
    pub schema_name: Option<String>,
    /// The application's schema version (0: none).
    pub schema_version: u32,
    /// Capacity of the flexible zone.
    pub flex_size: u64,
    /// Whether frames carry checksums.
    pub checksum: bool,
    /// Whether consumers must present a secret.
    pub has_secret: bool,
    /// Whether payload buffers are pooled (large lossless rings).
    pub pooled: bool,
    /// Frames committed.
    pub published: u64,
    /// Frames lost to backpressure.
    pub dropped: u64,
    /// Frames consumers lost to overwrites.
    pub overwritten: u64,
    /// Consumers evicted since creation.
    pub evicted: u64,
    /// The version of the flexible-zone state (0: none).
    pub state_version: u64,
    /// The producer, if one is recorded.
    pub producer: Option<ProducerReport>,
    /// The consumer-table entries in use.
    pub consumers: Vec<ConsumerReport>,
}

/// The producer a segment records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProducerReport {
    /// Its process id.
    pub pid: u32,
    /// Whether that process (pid and start time) is alive.
    pub alive: bool,
    /// How many times a producer attached (1 after creation).
    pub attaches: u64,
    /// Milliseconds since its last commit or attach.
    pub heartbeat_age_ms: u64,
}

/// One consumer-table entry in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumerReport {
    /// Table index.
    pub index: usize,
    /// The consumer's process id.
    pub pid: u32,
    /// `active`, `claiming` or `releasing`.
    pub state: &'static str,
    /// Whether its process is alive, by the rule the producer evicts by.
    pub alive: bool,
    /// Its delivery mode (`lossless`, `latest`, `queue:N`, …), `None` for a code this build
    /// does not know.
    pub delivery: Option<DeliveryMode>,
    /// The lowest frame id it still needs (`u64::MAX` for a mode that holds nothing back).
    pub position: u64,
    /// The next frame id it will look at.
    pub cursor: u64,
    /// Frames committed that it has not looked at yet (the commit position less its cursor).
    pub lag: u64,
    /// Frames its delivery mode skipped on purpose.
    pub dropped: u64,
    /// Frames it read.
    pub received: u64,
    /// Frames it lost to overwrites.
    pub missed: u64,
    /// The frame id it holds now, if any.
    pub held: Option<u64>,
    /// Milliseconds since its last read or wait.
    pub heartbeat_age_ms: u64,
}

impl SegmentReport {
    /// Whether a live process (the producer, or a consumer) still uses the segment.
    pub fn in_use(&self) -> bool {
        self.producer.as_ref().is_some_and(|p| p.alive) || self.consumers.iter().any(|c| c.alive)
    }
}

fn age_ms(now: u64, then: u64) -> u64 {
    now.saturating_sub(then) / 1_000_000
}

/// How a channel's segment is shared (its wire spelling in the broker's protocol too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Sharing {
    /// A named POSIX segment, `/dev/shm/labhub.<uid>.<channel>`, opened by name (brokerless
    /// channels).
    Named,
    /// Two memfds a broker holds and hands to the processes it grants the channel to (the
    /// data memfd sealed against writes; docs/PROTOCOL.md §9).
    Memfd,
}

impl Sharing {
    /// `named` or `memfd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Named => "named",
            Self::Memfd => "memfd",
        }
    }
}

/// Reads channel `name`'s segment header without attaching (nothing is written to the segment).
///
/// ```
/// use labhub::shm::{self, Channel, ElementType, Policy};
/// # let name = format!("doc-inspect-{}", std::process::id());
/// let producer = Channel::new(&name).policy(Policy::ring(8)).frames::<u16>(&[4, 4]).create()?;
/// let report = shm::inspect(&name)?;
/// assert_eq!(report.element, ElementType::U16);
/// assert_eq!(report.numpy_dtype, "<u2");
/// assert_eq!(report.max_shape, [4, 4]);
/// assert_eq!(report.policy.to_string(), "ring:8:block");
/// assert!(report.producer.unwrap().alive);
/// # drop(producer); shm::remove_channel(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// `InvalidName`; `NotFound`; `ForeignSegment`; `Layout` for a segment this build cannot read
/// (`NotInitialized` while a segment of another implementation is being created,
/// `VersionMismatch` for another layout version).
pub fn inspect(name: &str) -> Result<SegmentReport, ChannelError> {
    let name = super::channel_name(name)?;
    let view = super::open_view(&name, Duration::ZERO)?;
    Ok(report(&view))
}

#[cfg_attr(not(feature = "zmq"), allow(dead_code))]
/// Reads the segment of a broker-granted channel from its memfds (the data one mapped
/// read-only), without attaching.
pub(crate) fn inspect_memfd(
    name: &ChannelName,
    pair: super::MemfdPair,
) -> Result<SegmentReport, ChannelError> {
    Ok(report(&super::memfd_view(name, pair, false)?))
}

/// What a mapped segment says about itself.
pub(super) fn report(view: &layout::View) -> SegmentReport {
    let h = view.header();
    let c = view.control();
    let geo = view.geometry();
    let params = geo.params;
    let now = sys::monotonic_coarse_ns();
    let pid = h.producer_pid.load(Ordering::Acquire);
    let producer = u32::try_from(pid)
        .ok()
        .filter(|&p| p != 0)
        .map(|pid| ProducerReport {
            pid,
            alive: super::producer_alive(view),
            attaches: h.producer_attaches.load(Ordering::Relaxed),
            heartbeat_age_ms: age_ms(now, h.producer_heartbeat_ns.load(Ordering::Relaxed)),
        });
    let commit = h.commit_pos.load(Ordering::Acquire);
    let mut consumers = Vec::new();
    for index in 0..layout::CONSUMER_CAPACITY as usize {
        let Some(e) = view.consumer(index) else { break };
        let state = e.state.load(Ordering::Acquire);
        if state == consumer_state::FREE {
            continue;
        }
        let delivery = DeliveryMode::from_code(
            e.delivery.load(Ordering::Relaxed),
            e.delivery_param.load(Ordering::Relaxed),
        );
        let position = e.position.load(Ordering::Relaxed);
        // A lossless consumer's position is its cursor (the cursor word is kept by the others).
        let cursor = if delivery == Some(DeliveryMode::Lossless) {
            position
        } else {
            e.cursor.load(Ordering::Relaxed)
        };
        consumers.push(ConsumerReport {
            index,
            pid: (state & 0xffff_ffff) as u32,
            state: match state >> 32 {
                consumer_state::ACTIVE => "active",
                consumer_state::CLAIMING => "claiming",
                consumer_state::RELEASING => "releasing",
                _ => "unknown",
            },
            alive: !super::entry_owner_dead(view, index, state),
            delivery,
            position,
            cursor,
            lag: commit.saturating_sub(cursor),
            dropped: e.dropped.load(Ordering::Relaxed),
            received: e.received.load(Ordering::Relaxed),
            missed: e.missed.load(Ordering::Relaxed),
            held: e.held.load(Ordering::Relaxed).checked_sub(1),
            heartbeat_age_ms: age_ms(now, e.heartbeat_ns.load(Ordering::Relaxed)),
        });
    }
    let schema = params.schema;
    let element = geo.element();
    let name = view.segment().channel().clone();
    let memfd = view.segment().is_memfd();
    SegmentReport {
        shm_name: (!memfd).then(|| name.segment_name()),
        sharing: if memfd {
            Sharing::Memfd
        } else {
            Sharing::Named
        },
        channel: name,
        layout_version: layout::LAYOUT_VERSION,
        total_size: geo.total_size,
        control_size: geo.control_size,
        instance: h.instance,
        // The header was validated: its policy codes are known.
        policy: policy_of(&params).unwrap_or(Policy::Latest),
        slots: params.slot_count,
        slot_size: params.slot_size,
        element,
        numpy_dtype: element.numpy_dtype(),
        max_shape: schema.shape().to_vec(),
        schema_name: schema.name().map(str::to_owned),
        schema_version: schema.version,
        flex_size: params.flex_size,
        checksum: params.checksum != layout::checksum_code::NONE,
        has_secret: h.has_secret != 0,
        pooled: geo.pooled(),
        published: h.commit_pos.load(Ordering::Acquire),
        dropped: h.dropped.load(Ordering::Relaxed),
        overwritten: c.overwritten.load(Ordering::Relaxed),
        evicted: c.consumers_evicted.load(Ordering::Relaxed),
        state_version: h.flex_version.load(Ordering::Acquire),
        producer,
        consumers,
    }
}
