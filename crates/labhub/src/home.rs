//! The labhub home and the broker's default endpoints, shared by the broker and its clients.
//!
//! The home (`LABHUB_HOME`, else `<data dir>/labhub`) holds `keys/` (the broker's key pair and
//! the local user's client key), `broker.toml`, `allowed_clients` and the audit log. A client
//! finds the broker through it: the public key in `keys/broker.pub`, the endpoints in the
//! environment, `broker.toml` or these defaults.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};

/// The broker's default request (ROUTER) endpoint.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5570";
/// The broker's default notification (PUB) endpoint.
pub const DEFAULT_NOTIFY_ENDPOINT: &str = "tcp://127.0.0.1:5571";

/// Why the home or the endpoints could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// No home directory was given and the platform has no data directory.
    #[error("no labhub home: set LABHUB_HOME (the platform reports no data directory)")]
    NoHome,
    /// `broker.toml` could not be trusted, read or parsed.
    #[error("{path}: {problem}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The labhub home: `LABHUB_HOME` (read through `var`) or `<data dir>/labhub`.
///
/// # Errors
///
/// [`HomeError::NoHome`] when neither is available.
pub fn default_home(var: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, HomeError> {
    if let Some(h) = var("LABHUB_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    dirs::data_dir()
        .map(|d| d.join("labhub"))
        .ok_or(HomeError::NoHome)
}

/// Where the broker of a home listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoints {
    /// The request endpoint, as the broker binds it (may hold a wildcard).
    pub endpoint: String,
    /// The notification endpoint, as the broker binds it.
    pub notify_endpoint: String,
}

/// The endpoints of `home`'s broker: `LABHUB_BROKER_ENDPOINT` / `LABHUB_BROKER_NOTIFY_ENDPOINT`
/// (read through `var`), else `endpoint` / `notify_endpoint` of `<home>/broker.toml` (a trusted
/// file, see [`crate::keys::trust`]; its other keys are the broker's business), else the
/// defaults.
///
/// # Errors
///
/// [`HomeError::Config`] when `broker.toml` exists but is untrusted or not valid TOML.
pub fn broker_endpoints(
    home: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<BrokerEndpoints, HomeError> {
    #[derive(serde::Deserialize, Default)]
    struct Endpoints {
        endpoint: Option<String>,
        notify_endpoint: Option<String>,
    }
    let path = home.join("broker.toml");
    let file: Endpoints = if path.exists() {
        let problem = |problem: String| HomeError::Config {
            path: path.clone(),
            problem,
        };
        crate::keys::check_trusted_permissions(&path).map_err(|e| problem(e.to_string()))?;
        let text = std::fs::read_to_string(&path).map_err(|e| problem(e.to_string()))?;
        toml::from_str(&text).map_err(|e| problem(e.to_string().trim_end().to_owned()))?
    } else {
        Endpoints::default()
    };
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    Ok(BrokerEndpoints {
        endpoint: var("LABHUB_BROKER_ENDPOINT")
            .or(file.endpoint)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
        notify_endpoint: var("LABHUB_BROKER_NOTIFY_ENDPOINT")
            .or(file.notify_endpoint)
            .unwrap_or_else(|| DEFAULT_NOTIFY_ENDPOINT.into()),
    })
}

/// A hub this one knows of (a `[[peer]]` table of `broker.toml`): bridges go to it,
/// `labhub ls --all` lists its channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHub {
    /// Its name (what `CHANNEL@NAME` means): 1 to 64 bytes of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Its broker's request endpoint (`tcp://HOST:PORT`).
    pub endpoint: String,
    /// Its broker's CURVE public key (the contents of its `keys/broker.pub`).
    pub public_key: crate::keys::PublicKey,
}

/// A hub's name and the peers it knows of, from `broker.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// This hub's name: `name` of `broker.toml`, else the host name.
    pub own_name: String,
    /// The `[[peer]]` tables, in order.
    pub peers: Vec<PeerHub>,
}

impl Peers {
    /// The peer called `name`.
    pub fn get(&self, name: &str) -> Option<&PeerHub> {
        self.peers.iter().find(|p| p.name == name)
    }
}

/// Checks a hub name: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
pub fn check_hub_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("hub name {name:?} must be 1 to 64 bytes long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "hub name {name:?} contains {c:?}; only letters, digits, '_', '.' and '-' may appear"
        ));
    }
    Ok(())
}

