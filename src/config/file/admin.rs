//! `admin:`, the operator's endpoint, and its `webhook:`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    /// A file holding the bearer token (surrounding white space ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Authgear's webhook events at `POST /hooks/authgear`; off when absent.
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// A file holding Authgear's webhook secret (surrounding white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Events stamped further than this from now are refused.
    #[serde(default = "defaults::webhook_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}
