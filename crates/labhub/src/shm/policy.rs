//! How a channel uses its slots, and its one spelling for people: `latest`, `double`,
//! `ring:N:block`, `ring:N:block:TIMEOUT`, `ring:N:fail`, `ring:N:drop`.
#![deny(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a channel uses its slots.
///
/// Written and parsed (`Display` / `FromStr`) as `latest`, `double`, `ring:N:block` (the default
/// blocking timeout, [`Backpressure::DEFAULT_BLOCK_TIMEOUT`]), `ring:N:block:500ms` (any
/// duration humantime reads: `2s`, `1500ms`, `1min`), `ring:N:fail` or `ring:N:drop`, with N
/// from 1 to 65536. The CLI, the broker's JSON and the docs use this spelling.
///
/// ```
/// use labhub::shm::{Backpressure, Policy};
/// use std::time::Duration;
/// let p: Policy = "ring:8:block:500ms".parse()?;
/// assert_eq!(p, Policy::Ring { slots: 8, when_full: Backpressure::Block { timeout: Duration::from_millis(500) } });
/// assert_eq!(p.to_string(), "ring:8:block:500ms");
/// assert_eq!("double".parse::<Policy>()?, Policy::DoubleBuffer);
/// # Ok::<(), labhub::shm::PolicyParseError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// One slot; the newest frame wins (lossy).
    Latest,
    /// Two slots; the newest frame wins, and a reader has one frame period to finish (lossy).
    DoubleBuffer,
    /// `slots` slots, lossless unless `when_full` is [`Backpressure::DropOldest`]: the ring is
    /// full when the slowest live consumer is `slots` frames behind.
    Ring {
        /// Number of slots (1 to 65536).
        slots: u32,
        /// What the producer does when the ring is full.
        when_full: Backpressure,
    },
}

/// What a ring's producer does when the slowest live consumer is a full ring behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backpressure {
    /// Wait for space, up to `timeout` (then `PublishError::Timeout`); dead and stopped
    /// consumers are detected and evicted while waiting.
    Block {
        /// Longest wait.
        timeout: Duration,
    },
    /// Fail at once with `PublishError::Full`.
    Fail,
    /// Overwrite the oldest unread frame (counted as dropped); slow readers skip it. Lossy.
    DropOldest,
}

impl Backpressure {
    /// The blocking timeout of `ring:N:block` written without one.
    pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_secs(1);

    /// `Block` with the default timeout.
    pub const fn block() -> Self {
        Self::Block {
            timeout: Self::DEFAULT_BLOCK_TIMEOUT,
        }
    }
}

impl Policy {
    /// A lossless ring of `slots` slots that blocks (for the default timeout) when full.
    pub const fn ring(slots: u32) -> Self {
        Self::Ring {
            slots,
            when_full: Backpressure::block(),
        }
    }

    /// Whether a frame a consumer has not released yet is never overwritten (a ring that
    /// blocks or fails when full). Lossless channels hand out held frames.
    pub const fn is_lossless(self) -> bool {
        matches!(
            self,
            Self::Ring {
                when_full: Backpressure::Block { .. } | Backpressure::Fail,
                ..
            }
        )
    }

    /// Number of slots.
    pub const fn slots(self) -> u32 {
        match self {
            Self::Latest => 1,
            Self::DoubleBuffer => 2,
            Self::Ring { slots, .. } => slots,
        }
    }
}

/// A duration in the largest whole unit (`2s`, `500ms`, `20us`, `7ns`), which humantime reads.
fn duration_text(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::DoubleBuffer => f.write_str("double"),
            Self::Ring { slots, when_full } => {
                write!(f, "ring:{slots}:")?;
                match when_full {
                    Backpressure::Block { timeout }
                        if *timeout == Backpressure::DEFAULT_BLOCK_TIMEOUT =>
                    {
                        f.write_str("block")
                    }
                    Backpressure::Block { timeout } => {
                        write!(f, "block:{}", duration_text(*timeout))
                    }
                    Backpressure::Fail => f.write_str("fail"),
                    Backpressure::DropOldest => f.write_str("drop"),
                }
            }
        }
    }
}

/// Longest written policy, in bytes (`ring:65536:block:` and a 20-digit duration in ns).
pub const MAX_POLICY_LEN: usize = 64;

