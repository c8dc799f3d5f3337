//! The `ProxyHttp` implementation: calls the other modules in order for each request.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::cache::Lookup;
use crate::config::Runtime;
use crate::credentials::Credentials;
use crate::forwarded::Forwarded;
use crate::identity::{Answer, Identity, SessionState};
use crate::upstreams::Pool;

/// The proxy. Holds only the swappable runtime snapshot.
pub struct AuthGate {
    runtime: Arc<ArcSwap<Runtime>>,
}

impl AuthGate {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        AuthGate { runtime }
    }
}

/// Per-request state, filled by `request_filter` and read by the later phases.
#[derive(Default)]
pub struct Ctx {
    /// The snapshot this request started with; a reload does not change it midway.
    runtime: Option<Arc<Runtime>>,
    pool: Option<Arc<Pool>>,
    identity: Option<Arc<Identity>>,
    forwarded: Option<Forwarded>,
    /// What happened at the resolver, for the log line.
    outcome: &'static str,
    /// Where the answer came from (hit, miss, coalesced, stale).
    lookup: Option<Lookup>,
}

fn outcome_of(session: SessionState) -> &'static str {
    match session {
        SessionState::Valid => "valid",
        SessionState::Invalid => "invalid",
        SessionState::Anonymous => "anonymous",
    }
}

/// Writes a short plain-text answer from authgate itself.
async fn respond(
    session: &mut Session,
    status: u16,
    reason: &str,
    extra: &[(HeaderName, HeaderValue)],
) -> pingora::Result<bool> {
    let body = Bytes::from(format!("authgate: {reason}\n"));
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    resp.insert_header(CACHE_CONTROL, "no-store")?;
    for (n, v) in extra {
        resp.append_header(n.clone(), v.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for AuthGate {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let rt = self.runtime.load_full();
        // Before anything reads the request: no client copy of the identity namespace survives.
        rt.namespace.strip(session.req_header_mut());

        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let forwarded = rt.trusted.derive(session.req_header(), peer_ip, tls);

        let Some(route) = rt.routes.find(session.req_header().uri.path()) else {
            ctx.outcome = "no_route";
            return respond(session, 404, "no route for this path", &[]).await;
        };
        ctx.pool = Some(route.pool.clone());

        let creds = match Credentials::from_request(session.req_header()) {
            Ok(c) => c,
            Err(e) => {
                ctx.outcome = "bad_credentials";
                return respond(session, 400, &e.to_string(), &[]).await;
            }
        };

        let key = rt.keys.key(&creds);
        let fetch = {
            let rt = rt.clone();
            let forwarded = forwarded.clone();
            move || async move { rt.resolver.resolve(&creds, &forwarded, &rt.namespace).await }
        };
        let (outcome, lookup) = rt.cache.resolve(&key, fetch).await;
        ctx.lookup = Some(lookup);
        match outcome {
            Ok(Answer::Denied { status, headers }) => {
                ctx.outcome = "denied";
                let reason = if status == 401 {
                    "not authenticated"
                } else {
                    "forbidden"
                };
                respond(session, status, reason, &headers).await
            }
            Ok(Answer::Identity(identity)) => {
                ctx.outcome = outcome_of(identity.session());
                ctx.identity = Some(identity);
                ctx.forwarded = Some(forwarded);
                ctx.runtime = Some(rt);
                Ok(false)
            }
            Err(e) => {
                ctx.outcome = e.kind();
                let req = session.req_header();
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
                respond(session, e.status(), e.client_reason(), &[]).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let pool = ctx.pool.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no pool chosen for request")
        })?;
        match pool.select() {
            Some(peer) => Ok(Box::new(peer)),
            None => Error::e_explain(
                ErrorType::HTTPStatus(502),
                format!("no backend available in upstream `{}`", pool.name()),
            ),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let Some(rt) = ctx.runtime.as_ref() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "request reached upstream without a resolve",
            );
        };
        // Again on the copy that goes upstream, after Pingora's own header handling.
        rt.namespace.strip(upstream_request);
        if let Some(identity) = &ctx.identity {
            for (name, value) in identity.headers() {
                upstream_request.append_header(name, value)?;
            }
        }
        if let Some(fwd) = &ctx.forwarded {
            fwd.apply(upstream_request)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let forward = ctx.runtime.as_ref().is_some_and(|rt| rt.forward_set_cookie);
        if let (true, Some(identity)) = (forward, &ctx.identity) {
            for v in identity.set_cookie() {
                upstream_response.append_header(SET_COOKIE, v.clone())?;
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let cache = ctx.lookup.map_or("-", Lookup::as_str);
        let (method, path, outcome) = (&req.method, req.uri.path(), ctx.outcome);
        match e {
            Some(e) => {
                log::info!(target: "authgate::access", "{method} {path} {status} resolver={outcome} cache={cache} error={e}")
            }
            None => {
                log::debug!(target: "authgate::access", "{method} {path} {status} resolver={outcome} cache={cache}")
            }
        }
    }
}
