//! The operator's endpoint on its own listener: cache purge and flush, cache counters, health
//! and readiness, and the metrics page, composed here from each part's own series.
//!
//! Every route but `GET /health`, `GET /ready` and `GET /metrics` needs
//! `Authorization: Bearer <token>`; the token comes from a file or an environment variable,
//! never from the main YAML.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::cache::PurgeCause;
use crate::credentials::Credentials;
use crate::drain::Readiness;
use crate::fleet;
use crate::jwt;
use crate::metrics::{self, METRICS};
use crate::response_cache;
use crate::runtime::Runtime;
use crate::upstreams;
use crate::webhook::{Accepted, Receiver};

/// Purge and flush bodies are small JSON documents.
const MAX_BODY: usize = 64 * 1024;

pub struct Admin {
    runtime: Arc<ArcSwap<Runtime>>,
    /// Remembers event ids across reloads.
    hooks: Receiver,
    readiness: Readiness,
}

impl Admin {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, readiness: Readiness) -> Self {
        Admin {
            runtime,
            hooks: Receiver::default(),
            readiness,
        }
    }
}

/// `POST /cache/purge`: the credentials a client sends, as it sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    /// The `Authorization` header value, e.g. `Bearer <access token>`.
    #[serde(default)]
    authorization: Option<String>,
    /// The `Cookie` header value, e.g. `session=...; app_session=...`.
    #[serde(default)]
    cookie: Option<String>,
    /// Cookie values by name, as an alternative to `cookie`.
    #[serde(default)]
    cookies: std::collections::BTreeMap<String, String>,
    /// Every cached answer of this user (`x-authgear-user-id`).
    #[serde(default)]
    user_id: Option<String>,
    /// The response cache: the object stored for this URL (`http://host/path?query`), all
    /// its variants.
    #[serde(default)]
    url: Option<String>,
    /// The response cache: every object whose URL starts with this.
    #[serde(default)]
    prefix: Option<String>,
}

fn reply(status: StatusCode, body: String) -> Response<Vec<u8>> {
    let ctype = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut b = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ctype)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::CONTENT_LENGTH, body.len());
    if status == StatusCode::UNAUTHORIZED {
        b = b.header(
            http::header::WWW_AUTHENTICATE,
            "Bearer realm=\"authgate-admin\"",
        );
    }
    b.body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_error(status: StatusCode, why: &str) -> Response<Vec<u8>> {
    reply(status, format!("{}\n", serde_json::json!({ "error": why })))
}

fn authorized(session: &ServerSession, token: &[u8]) -> bool {
    let Some(given) = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
    else {
        return false;
    };
    let given = given.as_bytes();
    if given.len() < 7 || !given[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    given[7..].trim_ascii().ct_eq(token).into()
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body over 64 KiB",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read body: {e}"),
                ))
            }
        }
    }
}

/// The credentials a purge request names, as a client would have sent them.
fn purge_credentials(req: PurgeRequest) -> Result<Credentials, String> {
    if req.authorization.is_none() && req.cookie.is_none() && req.cookies.is_empty() {
        return Err("give authorization, cookie or cookies, or user_id".into());
    }
    let mut cookie = req.cookie.unwrap_or_default();
    for (name, value) in &req.cookies {
        if !cookie.is_empty() {
            cookie.push_str("; ");
        }
        cookie.push_str(name);
        cookie.push('=');
        cookie.push_str(value);
    }
    let header = |v: &str, what: &str| {
        http::HeaderValue::from_str(v).map_err(|_| format!("{what} is not a valid header value"))
    };
    Ok(Credentials {
        authorization: req
            .authorization
            .as_deref()
            .map(|a| header(a, "authorization"))
            .transpose()?,
        cookie: (!cookie.is_empty())
            .then(|| header(&cookie, "cookie"))
            .transpose()?,
        user_agent: None,
    })
}

