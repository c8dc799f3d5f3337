//! The response cache's phases for one request: whether it may use the cache, its key, and
//! whether a backend's answer may be stored (the decisions are `response_cache`'s).

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

pub fn storable(
    session: &Session,
    resp: &ResponseHeader,
    ctx: &Ctx,
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
    let ns = &rt.namespace;
    Ok(response_cache::storable(
        &c.settings,
        c.policy,
        credentials,
        ns,
        resp,
    ))
}
