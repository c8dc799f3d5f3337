//! A request's state between Pingora's phases: what `request_filter` settled (the route, the
//! identity) and what the later phases record for the log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};

use crate::cache::Lookup;
use crate::credentials::CacheKey;
use crate::forwarded::Forwarded;
use crate::identity::Identity;
use crate::metrics::{self, InFlight};
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::response_cache::RouteCache;
use crate::runtime::Runtime;
use crate::upstreams::{Attempts, Pool};

/// What `request_filter` settled for a request it routed; the later phases read only this.
pub struct Routed {
    /// The snapshot this request started with; a reload does not change it midway.
    pub runtime: Arc<Runtime>,
    /// `host/prefix` of the route, for logs and metrics.
    pub label: Arc<str>,
    /// The route's `authgate_requests_total` series.
    pub counters: Option<metrics::RequestCounters>,
    pub pool: Arc<Pool>,
    pub forwarded: Forwarded,
    /// The normalised origin-form target, when it differs from what the client sent.
    pub rewrite: Option<String>,
    /// The canonical `Host`, when it differs from the client's (or the client sent none).
    pub set_host: Option<HeaderValue>,
    /// On a route with `cache:`: its settings, and the canonical `host/path?query`.
    pub cache: Option<CachedRoute>,
}

/// What the response cache phases need of a route with `cache:`.
pub struct CachedRoute {
    pub settings: RouteCache,
    pub policy: Policy,
    /// The canonical `host/path?query`.
    pub url: Box<str>,
}

/// Per-request state, filled by `request_filter` and read by the later phases.
pub struct Ctx {
    pub started: Instant,
    _inflight: InFlight,
    pub client_ip: Option<IpAddr>,
    /// Set once the request has a route; `None` for a request refused before that.
    pub routed: Option<Routed>,
    pub identity: Option<Arc<Identity>>,
    pub resolver_time: Option<Duration>,
    /// Where the answer came from (hit, miss, coalesced, stale).
    pub lookup: Option<Lookup>,
    /// The backends tried, and whether the next try needs a new connection.
    pub attempts: Attempts,
    /// What happened, for the log line.
    pub outcome: Outcome,
    /// The client sent headers of the identity namespace (they were removed).
    pub forged: bool,
    /// On a logout route: the cache key to drop once the backend answers 2xx or 3xx.
    pub logout: Option<CacheKey>,
    /// The request may not use the response cache (see `response_cache::bypass`).
    pub cache_bypass: bool,
    /// When the request went to the backend, on a route with a response cache (the response's
    /// age on arrival counts the time it took, RFC 9111 §4.2.3).
    pub request_time: Option<SystemTime>,
    /// The request went to the backend to revalidate a stale stored response.
    pub revalidating: bool,
    /// A backend's `304` to a revalidation, for the stored response it updates.
    pub not_modified: Option<Box<pingora::http::ResponseHeader>>,
    /// The backend marked hop-by-hop a field that decides storage (it was removed): the
    /// response is not stored.
    pub cut_storage_fields: bool,
    /// The client went away before its answer was done.
    pub client_left: bool,
    /// The route's CORS headers for this request's origin, added to whatever answers it.
    pub cors: Vec<(HeaderName, HeaderValue)>,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            started: Instant::now(),
            _inflight: InFlight::start(),
            client_ip: None,
            routed: None,
            identity: None,
            resolver_time: None,
            lookup: None,
            attempts: Attempts::default(),
            outcome: Outcome::Undecided,
            forged: false,
            logout: None,
            cache_bypass: false,
            request_time: None,
            revalidating: false,
            not_modified: None,
            cut_storage_fields: false,
            client_left: false,
            cors: Vec::new(),
        }
    }

    /// The route and its cache settings, on a route with `cache:`.
    pub fn cached_route(&self) -> Option<(&Routed, &CachedRoute)> {
        let routed = self.routed.as_ref()?;
        Some((routed, routed.cache.as_ref()?))
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
