//! The process's sections: `listen:`, `client:`, `reload:`, `shutdown:` and `access_log:`
//! (`pingora:` is Pingora's own `ServerConf`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub addr: String,
    /// TLS termination (HTTP/2 offered by ALPN unless `h2: false`).
    #[serde(default)]
    pub tls: Option<ListenTlsFile>,
    #[serde(default = "defaults::yes")]
    pub h2: bool,
    /// HTTP/2 without TLS (prior knowledge), on a plain listener.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTlsFile {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Limits on client connections; each one absent is `connections::ClientLimits`' default
/// (filled in by `config`, so the numbers live in one place).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    /// `0s`: no keep-alive.
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
    /// `0`: no limit.
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    #[serde(default)]
    pub max_headers: Option<usize>,
}

/// Reloading on `SIGHUP` is always on; watching the file is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadFile {
    #[serde(default)]
    pub watch: bool,
    #[serde(default = "defaults::watch_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadFile {
    fn default() -> Self {
        ReloadFile {
            watch: false,
            interval: defaults::watch_interval(),
        }
    }
}

/// A graceful stop (`SIGTERM`): readiness fails at once, the listeners keep serving for
/// `drain_delay` (a load balancer is still sending traffic), then Pingora's shutdown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default)]
    pub format: FormatFile,
    /// A file to append to; standard error when absent.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Log the query string too (it may carry tokens: off by default).
    #[serde(default)]
    pub include_query: bool,
}

impl Default for AccessLogFile {
    fn default() -> Self {
        AccessLogFile {
            enabled: true,
            format: FormatFile::Json,
            path: None,
            include_query: false,
        }
    }
}

/// The access log's `format:` (`access_log::Format`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FormatFile {
    #[default]
    Json,
    Text,
}
