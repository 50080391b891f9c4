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
