//! `fleet:`, several instances as one through Redis.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    pub redis: RedisFile,
    /// A file holding the fleet secret (surrounding white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Prefix of every key and of the channel, so several fleets can share one Redis.
    #[serde(default = "defaults::fleet_prefix")]
    pub prefix: String,
    /// The most a request waits on Redis, in all.
    #[serde(default = "defaults::fleet_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Resolver answers shared through Redis (the bus runs either way).
    #[serde(default = "defaults::yes")]
    pub shared_cache: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://host:port/db` or `rediss://` (TLS); no password in it.
    pub url: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) for `rediss://`, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}
