//! The response cache: which backend responses a route may store and serve (RFC 9111, for a
//! shared cache, with identity safety first), the key they are stored under, and the one
//! bounded in-memory store (`storage`) with Pingora's LRU eviction manager and cache lock.

mod freshness;
mod invalidation;
mod revalidation;
mod storage;
mod targeted;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, AGE, SET_COOKIE, VARY};
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::eviction::simple_lru;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{
    key::HashBinary, CacheKey, CacheMeta, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::identity::Namespace;
use crate::policy::Policy;
pub use freshness::Exchange;
pub use invalidation::invalidated;
pub use revalidation::updated_by_304;
pub use storage::Store;

/// A route's `cache:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness of a storable response that states none (no `max-age`, `s-maxage`,
    /// `Expires`); zero: only responses that state their freshness are stored.
    pub ttl: Duration,
    /// No response is fresh longer than this, whatever it states.
    pub max_ttl: Duration,
    /// Defaults for responses that do not state them (`stale-while-revalidate`,
    /// `stale-if-error`).
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// The store shared by every route (`response_cache:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCacheSettings {
    pub max_bytes: usize,
    pub max_object_bytes: usize,
    /// How long a request waits for another request's fetch of the same object.
    pub lock_timeout: Duration,
}

/// The store, its eviction manager and its lock: made once, at start, and kept for the life
/// of the process (Pingora's cache phases take `'static` references).
pub struct Engine {
    pub store: &'static Store,
    pub eviction: &'static simple_lru::Manager,
    pub lock: &'static CacheKeyLockImpl,
    pub settings: ResponseCacheSettings,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The engine, made from `settings` the first time; later calls return the first one (its
/// sizes take effect at start, and a reload that changes them says so in the log).
pub fn engine(settings: ResponseCacheSettings) -> &'static Engine {
    let engine = ENGINE.get_or_init(|| {
        let store: &'static Store = Box::leak(Box::new(Store::new(
            settings.max_object_bytes,
            settings.lock_timeout,
        )));
        Engine {
            store,
            eviction: Box::leak(Box::new(simple_lru::Manager::new(settings.max_bytes))),
            lock: Box::leak(Box::new(CacheLock::new(settings.lock_timeout))),
            settings,
        }
    });
    if engine.settings != settings {
        log::warn!(
            "response_cache: sizes and lock_timeout take effect at start; still using {:?}",
            engine.settings
        );
    }
    engine
}

/// Counters for the metrics endpoint.
pub struct Stats {
    pub hit: AtomicU64,
    pub miss: AtomicU64,
    pub stale: AtomicU64,
    pub revalidated: AtomicU64,
    pub expired: AtomicU64,
    pub bypass: AtomicU64,
    pub uncacheable: AtomicU64,
    pub purged: AtomicU64,
}

pub static STATS: Stats = Stats {
    hit: AtomicU64::new(0),
    miss: AtomicU64::new(0),
    stale: AtomicU64::new(0),
    revalidated: AtomicU64::new(0),
    expired: AtomicU64::new(0),
    bypass: AtomicU64::new(0),
    uncacheable: AtomicU64::new(0),
    purged: AtomicU64::new(0),
};