/// A string that is not a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid policy {input:?}: {problem} (latest, double, ring:N:block, ring:N:block:500ms, ring:N:fail, ring:N:drop)"
)]
pub struct PolicyParseError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FromStr for Policy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem: &str| PolicyParseError {
            input: s.chars().take(64).collect(),
            problem: problem.to_owned(),
        };
        if s.len() > MAX_POLICY_LEN {
            return Err(bad("longer than 64 bytes"));
        }
        match s {
            "latest" => return Ok(Self::Latest),
            "double" => return Ok(Self::DoubleBuffer),
            _ => {}
        }
        let mut parts = s.splitn(4, ':');
        if parts.next() != Some("ring") {
            return Err(bad("not a known policy"));
        }
        let slots = parts
            .next()
            .ok_or_else(|| bad("a ring needs a slot count"))?;
        let slots: u32 = slots
            .parse()
            .ok()
            .filter(|n| (1..=super::layout::MAX_SLOTS).contains(n))
            .ok_or_else(|| bad("the slot count must be a number from 1 to 65536"))?;
        let when_full = match (parts.next(), parts.next()) {
            (Some("block"), None) => Backpressure::block(),
            (Some("block"), Some(t)) => {
                let timeout = humantime::parse_duration(t)
                    .map_err(|_| bad("the blocking timeout is not a duration (500ms, 2s)"))?;
                if timeout.is_zero() {
                    return Err(bad("a blocking timeout of 0 is ring:N:fail"));
                }
                Backpressure::Block { timeout }
            }
            (Some("fail"), None) => Backpressure::Fail,
            (Some("drop"), None) => Backpressure::DropOldest,
            (Some("fail" | "drop"), Some(_)) => return Err(bad("only block takes a timeout")),
            (None, _) => return Err(bad("a ring needs a rule: block, fail or drop")),
            (Some(_), _) => return Err(bad("the rule must be block, fail or drop")),
        };
        Ok(Self::Ring { slots, when_full })
    }
}

impl serde::Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Policy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_is_written_as_it_is_parsed() {
        let ms = Duration::from_millis;
        for (text, policy) in [
            ("latest", Policy::Latest),
            ("double", Policy::DoubleBuffer),
            ("ring:8:block", Policy::ring(8)),
            (
                "ring:8:block:500ms",
                Policy::Ring {
                    slots: 8,
                    when_full: Backpressure::Block { timeout: ms(500) },
                },
            ),
            (
                "ring:1:block:30s",
                Policy::Ring {
                    slots: 1,
                    when_full: Backpressure::Block {
                        timeout: Duration::from_secs(30),
                    },
                },
            ),
            (
                "ring:65536:fail",
                Policy::Ring {
                    slots: 65536,
                    when_full: Backpressure::Fail,
                },
            ),
            (
                "ring:4:drop",
                Policy::Ring {
                    slots: 4,
                    when_full: Backpressure::DropOldest,
                },
            ),
        ] {
            assert_eq!(text.parse::<Policy>(), Ok(policy), "{text}");
            assert_eq!(policy.to_string(), text);
        }
        // Any humantime duration is read; it is written in its largest whole unit.
        assert_eq!(
            "ring:2:block:1min".parse::<Policy>().unwrap().to_string(),
            "ring:2:block:60s"
        );
        assert_eq!(
            "ring:2:block:1500us".parse::<Policy>().unwrap().to_string(),
            "ring:2:block:1500us"
        );
    }

    #[test]
    fn malformed_policies_are_refused_with_the_problem() {
        for bad in [
            "",
            "Latest",
            "ring",
            "ring:",
            "ring:0:block",
            "ring:65537:fail",
            "ring:-1:fail",
            "ring:8",
            "ring:8:wait",
            "ring:8:block:0s",
            "ring:8:block:soon",
            "ring:8:fail:1s",
            "ring:8:drop-oldest",
            "double:2",
        ] {
            let err = bad.parse::<Policy>().unwrap_err();
            assert!(!err.problem.is_empty(), "{bad}");
        }
    }

    #[test]
    fn every_written_policy_passes_the_brokers_label_rule() {
        for p in [
            Policy::ring(65536),
            Policy::Ring {
                slots: 65536,
                when_full: Backpressure::Block {
                    timeout: Duration::from_nanos(u64::MAX),
                },
            },
        ] {
            let label = p.to_string();
            assert!(label.len() <= MAX_POLICY_LEN, "{label}");
            assert!(
                label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')),
                "{label}"
            );
        }
    }
}
