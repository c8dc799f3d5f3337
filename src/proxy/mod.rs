//! The `ProxyHttp` implementation: each phase of a request calls the module that decides
//! (`connections`, `request`, `routes`, `cache`, `policy`, `response_cache`, `upstreams`) and
//! turns its plain decision into `Session` writes. The request's state is `ctx`, the answers
//! authgate gives itself `refusal`, the steps of `request_filter` `phases`, the log line `log`.

mod cache;
mod ctx;
mod log;
mod phases;
mod refusal;
mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header::SET_COOKIE;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

pub use ctx::Ctx;
use refusal::Refusal;

use crate::cache::PurgeCause;
use crate::connections;
use crate::cors;
use crate::credentials::Credentials;
use crate::drain::Readiness;
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::response_cache;
use crate::runtime::Runtime;

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

/// Sends authgate's own answer; the log records its outcome.
async fn refuse(
    session: &mut Session,
    ctx: &mut Ctx,
    mut refusal: Refusal,
) -> pingora::Result<bool> {
    ctx.outcome = refusal.outcome;
    // An SPA reads a 401 only when it carries the grant; the browser hides it otherwise.
    refusal.headers.extend(ctx.cors.iter().cloned());
    refusal.send(session).await
}

#[async_trait]
impl ProxyHttp for AuthGate {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    // No downstream modules: Pingora's default is a compression module switched off, which
    // authgate never switches on, and it still cost a context and four filter calls a request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let rt = self.runtime.load_full();
        connections::header_received();
        // Only where keep-alive is still on: Pingora turns it off for a client that asked to
        // close and for a listener that is shutting down. Draining: the answer closes the
        // connection, so the client's next request opens one where the load balancer sends it.
        if session.get_keepalive().is_some() {
            let keepalive = (!self.readiness.draining())
                .then(|| rt.client.keepalive_secs())
                .flatten();
            session.set_keepalive(keepalive);
        }
        if let Err(why) = connections::admit(session.req_header(), &rt.client) {
            return refuse(session, ctx, Refusal::too_large(why)).await;
        }
        // Before anything reads the request: no client copy of the identity namespace survives.
        ctx.forged = rt.namespace.strip(session.req_header_mut()) > 0;
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let (route, routed) = match phases::route(&rt, session.req_header(), ctx.client_ip, tls) {
            Ok(r) => r,
            Err(refusal) => return refuse(session, ctx, refusal).await,
        };
        // A preflight never carries credentials: a route with a CORS policy answers it here,
        // before the policy would refuse it; other requests only learn their headers.
        match route.cors.as_ref().map(|c| {
            let req = session.req_header();
            c.decide(&req.method, &req.headers)
        }) {
            Some(cors::Decision::Preflight { status, headers }) => {
                ctx.routed = Some(routed);
                return refuse(session, ctx, Refusal::preflight(status, headers)).await;
            }
            Some(cors::Decision::Headers(headers)) => ctx.cors = headers,
            Some(cors::Decision::Nothing) | None => {}
        }
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
        let decided = phases::authorize(&rt, route, &routed, session.req_header(), ctx).await;
        ctx.routed = Some(routed);
        match decided {
            Ok(identity) => {
                ctx.identity = Some(identity);
                Ok(false)
            }
            Err(refusal) => refuse(session, ctx, refusal).await,
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        cache::enable(session, ctx)
    }

    fn cache_key_callback(
        &self,
        _session: &Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<pingora::cache::CacheKey> {
        cache::key(ctx)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<pingora::cache::RespCacheable> {
        cache::storable(session, resp, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        cache::from_backend(session, upstream_response, ctx)
    }

    fn should_serve_stale(&self, _: &mut Session, _: &mut Ctx, error: Option<&Error>) -> bool {
        response_cache::serve_stale(error)
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
        ctx.revalidating = session.cache.phase() == pingora::cache::CachePhase::Stale;
        upstream::peer(session, ctx)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        upstream::after_error(peer, session, e, ctx, client_reused)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::after_connect_failure(peer, ctx, e)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if session.cache.enabled() {
            ctx.request_time = Some(std::time::SystemTime::now());
        }
        upstream::prepare(session, upstream_request, ctx)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let Some(routed) = &ctx.routed else {
            return Ok(());
        };
        // Dropped before the client sees the answer: its next request is resolved afresh.
        // A redirect counts: an app's sign-out usually hands over to Authgear's with a 3xx.
        let done =
            upstream_response.status.is_success() || upstream_response.status.is_redirection();
        if let (Some(key), true) = (&ctx.logout, done) {
            routed.runtime.cache.purge(key, PurgeCause::Logout);
        }
        if let (true, Some(identity)) = (routed.runtime.forward_set_cookie, &ctx.identity) {
            for v in identity.set_cookie() {
                upstream_response.append_header(SET_COOKIE, v.clone())?;
            }
        }
        // The route's policy replaces whatever the backend said about origins.
        if !ctx.cors.is_empty() {
            for name in cors::RESPONSE_HEADERS {
                upstream_response.remove_header(&name);
            }
            for (name, value) in &ctx.cors {
                upstream_response.append_header(name.clone(), value.clone())?;
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
        let gone = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        if connections::client_left(e) {
            ctx.client_left = true;
            let req = session.req_header();
            connections::count_client_left(e, &req.method, req.uri.path());
            return gone;
        }
        // RFC 9111 §5.2.2.2: a stored response that may not be served stale (must-revalidate,
        // proxy-revalidate, s-maxage, no-cache, or past its windows), whose revalidation the
        // backend could not answer, gets a 504: not the stale response, not a 502.
        // (The cache phase is reset by then: `upstream_peer` noted it.)
        let unrevalidated = ctx.revalidating && response_cache::serve_stale(Some(e));
        let refusal = if unrevalidated {
            Some(Refusal::text(
                504,
                "the stored response must be revalidated, and the backend could not answer",
                ctx.outcome,
            ))
        } else {
            Refusal::of_proxy_error(e, ctx.outcome)
        };
        let Some(refusal) = refusal else {
            return gone;
        };
        let code = refusal.status;
        if session.response_written().is_none() {
            if let Err(we) = refuse(session, ctx, refusal).await {
                ::log::debug!("could not send the error answer: {we}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        connections::request_done();
        if let Some(e) = e {
            let req = session.req_header();
            ::log::debug!("{} {}: {e}", req.method, req.uri.path());
        }
        let access_log = ctx
            .routed
            .as_ref()
            .and_then(|r| r.runtime.access_log.clone())
            .or_else(|| self.runtime.load().access_log.clone());
        log::record(session, ctx, access_log.as_deref());
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