/// The `authgate_response_cache_*` series, as the metrics page shows them.
pub fn render(engine: &Engine, text: &mut String) {
    let s = &STATS;
    let _ = writeln!(text, "# HELP authgate_response_cache_requests_total Requests on routes with a response cache, by what the cache did\n# TYPE authgate_response_cache_requests_total counter");
    for (result, counter) in [
        ("hit", &s.hit),
        ("miss", &s.miss),
        ("stale", &s.stale),
        ("revalidated", &s.revalidated),
        ("expired", &s.expired),
        ("uncacheable", &s.uncacheable),
        ("bypass", &s.bypass),
    ] {
        let _ = writeln!(
            text,
            "authgate_response_cache_requests_total{{result=\"{result}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(text, "# HELP authgate_response_cache_evicted_total Stored responses evicted to stay within max_bytes\n# TYPE authgate_response_cache_evicted_total counter\nauthgate_response_cache_evicted_total {}", engine.store.evicted());
    let _ = writeln!(text, "# HELP authgate_response_cache_purged_total Stored responses dropped by admin purges and by writes to their URL (RFC 9111 4.4)\n# TYPE authgate_response_cache_purged_total counter\nauthgate_response_cache_purged_total {}", s.purged.load(Ordering::Relaxed));
    let _ = writeln!(text, "# HELP authgate_response_cache_bytes Bytes held by the response cache\n# TYPE authgate_response_cache_bytes gauge\nauthgate_response_cache_bytes {}", engine.store.bytes());
    let _ = writeln!(text, "# HELP authgate_response_cache_objects Responses held by the response cache\n# TYPE authgate_response_cache_objects gauge\nauthgate_response_cache_objects {}", engine.store.objects());
}

/// The access log's `response_cache` value for a request whose route caches, counted once.
pub fn record(phase: &CachePhase, bypassed: bool) -> &'static str {
    let (counter, word) = match phase {
        _ if bypassed => (&STATS.bypass, "bypass"),
        CachePhase::Hit => (&STATS.hit, "hit"),
        CachePhase::Miss => (&STATS.miss, "miss"),
        CachePhase::Stale | CachePhase::StaleUpdating => (&STATS.stale, "stale"),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            (&STATS.revalidated, "revalidated")
        }
        CachePhase::Expired => (&STATS.expired, "expired"),
        CachePhase::Disabled(NoCacheReason::NeverEnabled) => return "-",
        CachePhase::Disabled(_) | CachePhase::Bypass => (&STATS.uncacheable, "uncacheable"),
        CachePhase::Uninit | CachePhase::CacheKey => return "-",
    };
    counter.fetch_add(1, Ordering::Relaxed);
    word
}

/// Request headers that some frameworks act on (another path, another host or scheme) but
/// that are not part of the key: a request carrying one bypasses the cache, so it can neither
/// be served a stored answer nor store the answer it provoked. Method overrides are
/// `request::method_overrides`'.
const UNKEYED: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-host",
    "forwarded",
];

/// Why a request may not use the cache at all, if it may not.
pub fn bypass(req: &RequestHeader) -> Option<&'static str> {
    if !matches!(req.method, http::Method::GET | http::Method::HEAD) {
        return Some("method");
    }
    // A body the key does not cover (a "fat GET"): a backend that reads it could answer
    // from it, and the answer would be served to everyone.
    if has_body(req) {
        return Some("request body");
    }
    // One pass over the request's few names (a lookup by name would parse and hash each of
    // the list's names on every request).
    if let Some(h) = req
        .headers
        .keys()
        .find_map(|k| UNKEYED.iter().find(|u| **u == k.as_str()))
    {
        return Some(h);
    }
    // Read as routing reads them (headers, and `_method` however it is escaped): routing
    // refused an override that leads elsewhere; one that names another method of the same
    // route still changes the answer.
    if crate::request::method_overrides(req, req.uri.query())
        .next()
        .is_some()
    {
        return Some("method override");
    }
    None
}

/// Whether a request carries a body: any `Transfer-Encoding`, or a `Content-Length` other
/// than 0 (an unreadable one counts: the cache is no place to guess).
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|n| n.trim_ascii() != b"0")
            })
}

/// The key's primary string: the route's policy (a response stored under one policy is never
/// served under another after a reload), the scheme and host the backend was told of, and the
/// canonical host and target. Hosts are part of it, so two hosts never share an object.
pub fn primary(policy: Policy, proto: &[u8], forwarded_host: &[u8], url: &str) -> String {
    // `|` separates the parts: escaped in the two that a trusted proxy's headers supply.
    let part = |b: &[u8]| String::from_utf8_lossy(b).replace('|', "%7C");
    format!(
        "{:?}|{}|{}|{url}",
        policy,
        part(proto),
        part(forwarded_host)
    )
}

