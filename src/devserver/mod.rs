//! Development peers shipped with authgate: a resolver stand-in and an echo backend.
//!
//! They serve `make run`, the tests and the benchmarks. Both are small hyper servers, kept
//! apart from the proxy so that authgate is always tested against a peer it does not share
//! code paths with.

pub mod echo;
pub mod login;
pub mod page;
pub mod standin;
pub mod tokens;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Accepts connections until the task is dropped; counts them in `connections`.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    connections: Arc<AtomicU64>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.fetch_add(1, Ordering::Relaxed);
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let builder = {
                let mut b = http1::Builder::new();
                // Like Go's net/http, which Authgear uses: canonical header case on the wire.
                b.title_case_headers(true);
                b
            };
            let result = match acceptor {
                Some(acc) => match acc.accept(stream).await {
                    Ok(s) => {
                        builder
                            .serve_connection(TokioIo::new(s), svc)
                            .with_upgrades()
                            .await
                    }
                    Err(e) => {
                        log::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = result {
                log::debug!("connection ended with an error: {e}");
            }
        });
    }
}

pub use crate::tls::server_config as tls_config;

/// A response with a fixed body.
pub(crate) fn response(
    status: u16,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
