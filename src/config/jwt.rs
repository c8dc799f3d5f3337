//! `jwt:`: where the keys are, what the tokens must say (issuer, audience, leeway), and how
//! the keys are kept (interval, unknown-`kid` cooldown, the token size read at most).

use std::path::Path;

use super::file::{AudienceFile, JwtFile};
use super::paths::https_ca_file;
use super::resolver::http_url;
use super::{under, Bad};
use crate::jwt::{JwksSource, JwtSettings};

/// `jwt:`, `None` when it is absent.
pub(super) fn jwt(j: Option<&JwtFile>, base: Option<&Path>) -> Result<Option<JwtSettings>, Bad> {
    let Some(j) = j else { return Ok(None) };
    jwt_settings(j, base).map(Some).map_err(under("jwt."))
}

fn jwt_settings(j: &JwtFile, base: Option<&Path>) -> Result<JwtSettings, Bad> {
    let bad = |k: &str, why: String| (k.to_string(), why);
    let url = http_url(&j.jwks_url).map_err(|why| bad("jwks_url", why))?;
    let addr = url.addr().map_err(|why| bad("jwks_url", why))?;
    let host_header = http::HeaderValue::from_str(&url.authority)
        .map_err(|_| bad("jwks_url", "host is not a valid Host value".into()))?;
    let path = url.uri.path_and_query().map_or("/", |p| p.as_str());
    if j.issuer.trim().is_empty() {
        return Err(bad("issuer", "must not be empty".into()));
    }
    let audience = match &j.audience {
        AudienceFile::One(a) => vec![a.clone()],
        AudienceFile::Many(list) => list.clone(),
    };
    if audience.is_empty() {
        return Err(bad("audience", "name at least one audience".into()));
    }
    if let Some(i) = audience.iter().position(|a| a.trim().is_empty()) {
        return Err(bad(&format!("audience[{i}]"), "must not be empty".into()));
    }
    let ca_file = https_ca_file(j.ca_file.as_deref(), url.tls, base, "jwks_url")?;
    Ok(JwtSettings {
        jwks: JwksSource {
            addr,
            tls: url.tls,
            sni: url.host,
            host_header,
            path: path.to_string(),
        },
        issuer: j.issuer.clone(),
        audience,
        leeway: j.leeway,
        refresh: j.refresh_interval,
        unknown_kid_cooldown: j.unknown_kid_cooldown,
        max_token_bytes: j.max_token_bytes,
        fetch_timeout: j.fetch_timeout,
        ca_file,
    })
}
