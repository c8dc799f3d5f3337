//! What a finished request leaves behind: its metrics and its access log line.

use std::time::SystemTime;

use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::access_log::{ms, AccessLog, Entry};
use crate::cache::Lookup;
use crate::connections;
use crate::metrics;
use crate::response_cache;

/// The status the request ended with: the one written, `499` for a client that left before
/// any, `0` for none.
fn status(session: &Session, ctx: &Ctx) -> u16 {
    match session.response_written() {
        Some(r) => r.status.as_u16(),
        None if ctx.client_left => connections::CLIENT_LEFT,
        None => 0,
    }
}

/// Counts the request and writes its access log line to `log` (if logging is on).
pub fn record(session: &Session, ctx: &Ctx, log: Option<&AccessLog>) {
    let status = status(session, ctx);
    let routed = ctx.routed.as_ref();
    metrics::count_request(
        routed.and_then(|r| r.counters.as_ref()),
        status,
        ctx.started.elapsed(),
    );
    // Counted here whether or not a line is written (`record` adds to the cache's series).
    let response_cache = if routed.is_some_and(|r| r.cache.is_some()) {
        response_cache::record(&session.cache.phase(), ctx.cache_bypass)
    } else {
        "-"
    };
    let Some(log) = log else {
        return;
    };
    let req = session.req_header();
    log.log(Entry {
        time: SystemTime::now(),
        client_ip: ctx.client_ip,
        method: req.method.as_str(),
        path: routed
            .and_then(|r| r.rewrite.as_deref())
            .map_or(req.uri.path(), |t| t.split_once('?').map_or(t, |(p, _)| p)),
        query: req.uri.query(),
        status,
        route: routed.map(|r| &*r.label),
        backend: ctx.attempts.last(),
        user_id: ctx.identity.as_ref().and_then(|i| i.user_id()),
        resolver: ctx.outcome.as_str(),
        cache: ctx.lookup.map_or("-", Lookup::as_str),
        response_cache,
        bytes: session.body_bytes_sent(),
        total_ms: ms(ctx.started.elapsed()),
        resolver_ms: ctx.resolver_time.map(ms),
    });
}
