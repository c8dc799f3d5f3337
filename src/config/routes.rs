//! `routes:` (each with its policy and its response-cache settings), `login:`, and
//! `response_cache:`, the store the routes with `cache:` share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::file::{CorsFile, LoginFile, PolicyFile, ResponseCacheFile, RouteFile};
use super::Bad;
use crate::cors::{CorsPolicy, CorsSpec};
use crate::policy::Login;
use crate::response_cache::{ResponseCacheSettings, RouteCache};
use crate::routes::{Policy, RouteRule, RuleSpec};
use crate::upstreams::{HashKey, PoolSettings};

/// `routes:`, each naming one of `pools`.
pub(super) fn routes(
    routes: &[RouteFile],
    pools: &BTreeMap<String, PoolSettings>,
) -> Result<Vec<RouteRule>, Bad> {
    if routes.is_empty() {
        return Err(("routes".into(), "at least one route is required".into()));
    }
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let pool = pools.get(&r.upstream).ok_or_else(|| {
            let known: Vec<&str> = pools.keys().map(String::as_str).collect();
            (
                format!("routes[{i}].upstream"),
                format!(
                    "no upstream named `{}` is defined (defined: {})",
                    r.upstream,
                    known.join(", ")
                ),
            )
        })?;
        let cors = match &r.cors {
            Some(c) => Some(cors(c).map_err(|(k, why)| (format!("routes[{i}].cors.{k}"), why))?),
            None => None,
        };
        let route = RouteRule::new(RuleSpec {
            host: r.host.as_deref(),
            path: &r.path,
            methods: &r.methods,
            upstream: &r.upstream,
            policy: policy(r.auth),
            roles: &r.roles,
            index: i,
            logout: r.logout,
            cache: r.cache.as_ref().map(|c| RouteCache {
                ttl: c.ttl,
                max_ttl: c.max_ttl,
                stale_while_revalidate: c.stale_while_revalidate,
                stale_if_error: c.stale_if_error,
            }),
            cors,
        })
        .map_err(|(k, why)| (format!("routes[{i}].{k}"), why))?;
        if let Some(c) = &r.cache {
            if c.ttl > c.max_ttl {
                return Err((
                    format!("routes[{i}].cache.ttl"),
                    "is longer than cache.max_ttl".into(),
                ));
            }
        }
        if pool.hash_key == Some(HashKey::UserId) && route.policy == Policy::Public {
            return Err((
                format!("routes[{i}].auth"),
                format!(
                    "upstream `{}` hashes on user_id, which a public route never resolves",
                    r.upstream
                ),
            ));
        }
        out.push(route);
    }
    Ok(out)
}

/// A route's `cors:`; errors name the field under it (`allow_origins[0]`).
fn cors(c: &CorsFile) -> Result<Arc<CorsPolicy>, Bad> {
    // Browsers cap it lower (Chromium: 2 h); a longer one only hides a typo.
    if c.max_age > Duration::from_secs(86_400) {
        return Err(("max_age".into(), "is longer than 1d".into()));
    }
    let policy = CorsPolicy::new(CorsSpec {
        origins: &c.allow_origins,
        methods: &c.allow_methods,
        headers: &c.allow_headers,
        expose: &c.expose_headers,
        credentials: c.allow_credentials,
        max_age: c.max_age,
    })?;
    Ok(Arc::new(policy))
}

fn policy(p: PolicyFile) -> Policy {
    match p {
        PolicyFile::Public => Policy::Public,
        PolicyFile::Identify => Policy::Identify,
        PolicyFile::Require => Policy::Require,
    }
}

/// `login:`: where `auth: require` sends a browser without a session.
pub(super) fn login(l: Option<&LoginFile>) -> Result<Option<Login>, Bad> {
    let Some(l) = l else { return Ok(None) };
    let uri: Uri = l
        .url
        .parse()
        .map_err(|_| ("login.url".to_string(), format!("`{}` is not a URL", l.url)))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) && !l.url.starts_with('/') {
        return Err((
            "login.url".into(),
            "must be an http(s) URL or a path starting with /".into(),
        ));
    }
    if l.return_to_param.is_empty()
        || !l
            .return_to_param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err((
            "login.return_to_param".into(),
            format!(
                "`{}` is not a plain query parameter name",
                l.return_to_param
            ),
        ));
    }
    Ok(Some(Login {
        url: l.url.clone(),
        return_to_param: l.return_to_param.clone(),
    }))
}

/// `response_cache:`, the store.
pub(super) fn response_cache(rc: &ResponseCacheFile) -> Result<ResponseCacheSettings, Bad> {
    if rc.max_object_bytes > rc.max_bytes {
        return Err((
            "response_cache.max_object_bytes".into(),
            "is larger than response_cache.max_bytes".into(),
        ));
    }
    Ok(ResponseCacheSettings {
        max_bytes: rc.max_bytes,
        max_object_bytes: rc.max_object_bytes,
        lock_timeout: rc.lock_timeout,
    })
}
