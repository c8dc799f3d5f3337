//! An echo backend: answers every request with what it received, as JSON.
//!
//! The body is hashed as it streams (never held whole), so a 64 MiB upload costs no memory.
//! An `Upgrade` request is answered `101`, then the backend writes one JSON line describing
//! the request and echoes every byte it reads.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::response;

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
    let name: Arc<str> = Arc::from(name);
    move |req| handle(name.clone(), req).boxed()
}

pub async fn handle(name: Arc<str>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut echo = Echo {
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
    match serde_json::to_vec(&echo) {
        Ok(json) => response(200, &[("content-type", "application/json".into())], json),
        Err(e) => response(500, &[], format!("{e}\n")),
    }
}
