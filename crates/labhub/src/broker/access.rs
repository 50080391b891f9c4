//! The per-channel access list of broker-granted shared memory: which client keys may produce
//! or consume which channels (names or glob patterns), optionally only from given Unix users.
//!
//! In `broker.toml`, one `[[access]]` table per rule:
//!
//! ```toml
//! [[access]]
//! channels = ["cam*", "lab.detector"]   # names, or patterns with * and ?
//! produce = ["<Z85 public key>"]        # or "*": any admitted key
//! consume = ["<Z85 public key>", "*"]
//! uids = [1000, 1001]                   # optional: only Unix peers of these users
//! ```
//!
//! The owner's own key (the local client key of the broker's home) may always produce and
//! consume every channel; with no rule, it is the only one. A key may act on a channel when any
//! rule whose patterns match the channel lists it (or `*`) for that role, and, if that rule
//! names `uids`, the process presenting the ticket on the grant socket runs as one of them.
#![deny(unsafe_code)]

use serde::Deserialize;

use crate::keys::PublicKey;
use crate::protocol::{ChannelName, Role};

/// One `[[access]]` table as written in `broker.toml`, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRuleText {
    /// Channel names or glob patterns (`*` any run of characters, `?` one character).
    pub channels: Vec<String>,
    /// Keys (Z85) that may produce these channels; `*` for any admitted key.
    #[serde(default)]
    pub produce: Vec<String>,
    /// Keys (Z85) that may consume these channels; `*` for any admitted key.
    #[serde(default)]
    pub consume: Vec<String>,
    /// If given, only Unix peers running as one of these user ids may redeem a ticket under
    /// this rule.
    #[serde(default)]
    pub uids: Option<Vec<u32>>,
}

/// Who a rule lets in for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    Any,
    These(Vec<PublicKey>),
}

impl Keys {
    fn contains(&self, key: &PublicKey) -> bool {
        match self {
            Self::Any => true,
            Self::These(keys) => keys.contains(key),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    patterns: Vec<String>,
    produce: Keys,
    consume: Keys,
    uids: Option<Vec<u32>>,
}

/// The validated access list (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessList {
    owner: Option<PublicKey>,
    rules: Vec<Rule>,
}

/// Why a rule is refused: the path of the bad value (`access[1].consume[0]`), the value and
/// the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Where: `access[<rule>].<field>[<item>]`.
    pub key: String,
    /// The value.
    pub value: String,
    /// What is wrong.
    pub problem: String,
}

/// Longest channel pattern.
const MAX_PATTERN_LEN: usize = crate::name::MAX_CHANNEL_NAME_LEN;

fn pattern_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PATTERN_LEN
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*' | '?'))
}

