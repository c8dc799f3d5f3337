//! The JWKS request: one GET on a new connection (once in minutes, nothing to pool), TLS
//! verified against the system's or the configured CA, bounded in time and in bytes.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL, HOST};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

/// Where the keys are, checked by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub addr: SocketAddr,
    pub tls: bool,
    pub sni: String,
    pub host_header: HeaderValue,
    /// Path and query.
    pub path: String,
}

/// A JWKS answer: its body and the `max-age` of its `Cache-Control`, if any.
pub(super) struct Fetched {
    pub body: Vec<u8>,
    pub max_age: Option<Duration>,
}

/// GETs the JWKS; any failure is a short reason for the log and a label for the metric.
pub(super) async fn get(
    connector: &Connector,
    src: &JwksSource,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Fetched, (&'static str, String)> {
    match tokio::time::timeout(timeout, exchange(connector, src, timeout, max_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(("timeout", format!("no whole answer within {timeout:?}"))),
    }
}

async fn exchange(
    connector: &Connector,
    src: &JwksSource,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Fetched, (&'static str, String)> {
    let mut peer = HttpPeer::new(src.addr, src.tls, src.sni.clone());
    peer.options.connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
    let mut req = RequestHeader::build("GET", src.path.as_bytes(), Some(3)).map_err(broken)?;
    req.insert_header(HOST, src.host_header.clone())
        .map_err(broken)?;
    req.insert_header("accept", "application/json")
        .map_err(broken)?;
    let (mut http, _) = connector.get_http_session(&peer).await.map_err(broken)?;
    http.write_request_header(Box::new(req))
        .await
        .map_err(broken)?;
    http.finish_request_body().await.map_err(broken)?;
    http.read_response_header().await.map_err(broken)?;
    let (status, max_age) = match http.response_header() {
        Some(h) => (
            h.status.as_u16(),
            h.headers.get(CACHE_CONTROL).and_then(max_age),
        ),
        None => return Err(("bad_answer", "no response header".into())),
    };
    if status != 200 {
        return Err(("bad_answer", format!("status {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = http.read_response_body().await.map_err(broken)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(("bad_answer", format!("answer over {max_bytes} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body, max_age })
}

/// `max-age=N` of a `Cache-Control` value.
pub(super) fn max_age(v: &HeaderValue) -> Option<Duration> {
    let v = v.to_str().ok()?;
    v.split(',').find_map(|d| {
        let (name, value) = d.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

fn broken(e: Box<pingora::Error>) -> (&'static str, String) {
    ("unreachable", e.to_string())
}
