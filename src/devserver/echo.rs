//! An echo backend: answers every request with what it received, as JSON.
//!
//! The body is hashed as it streams (never held whole), so a 64 MiB upload costs no memory.
//! An `Upgrade` request is answered `101`, then the backend writes one JSON line describing
//! the request and echoes every byte it reads.
//!
//! For cache tests and benchmarks, the query can shape the answer: each `h-<name>=<value>`
//! pair (percent-decoded) becomes a response header, `status=<code>` sets the status, and a
//! request whose `If-None-Match` equals the `h-etag` value is answered `304` without a body.
//! `seq` numbers the requests this backend has served, so a cached copy shows an old one.
//!
//! A browser (`Accept: text/html`) gets the same report as a small HTML page (`page`). With a
//! logout URL, `/logout` answers `303` there, as an app's sign-out hands over to Authgear's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{page, response};

/// What the echo backend reports for one request.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct Echo {
    /// Which echo server answered (its `--name`, by default its address).
    pub served_by: String,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    pub trailers: Vec<(String, String)>,
    /// This backend's count of requests served, this one included.
    #[serde(default)]
    pub seq: u64,
}

impl Echo {
    /// All values of a header, by case-insensitive name.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A handler that signs its answers with `name`.
pub fn handler(
    name: &str,
) -> impl Fn(Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>>
       + Clone
       + Send
       + Sync
       + 'static {
    handler_with(name, None)
}

/// `handler`, sending `/logout` to `logout_url` when there is one.
pub fn handler_with(
    name: &str,
    logout_url: Option<String>,
) -> impl Fn(Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>>
       + Clone
       + Send
       + Sync
       + 'static {
    let name: Arc<str> = Arc::from(name);
    let served = Arc::new(AtomicU64::new(0));
    let logout: Option<Arc<str>> = logout_url.map(Arc::from);
    move |req| {
        if let (Some(to), "/logout") = (&logout, req.uri().path()) {
            let to = to.to_string();
            return async move { response(303, &[("location", to)], Bytes::new()) }.boxed();
        }
        handle(name.clone(), served.clone(), req).boxed()
    }
}

/// Whether the client reads HTML (a browser).
fn wants_html(h: &http::HeaderMap) -> bool {
    h.get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// The response headers and status the query asks for (see the module's note).
fn shaped(uri: &http::Uri) -> (u16, Vec<(String, String)>) {
    let (mut status, mut headers) = (200, Vec::new());
    for pair in uri.query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned();
        if let Some(name) = k.strip_prefix("h-") {
            headers.push((name.to_string(), v));
        } else if k == "status" {
            status = v.parse().unwrap_or(200);
        }
    }
    (status, headers)
}

pub async fn handle(
    name: Arc<str>,
    served: Arc<AtomicU64>,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let seq = served.fetch_add(1, Ordering::SeqCst) + 1;
    let (status, extra) = shaped(req.uri());
    let etag = extra.iter().find(|(n, _)| n.eq_ignore_ascii_case("etag"));
    if let (Some((_, etag)), Some(inm)) = (etag, req.headers().get(http::header::IF_NONE_MATCH)) {
        if inm.as_bytes() == etag.as_bytes() {
            let refs: Vec<(&str, String)> =
                extra.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
            return response(304, &refs, Bytes::new());
        }
    }
    let mut echo = Echo {
        seq,
        served_by: name.to_string(),
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: pairs(req.headers()),
        body_len: 0,
        body_sha256: String::new(),
        trailers: Vec::new(),
    };
    if req.headers().contains_key(http::header::UPGRADE) {
        let protocol = req.headers()[http::header::UPGRADE].clone();
        let upgrade = hyper::upgrade::on(&mut req);
        let line = serde_json::to_vec(&echo).unwrap_or_default();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let io = hyper_util::rt::TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(io);
            if w.write_all(&line).await.is_err() || w.write_all(b"\n").await.is_err() {
                return;
            }
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let mut resp = response(101, &[("connection", "upgrade".into())], Bytes::new());
        resp.headers_mut().insert(http::header::UPGRADE, protocol);
        return resp;
    }
    let html = wants_html(req.headers());
    let mut hasher = Sha256::new();
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return response(400, &[], format!("body error: {e}\n")),
        };
        match frame.into_data() {
            Ok(data) => {
                echo.body_len += data.len() as u64;
                hasher.update(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    echo.trailers.extend(pairs(&t));
                }
            }
        }
    }
    echo.body_sha256 = hex::encode(hasher.finalize());
    if html {
        let mut headers = vec![
            ("content-type", "text/html; charset=utf-8".to_string()),
            ("cache-control", "no-store".to_string()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.as_str(), v.clone())));
        return response(status, &headers, page::render(&echo, "x-authgear-"));
    }
    let mut headers = vec![("content-type", "application/json".to_string())];
    headers.extend(extra.iter().map(|(n, v)| (n.as_str(), v.clone())));
    match serde_json::to_vec(&echo) {
        Ok(json) => response(status, &headers, json),
        Err(e) => response(500, &[], format!("{e}\n")),
    }
}
