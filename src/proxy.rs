//! The `ProxyHttp` implementation: the phases of one request, each handing its decision to
//! the module that owns it (`request`, `routes`, `credentials`, `cache`, `policy`,
//! `upstreams`), and the answers authgate gives itself.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION,
    SET_COOKIE, WWW_AUTHENTICATE,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::access_log::{ms, Entry};
use crate::cache::{Lookup, PurgeCause};
use crate::connections::{self, ClientLimits, LimitsSource};
use crate::credentials::{CacheKey, Credentials};
use crate::drain::Readiness;
use crate::forwarded::Forwarded;
use crate::identity::{Answer, Identity};
use crate::metrics::{self, InFlight};
use crate::outcome::Outcome;
use crate::policy::{self, login_location, wants_html, Verdict};
use crate::request::{self, RequestError};
use crate::response_cache::{self, RouteCache};
use crate::routes::{Policy, Route};
use crate::runtime::Runtime;
use crate::upstreams::{hash_input, Pool};

/// Group keys for peers that must not reuse a pooled connection (see `upstream_peer`).
static FRESH_GROUP: AtomicU64 = AtomicU64::new(1 << 63);

/// The proxy: the swappable runtime snapshot, and whether the process is draining.
pub struct AuthGate {
    runtime: Arc<ArcSwap<Runtime>>,
    readiness: Readiness,
}

impl AuthGate {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, readiness: Readiness) -> Self {
        AuthGate { runtime, readiness }
    }
}

impl LimitsSource for ArcSwap<Runtime> {
    fn limits(&self) -> ClientLimits {
        self.load().client
    }
}

/// What `request_filter` settled for a request it routed; the later phases read only this.
struct Routed {
    /// The snapshot this request started with; a reload does not change it midway.
    runtime: Arc<Runtime>,
    /// `host/prefix` of the route, for logs and metrics.
    label: Arc<str>,
    /// The route's `authgate_requests_total` series.
    counters: Option<metrics::RequestCounters>,
    pool: Arc<Pool>,
    forwarded: Forwarded,
    /// The normalised origin-form target, when it differs from what the client sent.
    rewrite: Option<String>,
    /// The canonical `Host`, when it differs from the client's (or the client sent none).
    set_host: Option<HeaderValue>,
    /// On a route with `cache:`: its settings, and the canonical `host/path?query`.
    cache: Option<CachedRoute>,
}

/// What the response cache phases need of a route with `cache:`.
struct CachedRoute {
    settings: RouteCache,
    policy: Policy,
    /// The canonical `host/path?query`.
    url: Box<str>,
}

/// Per-request state, filled by `request_filter` and read by the later phases.
pub struct Ctx {
    started: Instant,
    _inflight: InFlight,
    client_ip: Option<IpAddr>,
    /// Set once the request has a route; `None` for a request refused before that.
    routed: Option<Routed>,
    identity: Option<Arc<Identity>>,
    resolver_time: Option<Duration>,
    /// Where the answer came from (hit, miss, coalesced, stale).
    lookup: Option<Lookup>,
    /// Backends this request has been sent to (a failed connect tries another).
    tried: Vec<SocketAddr>,
    /// The last attempt failed on a reused backend connection before any response byte:
    /// the next goes to a new connection, and may go to the same backend.
    fresh_connection: bool,
    /// What happened, for the log line.
    outcome: Outcome,
    /// The client sent headers of the identity namespace (they were removed).
    forged: bool,
    /// On a logout route: the cache key to drop once the backend answers 2xx.
    logout: Option<CacheKey>,
    /// The request may not use the response cache (see `response_cache::bypass`).
    cache_bypass: bool,
    /// The client went away before its answer was done.
    client_left: bool,
}

impl Ctx {
    /// The route and its cache settings, on a route with `cache:`.
    fn cached_route(&self) -> Option<(&Routed, &CachedRoute)> {
        let routed = self.routed.as_ref()?;
        Some((routed, routed.cache.as_ref()?))
    }
}