impl Admin {
    fn purge(&self, rt: &Runtime, body: &[u8]) -> Response<Vec<u8>> {
        let req: PurgeRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
        };
        let credentials = req.authorization.is_some()
            || req.cookie.is_some()
            || !req.cookies.is_empty()
            || req.user_id.is_some();
        if let Some((target, prefix)) = match (&req.url, &req.prefix) {
            (Some(u), None) => Some((u, false)),
            (None, Some(p)) => Some((p, true)),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return json_error(StatusCode::BAD_REQUEST, "give url or prefix, not both")
            }
        } {
            if credentials {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "give url or prefix alone (the response cache), or credentials or user_id",
                );
            }
            let Some(engine) = rt.response_cache else {
                return json_error(StatusCode::BAD_REQUEST, "no route has a response cache");
            };
            return match response_cache::purge(engine, rt.fleet.as_ref(), target, prefix) {
                Ok(n) => {
                    log::info!("admin: purged {n} stored responses ({target})");
                    reply(
                        StatusCode::OK,
                        format!("{}\n", serde_json::json!({ "purged": n })),
                    )
                }
                Err(why) => json_error(StatusCode::BAD_REQUEST, &why),
            };
        }
        if let Some(user) = req.user_id.clone() {
            if req.authorization.is_some() || req.cookie.is_some() || !req.cookies.is_empty() {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "give user_id alone, or credentials",
                );
            }
            let n = rt.cache.purge_user(&user, PurgeCause::AdminUser);
            log::info!("admin: purged {n} cached answers of a user");
            return reply(
                StatusCode::OK,
                format!("{}\n", serde_json::json!({ "purged": n })),
            );
        }
        let creds = match purge_credentials(req) {
            Ok(c) => c,
            Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
        };
        let key = rt.keys.key(&creds);
        let purged = rt.cache.purge(&key, PurgeCause::AdminCredential);
        log::info!("admin: purged {key:?} (was cached: {purged})");
        reply(
            StatusCode::OK,
            format!("{}\n", serde_json::json!({ "purged": purged })),
        )
    }

    /// `POST /hooks/authgear`: authenticated by its signature, not the bearer token.
    async fn webhook(&self, rt: &Runtime, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Some(settings) = rt.webhook.as_ref() else {
            return json_error(StatusCode::NOT_FOUND, "the webhook receiver is off");
        };
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(resp) => {
                let reason = if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "unreadable"
                };
                METRICS
                    .webhook_rejections
                    .with_label_values(&[reason])
                    .inc();
                log::warn!("webhook: refused ({reason})");
                return resp;
            }
        };
        let signature = session
            .req_header()
            .headers
            .get("x-authgear-body-signature")
            .map(|v| v.as_bytes().to_vec());
        match self
            .hooks
            .receive(settings, &rt.cache, signature.as_deref(), &body)
        {
            Ok(accepted) => {
                let (result, body) = match accepted {
                    Accepted::Purged { users, answers } => (
                        "purged",
                        serde_json::json!({ "users": users, "purged": answers }),
                    ),
                    Accepted::Replayed => ("replayed", serde_json::json!({ "ignored": "replay" })),
                    Accepted::Ignored => {
                        ("ignored", serde_json::json!({ "ignored": "event type" }))
                    }
                };
                METRICS.webhook_events.with_label_values(&[result]).inc();
                reply(StatusCode::OK, format!("{body}\n"))
            }
            Err(r) => {
                METRICS
                    .webhook_rejections
                    .with_label_values(&[r.as_str()])
                    .inc();
                log::warn!("webhook: refused ({}): {}", r.as_str(), r.explain());
                let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let mut resp = json_error(status, r.explain());
                // Signed, not a bearer token: no Bearer challenge.
                resp.headers_mut().remove(http::header::WWW_AUTHENTICATE);
                resp
            }
        }
    }

    fn stats(&self, rt: &Runtime) -> Response<Vec<u8>> {
        let stats = rt.cache.stats();
        let mut map: serde_json::Map<String, serde_json::Value> = stats
            .snapshot()
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let purges: serde_json::Map<String, serde_json::Value> = stats
            .purges()
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        map.insert("purges".into(), purges.into());
        if let Some(fleet) = &rt.fleet {
            map.insert("fleet".into(), fleet_status(fleet));
        }
        reply(
            StatusCode::OK,
            format!("{}\n", serde_json::Value::Object(map)),
        )
    }
}