/// Whether `name` matches the glob `pattern` (`*`: any run, `?`: one character). Channel names
/// and patterns are short ASCII, so the classic two-pointer match with one backtrack point is
/// enough (a regex-based glob crate would be much more code for the same answer).
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl AccessList {
    /// Validates the rules of `broker.toml`.
    ///
    /// # Errors
    /// The first bad pattern or key, with its path (`access[0].channels[2]`).
    pub fn from_rules(rules: &[AccessRuleText]) -> Result<Self, RuleError> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let bad = |field: &str, j: usize, value: &str, problem: &str| RuleError {
                key: format!("access[{i}].{field}[{j}]"),
                value: value.to_owned(),
                problem: problem.to_owned(),
            };
            if r.channels.is_empty() {
                return Err(RuleError {
                    key: format!("access[{i}].channels"),
                    value: "[]".into(),
                    problem: "a rule names at least one channel or pattern".into(),
                });
            }
            for (j, p) in r.channels.iter().enumerate() {
                if !pattern_ok(p) {
                    return Err(bad(
                        "channels",
                        j,
                        p,
                        "a channel name or pattern is 1 to 128 of A-Z a-z 0-9 _ - . * ?",
                    ));
                }
            }
            let keys = |field: &str, list: &[String]| -> Result<Keys, RuleError> {
                if list.iter().any(|k| k == "*") {
                    return Ok(Keys::Any);
                }
                list.iter()
                    .enumerate()
                    .map(|(j, k)| {
                        PublicKey::from_z85(k).map_err(|e| {
                            bad(field, j, k, &format!("not a Z85 public key or \"*\": {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Keys::These)
            };
            out.push(Rule {
                patterns: r.channels.clone(),
                produce: keys("produce", &r.produce)?,
                consume: keys("consume", &r.consume)?,
                uids: r.uids.clone(),
            });
        }
        Ok(Self {
            owner: None,
            rules: out,
        })
    }

    /// The same list with `owner` (the broker's user's own client key) allowed everything.
    pub fn with_owner(mut self, owner: PublicKey) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Whether `key` may take `role` on `channel`, when the Unix peer's user is not known yet
    /// (a `grant` request over CURVE): some rule allows the key, whatever its `uids`.
    pub fn allows_key(&self, key: &PublicKey, channel: &ChannelName, role: Role) -> bool {
        self.decide(key, None, channel, role)
    }

    /// Whether `key` may take `role` on `channel` from a process of user `uid` (a ticket
    /// presented on the grant socket).
    pub fn allows(&self, key: &PublicKey, uid: u32, channel: &ChannelName, role: Role) -> bool {
        self.decide(key, Some(uid), channel, role)
    }

    fn decide(&self, key: &PublicKey, uid: Option<u32>, channel: &ChannelName, role: Role) -> bool {
        if self.owner.as_ref() == Some(key) {
            return true;
        }
        self.rules.iter().any(|r| {
            let keys = match role {
                Role::Produce => &r.produce,
                Role::Consume => &r.consume,
            };
            r.patterns.iter().any(|p| glob_match(p, channel.as_str()))
                && keys.contains(key)
                && match (&r.uids, uid) {
                    (Some(uids), Some(uid)) => uids.contains(&uid),
                    _ => true,
                }
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule (only the owner's key is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn name(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    #[test]
    fn globs_match_names_as_shells_do() {
        for (p, n, m) in [
            ("cam*", "cam0", true),
            ("cam*", "cam", true),
            ("cam*", "xcam", false),
            ("*", "anything.at-all", true),
            ("c?m0", "cam0", true),
            ("c?m0", "cm0", false),
            ("*.raw", "det.raw", true),
            ("*.raw", "det.raw.x", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exacter", false),
        ] {
            assert_eq!(glob_match(p, n), m, "{p} ~ {n}");
        }
    }

    #[test]
    fn the_owner_always_and_others_only_by_a_rule_for_their_role_and_user() {
        let (owner, alice, bob) = (
            KeyPair::generate(),
            KeyPair::generate(),
            KeyPair::generate(),
        );
        let none = AccessList::default().with_owner(owner.public);
        assert!(none.allows_key(&owner.public, &name("x"), Role::Produce));
        assert!(!none.allows_key(&alice.public, &name("x"), Role::Consume));
        let rules = [
            AccessRuleText {
                channels: vec!["cam*".into()],
                produce: vec![alice.public.to_z85()],
                consume: vec!["*".into()],
                uids: None,
            },
            AccessRuleText {
                channels: vec!["secret".into()],
                consume: vec![bob.public.to_z85()],
                uids: Some(vec![65534]),
                ..AccessRuleText::default()
            },
        ];
        let list = AccessList::from_rules(&rules)
            .unwrap()
            .with_owner(owner.public);
        assert!(list.allows_key(&alice.public, &name("cam0"), Role::Produce));
        assert!(!list.allows_key(&bob.public, &name("cam0"), Role::Produce));
        assert!(list.allows_key(&bob.public, &name("cam0"), Role::Consume));
        assert!(!list.allows_key(&alice.public, &name("other"), Role::Consume));
        assert!(list.allows_key(&bob.public, &name("secret"), Role::Consume));
        assert!(list.allows(&bob.public, 65534, &name("secret"), Role::Consume));
        assert!(!list.allows(&bob.public, 1000, &name("secret"), Role::Consume));
        assert!(!list.allows_key(&alice.public, &name("secret"), Role::Consume));
    }

    #[test]
    fn a_bad_pattern_or_key_names_its_place() {
        let bad_key = [AccessRuleText {
            channels: vec!["ok".into()],
            consume: vec!["short".into()],
            ..AccessRuleText::default()
        }];
        let e = AccessList::from_rules(&bad_key).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("access[0].consume[0]", "short")
        );
        let bad_pattern = [AccessRuleText {
            channels: vec!["ok".into(), "a/b".into()],
            ..AccessRuleText::default()
        }];
        let e = AccessList::from_rules(&bad_pattern).unwrap_err();
        assert_eq!(e.key, "access[0].channels[1]");
        let empty = [AccessRuleText::default()];
        assert_eq!(
            AccessList::from_rules(&empty).unwrap_err().key,
            "access[0].channels"
        );
    }
}