/// An answer authgate gives itself instead of the backend's.
struct Refusal {
    status: u16,
    body: RefusalBody,
    headers: Vec<(HeaderName, HeaderValue)>,
    outcome: Outcome,
}

enum RefusalBody {
    /// `authgate: <reason>`, for people and logs.
    Text(Cow<'static, str>),
    /// `{"error":"<code>"}`, for API clients refused by a route's policy.
    Json(&'static str),
}

impl Refusal {
    fn text(status: u16, reason: impl Into<Cow<'static, str>>, outcome: Outcome) -> Refusal {
        Refusal {
            status,
            body: RefusalBody::Text(reason.into()),
            headers: Vec::new(),
            outcome,
        }
    }

    fn json(status: u16, error: &'static str, outcome: Outcome) -> Refusal {
        Refusal {
            status,
            body: RefusalBody::Json(error),
            headers: Vec::new(),
            outcome,
        }
    }

    fn with(mut self, name: HeaderName, value: HeaderValue) -> Refusal {
        self.headers.push((name, value));
        self
    }

    /// What a route's policy refuses, as the client gets it.
    fn of_verdict(verdict: Verdict, outcome: Outcome) -> Option<Refusal> {
        match verdict {
            Verdict::Forward => None,
            Verdict::Redirect(location) => {
                Some(Refusal::text(302, "login required", outcome).with(LOCATION, location))
            }
            Verdict::Unauthenticated => {
                Some(Refusal::json(401, "authentication_required", outcome).with(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate\""),
                ))
            }
            Verdict::Forbidden => Some(Refusal::json(403, "forbidden", outcome)),
        }
    }

    async fn send(self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.outcome = self.outcome;
        let (content_type, body) = match self.body {
            RefusalBody::Text(reason) => (
                "text/plain; charset=utf-8",
                Bytes::from(format!("authgate: {reason}\n")),
            ),
            RefusalBody::Json(error) => (
                "application/json",
                Bytes::from(format!("{{\"error\":\"{error}\"}}\n")),
            ),
        };
        respond_with(session, self.status, content_type, body, &self.headers).await
    }
}

/// Writes a short answer from authgate itself.
async fn respond_with(
    session: &mut Session,
    status: u16,
    content_type: &'static str,
    body: Bytes,
    extra: &[(HeaderName, HeaderValue)],
) -> pingora::Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(CONTENT_TYPE, content_type)?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    for (n, v) in extra {
        resp.append_header(n.clone(), v.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// A failed connect or exchange with a backend of the request's pool.
fn count_upstream_error(ctx: &Ctx) {
    if let Some(r) = &ctx.routed {
        metrics::METRICS
            .upstream_errors
            .with_label_values(&[r.pool.name()])
            .inc();
    }
}

/// Phase 1: the request header within the operator's limits. Pingora itself reads up to
/// 1 MiB and 256 fields; the operator's limits are usually far lower.
fn admit(req: &RequestHeader, limits: &ClientLimits) -> Result<(), Refusal> {
    let refuse = |why: &'static str| Err(Refusal::text(431, why, Outcome::BadRequest));
    if req.headers.len() > limits.max_headers {
        return refuse("too many header fields");
    }
    // Each field counted as `name: value\r\n`, plus the request line.
    let size = req.raw_path().len()
        + req.method.as_str().len()
        + req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > limits.max_header_bytes {
        return refuse("request header too large");
    }
    Ok(())
}

/// Phase 2: the canonical request and its route, and what later phases need of it.
fn route<'r>(
    rt: &'r Arc<Runtime>,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    tls: bool,
) -> Result<(&'r Route, Routed), Refusal> {
    // One reading of the request line and host, used by everything below.
    let canon = request::settle(req).map_err(|e| {
        let outcome = match e {
            RequestError::Path(_) => Outcome::BadPath,
            _ => Outcome::BadRequest,
        };
        Refusal::text(400, e.to_string(), outcome)
    })?;
    let own_host = canon
        .set_host
        .clone()
        .or_else(|| req.headers.get(HOST).cloned());
    let forwarded = rt.trusted.derive(req, own_host, client_ip, tls);
    let route = match rt
        .routes
        .find_checked(&canon.host, canon.route_path(), &req.method)
    {
        Ok(Some(route)) => route,
        Ok(None) => {
            return Err(Refusal::text(
                404,
                "no route for this request",
                Outcome::NoRoute,
            ))
        }
        Err(e) => {
            log::debug!("{}: {e}, under {}", canon.path, e.prefix);
            return Err(Refusal::text(400, e.to_string(), Outcome::BadPath));
        }
    };
    // A method a framework would take from an override header or `_method` must lead to the
    // same route, or the backend would act under a policy that was not checked.
    let elsewhere = request::method_overrides(req, canon.query).any(|m| {
        !m.is_ok_and(|m| {
            rt.routes
                .find(&canon.host, canon.route_path(), &m)
                .is_some_and(|r| std::ptr::eq(r, route))
        })
    });
    if elsewhere {
        return Err(Refusal::text(
            400,
            "method override routes elsewhere",
            Outcome::BadRequest,
        ));
    }
    let routed = Routed {
        runtime: rt.clone(),
        label: route.label.clone(),
        counters: rt.route_counters.get(route.index).cloned(),
        pool: route.pool.clone(),
        forwarded,
        cache: route.cache.map(|c| {
            let url = match canon.query {
                Some(q) => format!("{}{}?{q}", canon.host, canon.path),
                None => format!("{}{}", canon.host, canon.path),
            };
            CachedRoute {
                settings: c,
                policy: route.policy,
                url: url.into_boxed_str(),
            }
        }),
        rewrite: canon.rewrite,
        set_host: canon.set_host,
    };
    Ok((route, routed))
}

/// Phase 3: who is calling: the credentials, looked up in the cache or resolved.
async fn identify(
    rt: &Arc<Runtime>,
    req: &RequestHeader,
    forwarded: &Forwarded,
    logout: bool,
    ctx: &mut Ctx,
) -> Result<Arc<Identity>, Refusal> {
    let creds = Credentials::from_request(req)
        .map_err(|e| Refusal::text(400, e.to_string(), Outcome::BadCredentials))?;
    let key = rt.keys.key(&creds);
    if logout {
        ctx.logout = Some(key);
    }
    let fetch = {
        let (rt, forwarded) = (rt.clone(), forwarded.clone());
        move || async move { rt.resolver.resolve(&creds, &forwarded, &rt.namespace).await }
    };
    let started = Instant::now();
    let (answer, lookup) = rt.cache.resolve(&key, fetch).await;
    ctx.resolver_time = Some(started.elapsed());
    ctx.lookup = Some(lookup);
    match answer {
        Ok(Answer::Identity(identity)) => Ok(identity),
        Ok(Answer::Denied { status, headers }) => {
            let reason = if status == 401 {
                "not authenticated"
            } else {
                "forbidden"
            };
            let mut refusal = Refusal::text(status, reason, Outcome::Denied);
            refusal.headers = headers;
            Err(refusal)
        }
        Err(e) => {
            // Waiters share the caller's failure: one warning per resolver call, not per waiter.
            let level = if lookup == Lookup::Miss {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "{} {}: {e}; answering {} (cache: {})",
                req.method,
                req.uri.path(),
                e.status(),
                lookup.as_str()
            );
            Err(Refusal::text(
                e.status(),
                e.client_reason(),
                Outcome::of_error(&e),
            ))
        }
    }
}

/// Phases 3 and 4: the caller's identity, and what the route's policy says of it.
async fn authorize(
    rt: &Arc<Runtime>,
    route: &Route,
    routed: &Routed,
    req: &RequestHeader,
    ctx: &mut Ctx,
) -> Result<Arc<Identity>, Refusal> {
    let identity = identify(rt, req, &routed.forwarded, route.logout, ctx).await?;
    let verdict = policy::decide(route.policy, &route.roles, &identity, || {
        let login = rt.login.as_ref()?;
        // The canonical target: the rewrite, or the client's own when it needed none.
        let target = routed
            .rewrite
            .as_deref()
            .or_else(|| req.uri.path_and_query().map(|p| p.as_str()))
            .unwrap_or("/");
        wants_html(req)
            .then(|| login_location(login, &routed.forwarded, target))
            .flatten()
    });
    let outcome = verdict.outcome(&identity);
    ctx.outcome = outcome;
    match Refusal::of_verdict(verdict, outcome) {
        Some(refusal) => Err(refusal),
        None => Ok(identity),
    }
}

/// Identical `Content-Length` values, repeated or comma-joined (Pingora accepts both and has
/// checked they agree), go to the backend as one plain number.
fn single_content_length(req: &mut RequestHeader) -> pingora::Result<()> {
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return Ok(());
    }
    let number = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let number = HeaderValue::from_bytes(number)
        .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad Content-Length"))?;
    req.insert_header(CONTENT_LENGTH, number)
}

#[async_trait]
impl ProxyHttp for AuthGate {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            _inflight: InFlight::start(),
            client_ip: None,
            routed: None,
            identity: None,
            resolver_time: None,
            lookup: None,
            tried: Vec::new(),
            fresh_connection: false,
            outcome: Outcome::Undecided,
            forged: false,
            logout: None,
            cache_bypass: false,
            client_left: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let rt = self.runtime.load_full();
        connections::header_received();
        // Only where keep-alive is still on: Pingora turns it off for a client that asked to
        // close and for a listener that is shutting down.
        if session.get_keepalive().is_some() {
            // Draining: the answer closes the connection, so the client's next request opens
            // one where the load balancer now sends it.
            let keepalive = if self.readiness.draining() {
                None
            } else {
                rt.client.keepalive_secs()
            };
            session.set_keepalive(keepalive);
        }
        if let Err(refusal) = admit(session.req_header(), &rt.client) {
            return refusal.send(session, ctx).await;
        }
        // Before anything reads the request: no client copy of the identity namespace survives.
        ctx.forged = rt.namespace.strip(session.req_header_mut()) > 0;
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());

