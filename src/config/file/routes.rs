//! `routes:` (with each route's `cache:`), `login:` and `response_cache:`, the store routes share.

use std::time::Duration;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Exact host or `*.domain`; any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "defaults::route_path")]
    pub path: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub auth: PolicyFile,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The app's logout: a 2xx answer from the backend drops the cached answer for the
    /// request's credentials, so the next request is resolved afresh.
    #[serde(default)]
    pub logout: bool,
    /// Store and serve the backend's cacheable responses (off when absent).
    #[serde(default)]
    pub cache: Option<RouteCacheFile>,
    /// Cross-origin requests from these origins (none when absent).
    #[serde(default)]
    pub cors: Option<CorsFile>,
}

/// A route's `cors:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    /// Exact origins, `scheme://host[:port]`.
    pub allow_origins: Vec<String>,
    #[serde(default = "defaults::cors_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "defaults::cors_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

/// A route's `auth:` (`routes::Policy`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyFile {
    Public,
    #[default]
    Identify,
    Require,
}

/// A route's `cache:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheFile {
    /// Freshness of a response that states none; 0s: only responses that state theirs.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default = "defaults::response_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
}

/// `response_cache:`: the store every route with `cache:` shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheFile {
    #[serde(default = "defaults::response_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "defaults::response_max_object_bytes")]
    pub max_object_bytes: usize,
    #[serde(default = "defaults::response_lock_timeout", with = "humantime_serde")]
    pub lock_timeout: Duration,
}

impl Default for ResponseCacheFile {
    fn default() -> Self {
        ResponseCacheFile {
            max_bytes: defaults::response_max_bytes(),
            max_object_bytes: defaults::response_max_object_bytes(),
            lock_timeout: defaults::response_lock_timeout(),
        }
    }
}

/// Where `auth: require` sends a browser without a session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    pub url: String,
    #[serde(default = "defaults::return_to_param")]
    pub return_to_param: String,
}
