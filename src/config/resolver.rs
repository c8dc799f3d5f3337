//! `resolver:` and `cache:`: the resolve subrequest (address, TLS, timeouts, health checks),
//! the identity namespace, the credentials that make the cache key, and the answer cache.

use std::path::Path;
use std::time::Duration;

use http::Uri;

use super::file::{defaults, CacheFile, ResolverFile};
use super::paths::https_ca_file;
use super::upstreams::{health_settings, resolve_addr};
use super::{under, Bad};
use crate::cache::CacheSettings;
use crate::credentials::KeyRules;
use crate::identity::Namespace;
use crate::resolver::ResolverSettings;

/// `resolver.header_prefix`: the identity namespace.
pub(super) fn namespace(r: &ResolverFile) -> Result<Namespace, Bad> {
    header_prefix(&r.header_prefix).map_err(|why| ("resolver.header_prefix".into(), why))
}

/// `resolver:`: the resolve subrequest.
pub(super) fn settings(r: &ResolverFile, base: Option<&Path>) -> Result<ResolverSettings, Bad> {
    resolver_settings(r, base).map_err(under("resolver."))
}

/// `resolver.credential_cookies` and `cookie_prefix`: what makes the cache key, which also
/// covers the resolver's `Host`.
pub(super) fn keys(r: &ResolverFile, resolver: &ResolverSettings) -> Result<KeyRules, Bad> {
    key_rules(r, resolver.host_header.as_bytes()).map_err(under("resolver."))
}

/// `cache:`; `resolve_timeout` is the resolver's whole timeout, which the lock outlasts.
pub(super) fn cache(c: &CacheFile, resolve_timeout: Duration) -> Result<CacheSettings, Bad> {
    Ok(CacheSettings {
        capacity: c.capacity,
        ttl: c.ttl,
        negative_ttl: c.negative_ttl,
        lock_timeout: match c.lock_timeout {
            Some(d) => d,
            // Longer than the resolve it waits for, or waiters would give up just before the
            // answer and each call the resolver themselves.
            None => resolve_timeout + Duration::from_secs(1),
        },
        stale_if_error: c.stale_if_error,
        refresh_after: match c.refresh_after {
            Some(r) if !r.is_zero() && !c.ttl.is_zero() && r >= c.ttl => {
                return Err((
                    "cache.refresh_after".into(),
                    format!(
                        "{} is not below cache.ttl ({}): answers would expire before a refresh",
                        humantime::format_duration(r),
                        humantime::format_duration(c.ttl)
                    ),
                ))
            }
            Some(r) => r,
            None => defaults::refresh_after().min(c.ttl / 2),
        },
    })
}

/// An `http://` or `https://` URL with a host and no user info.
pub(super) struct HttpUrl {
    pub uri: Uri,
    /// `host[:port]`, as written: the `Host` header.
    pub authority: String,
    pub tls: bool,
    /// Without IPv6 brackets (the TLS server name).
    pub host: String,
    pub port: u16,
}

pub(super) fn http_url(url: &str) -> Result<HttpUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry user info".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(HttpUrl {
        authority: authority.as_str().to_string(),
        uri,
        tls,
        host,
        port,
    })
}

impl HttpUrl {
    /// The host's address (a name is resolved now, once).
    pub fn addr(&self) -> Result<std::net::SocketAddr, String> {
        let host = self.uri.authority().map_or("", |a| a.host());
        resolve_addr(&format!("{host}:{}", self.port))
    }
}

fn header_prefix(p: &str) -> Result<Namespace, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if http::HeaderName::from_bytes(p.as_bytes()).is_err() {
        return Err(format!("`{p}` is not a valid header name prefix"));
    }
    Ok(Namespace::new(p))
}

fn resolver_settings(r: &ResolverFile, base: Option<&Path>) -> Result<ResolverSettings, Bad> {
    let bad = |k: &str, why: String| (k.to_string(), why);
    let url = http_url(&r.url).map_err(|why| bad("url", why))?;
    let addrs = if r.backends.is_empty() {
        vec![url.addr().map_err(|why| bad("url", why))?]
    } else {
        let mut addrs = Vec::with_capacity(r.backends.len());
        for (i, b) in r.backends.iter().enumerate() {
            let a = resolve_addr(b).map_err(|why| bad(&format!("backends[{i}]"), why))?;
            if addrs.contains(&a) {
                return Err(bad(
                    &format!("backends[{i}]"),
                    format!("{a} is listed twice"),
                ));
            }
            addrs.push(a);
        }
        addrs
    };
    let HttpUrl {
        uri,
        authority,
        tls,
        host,
        ..
    } = url;
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/_resolver/resolve".to_string(),
        Some(p) => p.to_string(),
    };
    let host_header_text = r.host.clone().unwrap_or_else(|| authority.clone());
    let host_header = match &r.host {
        Some(h) => http::HeaderValue::from_str(h)
            .map_err(|_| bad("host", format!("`{h}` is not a valid Host value")))?,
        None => http::HeaderValue::from_str(&authority)
            .map_err(|_| bad("url", "host is not a valid Host value".into()))?,
    };
    let ca_file = https_ca_file(r.ca_file.as_deref(), tls, base, "resolver url")?;
    let health = match &r.health_check {
        None => None,
        Some(h) => Some(
            health_settings(h, &host_header_text, path.split('?').next().unwrap_or("/"))
                .map_err(|(k, why)| (format!("health_check{k}"), why))?,
        ),
    };
    Ok(ResolverSettings {
        addrs,
        health,
        tls,
        sni: host,
        host_header,
        path,
        connect_timeout: r.connect_timeout,
        read_timeout: r.read_timeout,
        total_timeout: r.timeout,
        idle_timeout: r.idle_timeout,
        ca_file,
    })
}

fn key_rules(r: &ResolverFile, resolver_host: &[u8]) -> Result<KeyRules, Bad> {
    if r.credential_cookies.is_empty() {
        return Err((
            "credential_cookies".into(),
            "at least one cookie name is required".into(),
        ));
    }
    let token = |s: &str| !s.is_empty() && http::HeaderName::from_bytes(s.as_bytes()).is_ok();
    for (i, c) in r.credential_cookies.iter().enumerate() {
        if !token(&format!("{}{c}", r.cookie_prefix)) {
            return Err((
                format!("credential_cookies[{i}]"),
                format!("`{c}` is not a valid cookie name"),
            ));
        }
    }
    if !r.cookie_prefix.is_empty() && !token(&r.cookie_prefix) {
        return Err((
            "cookie_prefix".into(),
            format!("`{}` is not a valid cookie name prefix", r.cookie_prefix),
        ));
    }
    Ok(KeyRules::new(
        resolver_host,
        &r.cookie_prefix,
        &r.credential_cookies,
    ))
}