        let (route, routed) = match route(&rt, session.req_header(), ctx.client_ip, tls) {
            Ok(r) => r,
            Err(refusal) => return refusal.send(session, ctx).await,
        };
        if route.policy == Policy::Public {
            if route.logout {
                if let Ok(creds) = Credentials::from_request(session.req_header()) {
                    ctx.logout = Some(rt.keys.key(&creds));
                }
            }
            ctx.outcome = Outcome::Public;
            ctx.routed = Some(routed);
            return Ok(false);
        }
        let decided = authorize(&rt, route, &routed, session.req_header(), ctx).await;
        ctx.routed = Some(routed);
        match decided {
            Ok(identity) => {
                ctx.identity = Some(identity);
                Ok(false)
            }
            Err(refusal) => refusal.send(session, ctx).await,
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        let Some(routed) = &ctx.routed else {
            return Ok(());
        };
        if routed.cache.is_none() {
            return Ok(());
        }
        let Some(engine) = routed.runtime.response_cache else {
            return Ok(());
        };
        if let Some(why) = response_cache::bypass(session.req_header()) {
            log::debug!("response cache bypassed: {why}");
            ctx.cache_bypass = true;
            return Ok(());
        }
        session.cache.enable(
            engine.store,
            Some(engine.eviction),
            None,
            Some(engine.lock),
            None,
        );
        session
            .cache
            .set_max_file_size_bytes(engine.settings.max_object_bytes);
        Ok(())
    }

