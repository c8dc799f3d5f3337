//! `resolver:` (with the credentials and the identity namespace) and `cache:`, its answers.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::HealthFile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverFile {
    pub url: String,
    /// `Host` sent to the resolver; the URL's host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "defaults::header_prefix")]
    pub header_prefix: String,
    #[serde(default)]
    pub forward_set_cookie: bool,
    /// Cookies the resolver reads a session from, without the prefix.
    #[serde(default = "defaults::credential_cookies")]
    pub credential_cookies: Vec<String>,
    /// Authgear's cookie name prefix (empty by default).
    #[serde(default)]
    pub cookie_prefix: String,
    /// Resolver instances (`host:port`) to use instead of the URL's address; the URL still
    /// gives the scheme, path, `Host` and SNI.
    #[serde(default)]
    pub backends: Vec<String>,
    #[serde(default)]
    pub health_check: Option<HealthFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    #[serde(default = "defaults::capacity")]
    pub capacity: usize,
    #[serde(default = "defaults::ttl", with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default = "defaults::negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Default: the resolver's `timeout` plus one second.
    #[serde(default, with = "humantime_serde")]
    pub lock_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Default: 60 s, or half the TTL when that is shorter; `0s`: off.
    #[serde(default, with = "humantime_serde")]
    pub refresh_after: Option<Duration>,
}

impl Default for CacheFile {
    fn default() -> Self {
        CacheFile {
            capacity: defaults::capacity(),
            ttl: defaults::ttl(),
            negative_ttl: defaults::negative_ttl(),
            lock_timeout: None,
            stale_if_error: Duration::ZERO,
            refresh_after: None,
        }
    }
}