/// Fleet mode at a glance: connected or not, where, and its counters.
fn fleet_status(fleet: &fleet::Fleet) -> serde_json::Value {
    use crate::fleet::STATS;
    let counters = |pairs: &[(&str, u64)]| -> serde_json::Value {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let g = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    serde_json::json!({
        "up": STATS.up.load(std::sync::atomic::Ordering::Relaxed) == 1,
        "redis": fleet.settings().url,
        "prefix": fleet.settings().prefix,
        "shared_cache": fleet.settings().shared_cache,
        "bus": counters(&STATS.bus()),
        "lookups": counters(&STATS.lookups()),
        "writes": g(&STATS.writes),
        "resyncs": g(&STATS.resyncs),
    })
}

/// The metrics page: the registered series, then each part's own (the answer cache, the
/// fleet and the response cache when configured, the pools' health), in this order.
fn metrics_page(rt: &Runtime) -> String {
    let mut text = metrics::render();
    rt.cache.stats().render(&mut text);
    if let Some(v) = &rt.jwt {
        jwt::STATS.render(v, &mut text);
    }
    if rt.fleet.is_some() {
        fleet::STATS.render(&mut text);
    }
    if let Some(engine) = rt.response_cache {
        response_cache::render(engine, &mut text);
    }
    upstreams::render_health(&rt.pools, &mut text);
    text
}

/// Every pool's backends and whether each is up: `{"app": {"127.0.0.1:3000": "up"}}`.
fn upstreams(rt: &Runtime) -> Response<Vec<u8>> {
    let pools: serde_json::Map<String, serde_json::Value> = rt
        .pools
        .iter()
        .map(|p| {
            let backends: serde_json::Map<String, serde_json::Value> = p
                .health()
                .into_iter()
                .map(|(addr, up)| (addr.to_string(), (if up { "up" } else { "down" }).into()))
                .collect();
            (p.name().to_string(), backends.into())
        })
        .collect();
    reply(
        StatusCode::OK,
        format!("{}\n", serde_json::Value::Object(pools)),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = self.runtime.load_full();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        // Liveness: the process answers. Nothing outside it (the resolver, Redis, backends)
        // makes it fail, or an outage elsewhere would restart every instance at once.
        if path == "/health" {
            return reply(StatusCode::OK, "ok\n".into());
        }
        // Readiness: fails from SIGTERM on, while the listeners still serve (see `drain`).
        if path == "/ready" {
            return if self.readiness.draining() {
                reply(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
            } else {
                reply(StatusCode::OK, "ready\n".into())
            };
        }
        if path == "/hooks/authgear" {
            if method != Method::POST {
                return json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            return self.webhook(&rt, session).await;
        }
        if path == "/metrics" {
            let mut r = reply(StatusCode::OK, metrics_page(&rt));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        let Some(token) = rt.admin_token.as_deref() else {
            return json_error(StatusCode::NOT_FOUND, "the admin endpoint is off");
        };
        if !authorized(session, token) {
            log::warn!("admin: unauthorised {method} {path}");
            return json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
        match (path.as_str(), method) {
            ("/cache/purge", Method::POST) => match read_body(session).await {
                Ok(body) => self.purge(&rt, &body),
                Err(resp) => resp,
            },
            ("/cache/flush", Method::POST) => {
                let n = rt.cache.flush();
                log::info!("admin: flushed the cache ({n} answers)");
                reply(
                    StatusCode::OK,
                    format!("{}\n", serde_json::json!({ "flushed": n })),
                )
            }
            ("/cache/stats", Method::GET) => self.stats(&rt),
            ("/upstreams", Method::GET) => upstreams(&rt),
            ("/cache/purge" | "/cache/flush" | "/cache/stats" | "/upstreams", _) => {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => json_error(StatusCode::NOT_FOUND, "no such admin route"),
        }
    }
}