    fn cache_key_callback(
        &self,
        _session: &Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<pingora::cache::CacheKey> {
        let Some((routed, c)) = ctx.cached_route() else {
            return Error::e_explain(ErrorType::InternalError, "cache key for an uncached route");
        };
        let f = &routed.forwarded;
        let host = f.host.as_ref().map_or(&b""[..], |h| h.as_bytes());
        let primary = response_cache::primary(c.policy, f.proto.as_bytes(), host, &c.url);
        // Hashed once here: Pingora hashes the primary string again at each use otherwise.
        let hash = pingora::cache::key::hash_key(&primary);
        let mut key = pingora::cache::CacheKey::new(primary, "");
        key.set_primary_bin_override(hash);
        Ok(key)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<pingora::cache::RespCacheable> {
        let Some((routed, c)) = ctx.cached_route() else {
            return Ok(pingora::cache::RespCacheable::Uncacheable(
                pingora::cache::NoCacheReason::NeverEnabled,
            ));
        };
        let rt = &routed.runtime;
        // A request whose credentials cannot even be read is treated as carrying some.
        let credentials = Credentials::from_request(session.req_header())
            .map_or(true, |c| rt.keys.key(&c).has_credentials);
        Ok(response_cache::storable(
            &c.settings,
            c.policy,
            credentials,
            &rt.namespace,
            resp,
        ))
    }

    /// Stale is served (within the object's own windows, which Pingora checks) while it
    /// revalidates, and when the backend cannot answer: a transport error, or no backend left
    /// to try (`upstream_peer`'s 502). Never for a client's own error.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        error.is_none_or(|e| {
            e.esource() == &ErrorSource::Upstream
                || matches!(e.etype(), ErrorType::HTTPStatus(502..=504))
        })
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora::cache::CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        response_cache::variance(meta, req)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let pool = ctx.routed.as_ref().map(|r| r.pool.clone()).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no pool chosen for request")
        })?;
        let key = hash_input(
            pool.settings().hash_key.as_ref(),
            ctx.client_ip,
            session.req_header(),
            ctx.identity.as_ref().and_then(|i| i.user_id()),
        );
        // A reused connection the backend had already closed says nothing about the backend.
        let fresh = std::mem::take(&mut ctx.fresh_connection);
        let stale = if fresh { ctx.tried.pop() } else { None };
        match pool.select(&key, &ctx.tried) {
            Some(mut peer) => {
                if let Some(addr) = peer._address.as_inet() {
                    ctx.tried.push(*addr);
                }
                if fresh {
                    // The pool of idle connections is keyed by the peer's hash: a group of
                    // its own finds none there, so Pingora opens a new one.
                    peer.group_key = FRESH_GROUP.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Box::new(peer))
            }
            None => {
                let why = if ctx.tried.is_empty() {
                    format!("no healthy backend in upstream `{}`", pool.name())
                } else {
                    format!("every backend tried in upstream `{}` failed", pool.name())
                };
                ctx.tried.extend(stale);
                Error::e_explain(ErrorType::HTTPStatus(502), why)
            }
        }
    }

    /// Pingora's rule (idempotent methods with the whole body still buffered; a failure on a
    /// reused connection before any response byte is retried), plus: a write that fails on
    /// a reused connection is the same stale-connection case. The retry goes to a new
    /// connection (see `upstream_peer`).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Only the backend's side of the exchange is worth another try: a client that went
        // away would only have its request sent again for nobody.
        if e.esource() != &ErrorSource::Upstream {
            e.set_retry(false);
            return e;
        }
        count_upstream_error(ctx);
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if !replayable {
            e.set_retry(false);
        } else if client_reused
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ConnectionClosed | ErrorType::ReadError
            )
        {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        if client_reused && e.retry() {
            ctx.fresh_connection = true;
            log::debug!("backend {peer} closed a reused connection ({e}); retrying on a new one");
        }
        e
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        count_upstream_error(ctx);
        let retries = ctx.routed.as_ref().map_or(0, |r| r.pool.settings().retries);
        // `tried` counts the first attempt too.
        if ctx.tried.len() <= retries {
            log::info!(
                "backend {peer} failed to connect ({:?}); trying another",
                e.etype()
            );
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let Some(routed) = ctx.routed.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "request reached upstream without a route",
            );
        };
        if let Some(uri) = &routed.rewrite {
            let uri = uri.parse().map_err(|_| {
                Error::explain(ErrorType::InternalError, "normalised path is not a URI")
            })?;
            upstream_request.set_uri(uri);
        }
        if let Some(host) = &routed.set_host {
            upstream_request.insert_header(HOST, host.clone())?;
        }
        single_content_length(upstream_request)?;
        if session.cache.enabled() {
            // The whole object (HEAD as GET, no client preconditions or ranges); on a stale
            // object, the validators it was stored with.
            pingora::cache::filters::upstream::request_filter(
                upstream_request,
                session.cache.maybe_cache_meta(),
            );
        }
        if ctx.forged {
            // The client sent identity headers (all removed above): look once more, on the
            // copy that goes upstream. A request that sent none (nearly all) skips this.
            routed.runtime.namespace.strip(upstream_request);
        }
        if let Some(identity) = &ctx.identity {
            for (name, value) in identity.wire_headers() {
                upstream_request.append_header(name, value)?;
            }
        }
        routed.forwarded.apply(upstream_request)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let (Some(key), Some(routed)) = (&ctx.logout, &ctx.routed) {
            // Dropped before the client sees the answer: its next request is resolved afresh.
            if upstream_response.status.is_success() {
                routed.runtime.cache.purge(key, PurgeCause::Logout);
            }
        }
        let forward = ctx
            .routed
            .as_ref()
            .is_some_and(|r| r.runtime.forward_set_cookie);
        if let (true, Some(identity)) = (forward, &ctx.identity) {
            for v in identity.set_cookie() {
                upstream_response.append_header(SET_COOKIE, v.clone())?;
            }
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        connections::client_left(e)
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Ctx,
        e: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        connections::client_left(e)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if connections::client_left(e) {
            ctx.client_left = true;
            let req = session.req_header();
            connections::count_client_left(e, &req.method, req.uri.path());
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let timeout = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        let (code, reason) = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => {
                (*code, e.context.as_ref().map(|c| c.as_str().to_string()))
            }
            (_, ErrorSource::Upstream) if timeout => (504, Some("backend timed out".into())),
            (_, ErrorSource::Upstream) => (502, Some("backend failed".into())),
            (_, ErrorSource::Downstream) => (400, Some("bad request".into())),
            _ => (500, Some("internal error".into())),
        };
        if code > 0 && session.response_written().is_none() {
            let reason = reason.unwrap_or_else(|| "error".into());
            let refusal = Refusal::text(code, reason, ctx.outcome);
            if let Err(we) = refusal.send(session, ctx).await {
                log::debug!("could not send the error answer: {we}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        connections::request_done();
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None if ctx.client_left => connections::CLIENT_LEFT,
            None => 0,
        };
        let route = ctx.routed.as_ref().map(|r| &*r.label);
        metrics::count_request(
            ctx.routed.as_ref().and_then(|r| r.counters.as_ref()),
            status,
            ctx.started.elapsed(),
        );
        let cache = ctx.lookup.map_or("-", Lookup::as_str);
        let response_cache = if ctx.routed.as_ref().is_some_and(|r| r.cache.is_some()) {
            response_cache::record(&session.cache.phase(), ctx.cache_bypass)
        } else {
            "-"
        };
        if let Some(e) = e {
            log::debug!(
                "{} {}: {e}",
                session.req_header().method,
                session.req_header().uri.path()
            );
        }
        let Some(log) = ctx
            .routed
            .as_ref()
            .and_then(|r| r.runtime.access_log.clone())
            .or_else(|| self.runtime.load().access_log.clone())
        else {
            return;
        };
        let req = session.req_header();
        log.log(Entry {
            time: SystemTime::now(),
            client_ip: ctx.client_ip,
            method: req.method.as_str(),
            path: ctx
                .routed
                .as_ref()
                .and_then(|r| r.rewrite.as_deref())
                .map_or(req.uri.path(), |t| t.split_once('?').map_or(t, |(p, _)| p)),
            query: req.uri.query(),
            status,
            route,
            backend: ctx.tried.last().copied(),
            user_id: ctx.identity.as_ref().and_then(|i| i.user_id()),
            resolver: ctx.outcome.as_str(),
            cache,
            response_cache,
            bytes: session.body_bytes_sent(),
            total_ms: ms(ctx.started.elapsed()),
            resolver_ms: ctx.resolver_time.map(ms),
        });
    }
}