/// The cache key of a route's object: `primary`, hashed once here (Pingora hashes the primary
/// string again at each use otherwise).
pub fn key(policy: Policy, proto: &[u8], forwarded_host: &[u8], url: &str) -> CacheKey {
    let primary = primary(policy, proto, forwarded_host, url);
    let hash = pingora::cache::key::hash_key(&primary);
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// Whether a stale object may be served (within its own windows, which Pingora checks): while
/// it revalidates (`None`), and when the backend cannot answer: a transport error, or no
/// backend left to try (the proxy's 502). Never for a client's own error.
pub fn serve_stale(error: Option<&pingora::Error>) -> bool {
    error.is_none_or(|e| {
        e.esource() == &pingora::ErrorSource::Upstream
            || matches!(e.etype(), pingora::ErrorType::HTTPStatus(502..=504))
    })
}

/// Statuses a cache may store without explicit freshness (RFC 9110 15.1 "heuristically
/// cacheable"), less 206 (partial content is not stored).
fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a response may be stored, and how long it is fresh (RFC 9111 §3, §4.2, for a
/// shared cache; RFC 9213's `CDN-Cache-Control` first).
///
/// `credentials`: the request carried a credential (an `Authorization` header or a configured
/// credential cookie); `namespace`: the identity headers' prefix; `exchange`: when the request
/// went out and the response came (its age on arrival counts, §4.2.3).
pub fn storable(
    route: &RouteCache,
    policy: Policy,
    credentials: bool,
    namespace: &Namespace,
    resp: &ResponseHeader,
    exchange: Exchange,
) -> RespCacheable {
    let no = |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
    let status = resp.status.as_u16();
    if status == 206 || resp.status.is_informational() {
        return no("status");
    }
    // A response that sets a cookie is the caller's, whatever it says of caching.
    if resp.headers.contains_key(SET_COOKIE) {
        return no("set-cookie");
    }
    // Varies on who is calling: never shared between users.
    if vary_names(&resp.headers).any(|name| {
        name == "*" || name == "cookie" || name == "authorization" || namespace.covers(&name)
    }) {
        return no("vary");
    }
    let cc = CacheControl::from_resp_headers(resp);
    let cdn = targeted::directives(resp);
    // A refusal in either field holds: `CDN-Cache-Control` may lengthen authgate's freshness,
    // never make a browser-private response shared (stricter than RFC 9213, on purpose).
    let both = || cc.iter().chain(cdn.iter());
    if both().any(|c| c.is_cacheable() == Cacheable::No || c.has_key("private")) {
        return no("cache-control");
    }
    // Identity routes and requests with credentials: only what the backend marks shareable.
    let shareable = both().any(|c| c.public() || c.s_maxage().ok().flatten().is_some());
    if (policy != Policy::Public || credentials) && !shareable {
        return no("not-shared");
    }
    // RFC 9213 §2.2: a valid `CDN-Cache-Control` decides, and `Cache-Control` and `Expires`
    // are ignored; otherwise §4.2.1's order: s-maxage, max-age, Expires minus Date.
    let rules = cdn.as_ref().or(cc.as_ref());
    let stated = rules.and_then(|c| c.fresh_duration()).or_else(|| {
        cdn.is_none()
            .then(|| freshness::expires_lifetime(&resp.headers, exchange.response_time))
            .flatten()
    });
    let fresh = match stated {
        Some(d) => d,
        None if !route.ttl.is_zero() && heuristically_cacheable(status) => route.ttl,
        None => return no("no-freshness"),
    }
    .min(route.max_ttl);
    let (swr, sie) = {
        let swr = rules
            .and_then(|c| c.serve_stale_while_revalidate_duration())
            .unwrap_or(route.stale_while_revalidate);
        let sie = rules
            .and_then(|c| c.serve_stale_if_error_duration())
            .unwrap_or(route.stale_if_error);
        // `no-cache`: never used without a successful revalidation, errors included.
        if rules.is_some_and(|c| c.no_cache()) {
            (0, 0)
        } else {
            (secs(swr), secs(sie))
        }
    };
    // The object's epoch is set back by its age on arrival: Pingora's age (the `Age` served
    // with a hit) is then §4.2.3's current_age, and it is fresh while that is below `fresh`.
    let now = exchange.response_time;
    let age = freshness::initial_age(&resp.headers, resp.version, exchange);
    let epoch = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let fresh_until = if fresh.is_zero() {
        // Stored, but stale at once: every use is revalidated (`no-cache`, `max-age=0`).
        let before = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        epoch.min(before)
    } else {
        epoch.checked_add(fresh).unwrap_or(epoch)
    };
    let mut header = resp.clone();
    // The stored copy keeps no `Age`: the epoch holds it, and a hit is served its own.
    header.remove_header(&AGE);
    // Fields named by `private="..."` or `no-cache="..."`, in either field, are not stored.
    for c in both() {
        c.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, epoch, swr, sie, header))
}

/// Whether a field the backend marked hop-by-hop (and authgate removed) is one that decides
/// whether a response may be shared or how long: then the response is not stored, since what
/// it said was cut (a `Connection: Set-Cookie` would otherwise store a page without the cookie
/// that made it personal).
pub fn decides_storage(name: &HeaderName) -> bool {
    [
        "set-cookie",
        "cache-control",
        "cdn-cache-control",
        "expires",
        "vary",
        "pragma",
        "age",
    ]
    .contains(&name.as_str())
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// The header names a response's `Vary` fields list, lower case.
fn vary_names(headers: &http::HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers.get_all(VARY).iter().flat_map(|vary| {
        String::from_utf8_lossy(vary.as_bytes())
            .split(',')
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect::<Vec<_>>()
    })
}

/// The variance of a stored response: the request's values of the headers its `Vary` names.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let names: Vec<String> = vary_names(meta.headers()).collect();
    if names.is_empty() {
        return None;
    }
    let mut builder = VarianceBuilder::new();
    for name in names {
        let value: Vec<u8> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain([b'\n']))
            .collect();
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

/// Drops the stored responses for `url` here and, in a fleet, on every other instance (through
/// the bus, off the request path). How many were dropped here.
pub fn purge(
    engine: &Engine,
    fleet: Option<&std::sync::Arc<crate::fleet::Fleet>>,
    url: &str,
    prefix: bool,
) -> Result<usize, String> {
    let n = purge_local(engine, url, prefix)?;
    if let Some(fleet) = fleet {
        let target = crate::fleet::Target::Responses {
            url: url.to_string(),
            prefix,
        };
        fleet.publish(target, Duration::ZERO);
    }
    Ok(n)
}

/// Drops the stored responses for `url` (`http(s)://host/path?query`, or `host/path?query`),
/// or, with `prefix`, for every URL that starts with it; counted. How many were dropped.
pub fn purge_local(engine: &Engine, url: &str, prefix: bool) -> Result<usize, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let (host, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None if prefix => (rest, ""),
        None => (rest, "/"),
    };
    // The key holds the canonical host: lower case, no port, no trailing dot.
    let Some(host) = invalidation::canonical_host(host) else {
        return Err(format!("`{url}` does not name a host"));
    };
    let wanted = format!("{host}{target}");
    // The primary string ends with the URL after its third `|` (see `primary`).
    let n = engine.store.purge_where(engine.eviction, |p| {
        let u = p.splitn(4, '|').nth(3).unwrap_or("");
        if prefix {
            u.starts_with(&wanted)
        } else {
            u == wanted
        }
    });
    STATS.purged.fetch_add(n as u64, Ordering::Relaxed);
    Ok(n)
}

#[cfg(test)]
#[path = "response_cache/tests.rs"]
mod tests;
