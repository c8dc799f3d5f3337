//! `upstreams:`, the backend pools, and the `health_check:` they share with the resolver.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub backends: Vec<BackendFile>,
    #[serde(default)]
    pub lb: LbFile,
    /// For `lb: consistent`: client_ip, user_id, header:NAME or cookie:NAME.
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::upstream_io_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(default = "defaults::upstream_io_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    #[serde(default)]
    pub tls: Option<UpstreamTlsFile>,
    /// Other backends tried after a failed connect.
    #[serde(default = "defaults::retries")]
    pub retries: usize,
    #[serde(default)]
    pub health_check: Option<HealthFile>,
}

/// `lb:`, how a pool spreads requests (`upstreams::LbKind`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbFile {
    #[default]
    RoundRobin,
    Random,
    Consistent,
}

/// `127.0.0.1:3000`, or `{ addr: 127.0.0.1:3000, weight: 3 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BackendFile {
    Addr(String),
    Weighted(WeightedBackendFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackendFile {
    pub addr: String,
    #[serde(default = "defaults::weight")]
    pub weight: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// Server name sent and verified; default: the host of the first backend.
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `false` turns certificate verification off (a lab only; logged at every start).
    #[serde(default = "defaults::yes")]
    pub verify: bool,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthKindFile {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    #[serde(default)]
    pub kind: HealthKindFile,
    /// Default: `/` for upstreams, the resolve path for the resolver.
    #[serde(default)]
    pub path: Option<String>,
    /// `Host` of the check request; default: the backend's SNI or `localhost`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "defaults::expected_status")]
    pub expected_status: u16,
    #[serde(default = "defaults::health_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes to mark a backend up.
    #[serde(default = "defaults::one")]
    pub rise: usize,
    /// Consecutive failures to mark a backend down.
    #[serde(default = "defaults::one")]
    pub fall: usize,
}
