//! `jwt:`, local validation of Authgear's JWT access tokens; off when absent.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    /// Authgear's `https://<project>/oauth2/jwks`.
    pub jwks_url: String,
    /// The project's public origin, as in the tokens' `iss`.
    pub issuer: String,
    /// What `aud` must hold (one of them).
    pub audience: AudienceFile,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "defaults::jwt_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// How often the keys are fetched again.
    #[serde(default = "defaults::jwt_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// After a token names an unknown key: at most one fetch in this long.
    #[serde(
        default = "defaults::jwt_unknown_kid_cooldown",
        with = "humantime_serde"
    )]
    pub unknown_kid_cooldown: Duration,
    /// Larger bearer tokens go to the resolver unread.
    #[serde(default = "defaults::jwt_max_token_bytes")]
    pub max_token_bytes: usize,
    /// The whole JWKS request.
    #[serde(default = "defaults::jwt_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// CA certificates (PEM) for an https JWKS URL, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `aud`: one value or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AudienceFile {
    One(String),
    Many(Vec<String>),
}
