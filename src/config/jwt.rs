//! `jwt:`: where the keys are, what the tokens must say (issuer, audience, leeway), and how
//! the keys are kept (interval, unknown-`kid` cooldown, the token size read at most).

use std::path::Path;

use super::file::{AudienceFile, JwtFile};
use super::paths::{check_ca_file, relative_to};
use super::resolver::{http_url, HttpUrl};
use super::upstreams::resolve_addr;
use super::{under, Bad};
use crate::jwt::{JwksSource, JwtSettings};

/// `jwt:`, `None` when it is absent.
pub(super) fn jwt(j: Option<&JwtFile>, base: Option<&Path>) -> Result<Option<JwtSettings>, Bad> {
    let Some(j) = j else { return Ok(None) };
    jwt_settings(j, base).map(Some).map_err(under("jwt."))
}

fn jwt_settings(j: &JwtFile, base: Option<&Path>) -> Result<JwtSettings, Bad> {
    let bad = |k: &str, why: String| (k.to_string(), why);
    let HttpUrl {
        uri,
        tls,
        host,
        port,
    } = http_url(&j.jwks_url).map_err(|why| bad("jwks_url", why))?;
    let authority = uri
        .authority()
        .ok_or_else(|| bad("jwks_url", "has no host".into()))?;
    let addr = resolve_addr(&format!("{}:{port}", authority.host()))
        .map_err(|why| bad("jwks_url", why))?;
    let host_header = http::HeaderValue::from_str(authority.as_str())
        .map_err(|_| bad("jwks_url", "host is not a valid Host value".into()))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
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
    let ca_file = match &j.ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(bad(
                "ca_file",
                "only applies to an https:// jwks_url".into(),
            ))
        }
        Some(p) => {
            let p = relative_to(base, p);
            check_ca_file(&p).map_err(|why| bad("ca_file", why))?;
            Some(p)
        }
    };
    Ok(JwtSettings {
        jwks: JwksSource {
            addr,
            tls,
            sni: host,
            host_header,
            path,
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
