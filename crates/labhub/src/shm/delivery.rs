//! How one consumer takes frames from a channel, whatever the channel's policy: its one
//! spelling for people is `lossless`, `latest`, `queue:N`, `every:K`, `max-rate:HZ`.
#![deny(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use super::layout::delivery_code;

/// How one consumer takes frames: chosen per consumer, so a lossless recorder, a latest-only
/// viewer and a bounded analysis job can read one channel at once.
///
/// Only [`DeliveryMode::Lossless`] holds the producer back (under a lossless ring's
/// backpressure rule, which then applies to the slowest lossless consumer). Every other mode
/// never holds anyone back: the producer may rewrite any slot such a consumer reads, so its
/// frames are never held in place (`Frame::held` is `None`); they are read through validated
/// copies or `Frame::read`. Frames a mode skips on purpose are counted in the consumer's
/// `dropped` counter; frames the producer overwrote before the consumer got to them in
/// `missed`.
///
/// Written and parsed (`Display` / `FromStr`) as `lossless`, `latest`, `queue:N`, `every:K`
/// and `max-rate:HZ` (N, K and HZ whole numbers from 1 to 1000000); the CLI (`watch --mode`),
/// `labhub info` and the docs use this spelling.
///
/// ```
/// use labhub::shm::DeliveryMode;
/// let m: DeliveryMode = "queue:8".parse()?;
/// assert_eq!(m, DeliveryMode::Queue(8));
/// assert_eq!(m.to_string(), "queue:8");
/// assert!(!m.holds_producer());
/// assert!("lossless".parse::<DeliveryMode>()?.holds_producer());
/// # Ok::<(), labhub::shm::DeliveryParseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// Every frame, in order; the consumer's position holds the producer back under the
    /// channel's backpressure rule (the default).
    #[default]
    Lossless,
    /// Always the newest committed frame; older unread frames are skipped (dropped).
    Latest,
    /// In order, but at most `N` frames behind the newest: when further behind, the oldest
    /// unread frames are skipped (dropped) until `N` are left.
    Queue(u32),
    /// One frame of every `K` (decimation for displays): after frame f, the next is f + K.
    Every(u32),
    /// The newest frame, at most `HZ` times per second (for displays).
    MaxRate(u32),
}

/// Largest parameter of a delivery mode.
pub const MAX_DELIVERY_PARAM: u32 = 1_000_000;

impl DeliveryMode {
    /// Whether a consumer of this mode holds the producer back (only `lossless`).
    pub const fn holds_producer(self) -> bool {
        matches!(self, Self::Lossless)
    }

    /// The code and parameter stored in the consumer-table entry.
    pub(crate) const fn to_code(self) -> (u32, u64) {
        match self {
            Self::Lossless => (delivery_code::LOSSLESS, 0),
            Self::Latest => (delivery_code::LATEST, 0),
            Self::Queue(n) => (delivery_code::QUEUE, n as u64),
            Self::Every(k) => (delivery_code::EVERY, k as u64),
            Self::MaxRate(hz) => (delivery_code::MAX_RATE, hz as u64),
        }
    }

    /// The mode a consumer-table entry names, if its code and parameter are valid.
    pub(crate) fn from_code(code: u32, param: u64) -> Option<Self> {
        let p = u32::try_from(param)
            .ok()
            .filter(|p| (1..=MAX_DELIVERY_PARAM).contains(p));
        Some(match code {
            delivery_code::LOSSLESS => Self::Lossless,
            delivery_code::LATEST => Self::Latest,
            delivery_code::QUEUE => Self::Queue(p?),
            delivery_code::EVERY => Self::Every(p?),
            delivery_code::MAX_RATE => Self::MaxRate(p?),
            _ => return None,
        })
    }

    /// Checks the parameter (1 to [`MAX_DELIVERY_PARAM`]).
    pub(crate) fn validate(self) -> Result<(), String> {
        match self {
            Self::Queue(p) | Self::Every(p) | Self::MaxRate(p)
                if !(1..=MAX_DELIVERY_PARAM).contains(&p) =>
            {
                Err(format!(
                    "{self}: the parameter must be from 1 to {MAX_DELIVERY_PARAM}"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lossless => f.write_str("lossless"),
            Self::Latest => f.write_str("latest"),
            Self::Queue(n) => write!(f, "queue:{n}"),
            Self::Every(k) => write!(f, "every:{k}"),
            Self::MaxRate(hz) => write!(f, "max-rate:{hz}"),
        }
    }
}

/// A string that is not a delivery mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid delivery mode {input:?}: {problem} (lossless, latest, queue:N, every:K, max-rate:HZ)"
)]
pub struct DeliveryParseError {
    /// The text given (at most 64 characters of it).
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FromStr for DeliveryMode {
    type Err = DeliveryParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem: &str| DeliveryParseError {
            input: s.chars().take(64).collect(),
            problem: problem.to_owned(),
        };
        if s.len() > 64 {
            return Err(bad("longer than 64 bytes"));
        }
        match s {
            "lossless" => return Ok(Self::Lossless),
            "latest" => return Ok(Self::Latest),
            _ => {}
        }
        let (kind, param) = s.split_once(':').ok_or_else(|| bad("not a known mode"))?;
        let make: fn(u32) -> Self = match kind {
            "queue" => Self::Queue,
            "every" => Self::Every,
            "max-rate" => Self::MaxRate,
            _ => return Err(bad("not a known mode")),
        };
        let p: u32 = param
            .parse()
            .ok()
            .filter(|p| (1..=MAX_DELIVERY_PARAM).contains(p))
            .ok_or_else(|| bad("the parameter must be a whole number from 1 to 1000000"))?;
        Ok(make(p))
    }
}

impl serde::Serialize for DeliveryMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeliveryMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_is_written_as_it_is_parsed_and_stored_as_its_code() {
        for (text, mode) in [
            ("lossless", DeliveryMode::Lossless),
            ("latest", DeliveryMode::Latest),
            ("queue:8", DeliveryMode::Queue(8)),
            ("every:4", DeliveryMode::Every(4)),
            ("max-rate:30", DeliveryMode::MaxRate(30)),
            ("queue:1000000", DeliveryMode::Queue(1_000_000)),
        ] {
            assert_eq!(text.parse::<DeliveryMode>(), Ok(mode), "{text}");
            assert_eq!(mode.to_string(), text);
            let (code, param) = mode.to_code();
            assert_eq!(DeliveryMode::from_code(code, param), Some(mode));
        }
        assert_eq!(DeliveryMode::from_code(0, 0), Some(DeliveryMode::Lossless));
        assert_eq!(DeliveryMode::from_code(2, 0), None, "queue:0");
        assert_eq!(DeliveryMode::from_code(9, 1), None);
    }

    #[test]
    fn malformed_modes_are_refused_with_the_problem() {
        for bad in [
            "",
            "Latest",
            "queue",
            "queue:",
            "queue:0",
            "queue:-1",
            "every:1000001",
            "max-rate:2.5",
            "max_rate:30",
            "ring:8:block",
            "lossless:1",
        ] {
            let err = bad.parse::<DeliveryMode>().unwrap_err();
            assert!(!err.problem.is_empty(), "{bad}");
        }
    }
}
