//! The response cache's phases for one request: whether it may use the cache, its key, what
//! a backend's answer does to the cache (hop-by-hop fields, a 304's update, invalidation by a
//! write) and whether it may be stored (the decisions are `response_cache`'s).

use std::time::SystemTime;

use pingora::cache::CachePhase;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::ctx::Ctx;
use crate::credentials::Credentials;
use crate::response_cache;

pub fn enable(session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
    let Some((routed, _)) = ctx.cached_route() else {
        return Ok(());
    };
    let Some(engine) = routed.runtime.response_cache else {
        return Ok(());
    };
    if let Some(why) = response_cache::bypass(session.req_header()) {
        log::debug!("response cache bypassed: {why}");
        ctx.cache_bypass = true;
        return Ok(());
    }
    let cache = &mut session.cache;
    cache.enable(
        engine.store,
        Some(engine.eviction),
        None,
        Some(engine.lock),
        None,
    );
    cache.set_max_file_size_bytes(engine.settings.max_object_bytes);
    Ok(())
}

pub fn key(ctx: &Ctx) -> pingora::Result<pingora::cache::CacheKey> {
    let Some((routed, c)) = ctx.cached_route() else {
        return Error::e_explain(ErrorType::InternalError, "cache key for an uncached route");
    };
    let f = &routed.forwarded;
    let host = f.host.as_ref().map_or(&b""[..], |h| h.as_bytes());
    Ok(response_cache::key(
        c.policy,
        f.proto.as_bytes(),
        host,
        &c.url,
    ))
}

/// A backend's response, before anything caches or forwards it (every route): its hop-by-hop
/// fields go (RFC 9110 §7.6.1, RFC 9111 §3.1); on a cached route, a `304` to a revalidation
/// is kept for `storable`, and a successful write invalidates what it changed (RFC 9111 §4.4)
/// here and, in a fleet, on every instance, before its answer reaches the client.
pub fn from_backend(
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> pingora::Result<()> {
    let cut = match pingora::proxy::strip_response_hop_by_hop_headers(resp) {
        Ok(cut) => cut,
        Err(e) => {
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                format!("the backend's Connection header: {e}"),
            )
        }
    };
    ctx.cut_storage_fields = cut.iter().any(response_cache::decides_storage);
    if resp.status == http::StatusCode::NOT_MODIFIED && session.cache.phase() == CachePhase::Stale {
        ctx.not_modified = Some(Box::new(resp.clone()));
    }
    invalidate(session, resp, ctx);
    Ok(())
}

/// RFC 9111 §4.4: a successful answer to a write drops the stored responses it changed.
fn invalidate(session: &Session, resp: &ResponseHeader, ctx: &Ctx) {
    let Some((routed, c)) = ctx.cached_route() else {
        return;
    };
    let Some(engine) = routed.runtime.response_cache else {
        return;
    };
    let req = session.req_header();
    let host = c.url.split('/').next().unwrap_or_default();
    let urls = response_cache::invalidated(req, resp.status.as_u16(), host, &c.url, &resp.headers);
    for url in urls {
        if let Err(e) = response_cache::purge(engine, routed.runtime.fleet.as_ref(), &url, false) {
            log::debug!("invalidating {url}: {e}");
        }
    }
}

pub fn storable(
    session: &Session,
    resp: &ResponseHeader,
    ctx: &mut Ctx,
) -> pingora::Result<pingora::cache::RespCacheable> {
    let not_modified = ctx.not_modified.take();
    let Some((routed, c)) = ctx.cached_route() else {
        return Ok(pingora::cache::RespCacheable::Uncacheable(
            pingora::cache::NoCacheReason::NeverEnabled,
        ));
    };
    if ctx.cut_storage_fields {
        return Ok(pingora::cache::RespCacheable::Uncacheable(
            pingora::cache::NoCacheReason::Custom("connection"),
        ));
    }
    // A revalidation's 304: Pingora hands over the stored header with five of the 304's fields
    // copied in; RFC 9111 §4.3.4 wants all of them.
    let merged;
    let resp = match (not_modified, session.cache.maybe_cache_meta()) {
        (Some(fresh), Some(meta)) => {
            merged = response_cache::updated_by_304(meta.response_header(), &fresh);
            &merged
        }
        _ => resp,
    };
    let response_time = SystemTime::now();
    let exchange = response_cache::Exchange {
        request_time: ctx.request_time.unwrap_or(response_time),
        response_time,
    };
    let rt = &routed.runtime;
    // A request whose credentials cannot even be read is treated as carrying some.
    let credentials = Credentials::from_request(session.req_header())
        .map_or(true, |c| rt.keys.key(&c).has_credentials);
    let ns = &rt.namespace;
    Ok(response_cache::storable(
        &c.settings,
        c.policy,
        credentials,
        ns,
        resp,
        exchange,
    ))
}