/// The host name, as a hub name (`localhost` when it has none or one that is no hub name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| check_hub_name(h).is_ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The `name` and `[[peer]]` keys of `broker.toml`, as the file spells them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerText {
    /// The peer's name.
    pub name: String,
    /// Its broker's request endpoint.
    pub endpoint: String,
    /// Its broker's public key, Z85 (40 characters).
    pub public_key: String,
}

/// Checks the `name` and `[[peer]]` entries of a config file: names valid and distinct, none
/// the hub's own, endpoints `tcp://`, keys valid Z85 keys.
///
/// # Errors
/// A text naming the entry and what is wrong with it.
pub fn check_peers(own: Option<&str>, peers: &[PeerText]) -> Result<Peers, String> {
    let own_name = match own {
        Some(n) => {
            check_hub_name(n).map_err(|e| format!("name: {e}"))?;
            n.to_owned()
        }
        None => host_name(),
    };
    let mut out: Vec<PeerHub> = Vec::with_capacity(peers.len());
    for (i, p) in peers.iter().enumerate() {
        let at = |problem: String| format!("peer #{} ({:?}): {problem}", i + 1, p.name);
        check_hub_name(&p.name).map_err(at)?;
        if p.name == own_name {
            return Err(at("is this hub's own name".into()));
        }
        if out.iter().any(|o| o.name == p.name) {
            return Err(at("named twice".into()));
        }
        let rest = p
            .endpoint
            .strip_prefix("tcp://")
            .ok_or_else(|| at(format!("endpoint {:?} is not tcp://HOST:PORT", p.endpoint)))?;
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(at(format!(
                    "endpoint {:?} is not tcp://HOST:PORT",
                    p.endpoint
                )));
            }
        }
        let public_key = crate::keys::PublicKey::from_z85(p.public_key.trim())
            .map_err(|e| at(format!("public_key: {e}")))?;
        out.push(PeerHub {
            name: p.name.clone(),
            endpoint: p.endpoint.clone(),
            public_key,
        });
    }
    Ok(Peers {
        own_name,
        peers: out,
    })
}

/// This hub's name and peers from `<home>/broker.toml` (a trusted file), or the host name
/// and none when there is no file.
///
/// # Errors
///
/// [`HomeError::Config`] when the file is untrusted, not TOML, or a peer entry is invalid.
pub fn peers(home: &Path) -> Result<Peers, HomeError> {
    #[derive(serde::Deserialize, Default)]
    struct File {
        name: Option<String>,
        #[serde(default)]
        peer: Vec<PeerText>,
    }
    let path = home.join("broker.toml");
    let problem = |problem: String| HomeError::Config {
        path: path.clone(),
        problem,
    };
    let file: File = if path.exists() {
        crate::keys::check_trusted_permissions(&path).map_err(|e| problem(e.to_string()))?;
        let text = std::fs::read_to_string(&path).map_err(|e| problem(e.to_string()))?;
        toml::from_str(&text).map_err(|e| problem(e.to_string().trim_end().to_owned()))?
    } else {
        File::default()
    };
    check_peers(file.name.as_deref(), &file.peer).map_err(problem)
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    fn key() -> String {
        crate::keys::KeyPair::generate().public.to_z85()
    }

    fn peer(name: &str, endpoint: &str, public_key: &str) -> PeerText {
        PeerText {
            name: name.into(),
            endpoint: endpoint.into(),
            public_key: public_key.into(),
        }
    }

    #[test]
    fn peers_are_checked_and_named_in_errors() {
        let k = key();
        let ok = check_peers(Some("ws"), &[peer("acq", "tcp://10.0.0.2:5570", &k)]).unwrap();
        assert_eq!(ok.own_name, "ws");
        assert_eq!(ok.get("acq").unwrap().endpoint, "tcp://10.0.0.2:5570");
        for (bad, needle) in [
            (vec![peer("a b", "tcp://h:1", &k)], "contains ' '"),
            (vec![peer("ws", "tcp://h:1", &k)], "own name"),
            (
                vec![peer("a", "tcp://h:1", &k), peer("a", "tcp://h:2", &k)],
                "twice",
            ),
            (vec![peer("a", "ipc:///x", &k)], "tcp://HOST:PORT"),
            (vec![peer("a", "tcp://h:0", &k)], "tcp://HOST:PORT"),
            (vec![peer("a", "tcp://h:1", "short")], "public_key"),
        ] {
            let e = check_peers(Some("ws"), &bad).unwrap_err();
            assert!(e.contains(needle) && e.contains("peer #"), "{e}");
        }
        assert!(check_peers(Some(""), &[]).unwrap_err().starts_with("name:"));
    }
}
