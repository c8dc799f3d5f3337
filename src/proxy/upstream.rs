//! A request's way to its backend: the peer for each try, what a failure allows, and the
//! request the backend receives (canonical target and host, identity, forwarding headers).

use http::header::HOST;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use super::ctx::Ctx;
use crate::forwarded::Forwarded;
use crate::metrics;
use crate::request;
use crate::upstreams::hash_input;

/// A failed connect or exchange with a backend of the request's pool.
fn count_upstream_error(ctx: &Ctx) {
    if let Some(r) = &ctx.routed {
        metrics::METRICS
            .upstream_errors
            .with_label_values(&[r.pool.name()])
            .inc();
    }
}

pub fn peer(session: &Session, ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
    let pool =
        ctx.routed.as_ref().map(|r| r.pool.clone()).ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "no pool chosen for request")
        })?;
    let key = hash_input(
        pool.settings().hash_key.as_ref(),
        ctx.client_ip,
        session.req_header(),
        ctx.identity.as_deref(),
    );
    match ctx.attempts.next(&pool, &key) {
        Ok(peer) => Ok(peer),
        Err(why) => Error::e_explain(ErrorType::HTTPStatus(502), why),
    }
}

pub fn after_error(
    peer: &HttpPeer,
    session: &Session,
    e: Box<Error>,
    ctx: &mut Ctx,
    client_reused: bool,
) -> Box<Error> {
    let mut e = e.more_context(format!("Peer: {peer}"));
    if e.esource() == &pingora::ErrorSource::Upstream {
        count_upstream_error(ctx);
    }
    let replayable = session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none();
    ctx.attempts
        .after_failure(&mut e, replayable, client_reused);
    if client_reused && e.retry() {
        log::debug!("backend {peer} closed a reused connection ({e}); retrying on a new one");
    }
    e
}

pub fn after_connect_failure(peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
    count_upstream_error(ctx);
    let retries = ctx.routed.as_ref().map_or(0, |r| r.pool.settings().retries);
    if ctx.attempts.may_retry_connect(retries) {
        log::info!(
            "backend {peer} failed to connect ({:?}); trying another",
            e.etype()
        );
        e.set_retry(true);
    }
    e
}

pub fn prepare(
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &Ctx,
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
    request::single_content_length(upstream_request)?;
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
    // Room for what is added below, made once: the request is a copy of the client's, with no
    // room to spare, and each map would otherwise grow (and rehash) as headers are added.
    let identity_headers = ctx.identity.as_ref().map_or(0, |i| i.header_count());
    upstream_request.reserve_headers(identity_headers + Forwarded::HEADERS);
    if let Some(identity) = &ctx.identity {
        for (name, value) in identity.wire_headers() {
            name.append_to(upstream_request, value)?;
        }
    }
    routed.forwarded.apply(upstream_request)?;
    Ok(())
}
