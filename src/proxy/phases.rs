//! The steps of `request_filter` after admission: the route (the canonical request and the
//! most specific route for it), then who is calling and what the route's policy says of it.
//! Each step calls the module that decides and returns the route's state or the refusal.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use pingora::http::RequestHeader;

use super::ctx::{CachedRoute, Ctx, Routed};
use super::refusal::{resolve_failure_level, Refusal};
use crate::cache::{Lookup, Vouched};
use crate::credentials::Credentials;
use crate::fleet::unix_ms;
use crate::forwarded::Forwarded;
use crate::identity::{Answer, Identity};
use crate::jwt::{Defer, Verdict, STATS};
use crate::outcome::Outcome;
use crate::policy::{self, login_location, wants_html};
use crate::request;
use crate::routes::Route;
use crate::runtime::Runtime;

/// The canonical request and its route, and what later phases need of it.
pub fn route<'r>(
    rt: &'r Arc<Runtime>,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    tls: bool,
) -> Result<(&'r Route, Routed), Refusal> {
    // One reading of the request line and host, used by everything below.
    let canon = request::settle(req).map_err(|e| Refusal::of_request_error(&e))?;
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

/// Who is calling: the credentials, looked up in the cache or resolved.
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
    // Kept for local validation: `creds` moves into the resolver's fetch.
    let authorization = rt.jwt.as_ref().and(creds.authorization.clone());
    let authorization = authorization.as_ref();
    if logout {
        ctx.logout = Some(key);
    }
    let fetch = {
        let (rt, forwarded) = (rt.clone(), forwarded.clone());
        move || async move { rt.resolver.resolve(&creds, &forwarded, &rt.namespace).await }
    };
    let started = Instant::now();
    let (answer, lookup) = match &rt.jwt {
        None => rt.cache.resolve(&key, fetch).await,
        Some(jwt) => {
            let mut offered = false;
            let vouch = || match jwt.check(authorization, &rt.namespace, unix_ms() / 1000) {
                Verdict::Accepted(a) => {
                    offered = true;
                    Some(Vouched {
                        identity: a.identity,
                        issued_ms: a.issued_at.saturating_mul(1000),
                        expires_ms: a.expires_at.saturating_mul(1000),
                    })
                }
                Verdict::Deferred(_) | Verdict::NoBearer => None,
            };
            let (answer, lookup) = rt.cache.resolve_vouched(&key, vouch, fetch).await;
            match lookup {
                Lookup::Local => STATS.accepted(),
                _ if offered => STATS.deferred(Defer::Purged),
                _ => {}
            }
            (answer, lookup)
        }
    };
    ctx.resolver_time = Some(started.elapsed());
    ctx.lookup = Some(lookup);
    match answer {
        Ok(Answer::Identity(identity)) => Ok(identity),
        Ok(denied) => Err(Refusal::of_denial(denied).unwrap_or_else(|| {
            Refusal::text(502, "bad answer from identity resolver", Outcome::BadAnswer)
        })),
        Err(e) => {
            let refusal = Refusal::of_resolve_error(&e);
            log::log!(
                resolve_failure_level(lookup),
                "{} {}: {e}; answering {} (cache: {})",
                req.method,
                req.uri.path(),
                refusal.status,
                lookup.as_str()
            );
            Err(refusal)
        }
    }
}

/// The caller's identity, and what the route's policy says of it.
pub async fn authorize(
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
