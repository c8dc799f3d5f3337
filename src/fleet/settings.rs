//! The `fleet:` section once checked, and what a Redis URL may be: plain settings, nothing
//! connected.

use std::time::Duration;

use redis::IntoConnectionInfo;

/// The `fleet:` section, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// As written (it holds no password), for logs.
    pub url: String,
    pub password: Option<String>,
    /// CA certificates (PEM) for `rediss://`, instead of the system's.
    pub ca: Option<Vec<u8>>,
    pub secret: Vec<u8>,
    /// Prefix of every key and of the bus channel.
    pub prefix: String,
    /// The most a request waits on Redis, in all.
    pub timeout: Duration,
    pub shared_cache: bool,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("shared_cache", &self.shared_cache)
            .finish_non_exhaustive()
    }
}

/// A Redis URL authgate accepts: `redis://` or `rediss://`, no password in it (it would end
/// up in logs and in the YAML).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!("`{url}` is not a redis:// or rediss:// URL"));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| format!("`{url}` is not a Redis URL: {e}"))?;
    if info.redis_settings().password().is_some() {
        return Err(
            "the URL holds a password: give it in fleet.redis.password_file or password_env".into(),
        );
    }
    Ok(())
}
