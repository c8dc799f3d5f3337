//! Client connections: how many may be open at once, how long a request header may take to
//! arrive, and how long a kept-alive connection may sit idle.
//!
//! Pingora 0.9.1 bounds none of these for HTTP/1: its header reads time out per read (so a
//! client sending one byte every few seconds is held forever), kept-alive connections wait
//! without a limit, and every accepted connection is served. `Guarded` wraps the proxy app:
//! it refuses connections beyond the cap, and runs each HTTP/1 connection beside a watcher
//! that closes it when a request header is not complete in time. The proxy tells the
//! watcher, through a task-local, when a header has arrived (`header_received`) and when a
//! request is done (`request_done`); idle keep-alive itself is Pingora's (`keepalive_secs`).
//!
//! A client that goes away before its answer is not a proxy error (`client_left`): it is
//! never retried, is logged below `ERROR` at most once a second, and is counted.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use crate::metrics::METRICS;
use crate::throttle::Throttle;

/// The status the access log gives a request whose client left before its answer (nginx's).
pub const CLIENT_LEFT: u16 = 499;

/// Whether a proxy error is the client going away: its connection closed or broke while
/// authgate read the request or wrote the answer.
pub fn client_left(e: &pingora::Error) -> bool {
    use pingora::ErrorType::{ConnectionClosed, ReadError, WriteError};
    e.esource() == &pingora::ErrorSource::Downstream
        && matches!(e.etype(), ConnectionClosed | ReadError | WriteError)
}

static LEFT_LOG: Throttle = Throttle::every_ms(1_000);

/// Counts a client that left, and says so in the log at most once a second.
pub fn count_client_left(e: &pingora::Error, method: &http::Method, path: &str) {
    METRICS.client_disconnects.inc();
    if LEFT_LOG.ready() {
        log::info!(
            "client went away before its answer ({method} {path}: {e}); counted in authgate_client_disconnects_total, logged at most once a second"
        );
    }
}

/// A request header within the operator's limits (`client.max_headers`,
/// `client.max_header_bytes`), or why not (the client gets 431). Pingora itself reads up to
/// 1 MiB and 256 fields; the operator's limits are usually far lower.
pub fn admit(
    req: &pingora::http::RequestHeader,
    limits: &ClientLimits,
) -> Result<(), &'static str> {
    if req.headers.len() > limits.max_headers {
        return Err("too many header fields");
    }
    // Each field counted as `name: value\r\n`, plus the request line.
    let size = req.raw_path().len()
        + req.method.as_str().len()
        + req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > limits.max_header_bytes {
        return Err("request header too large");
    }
    Ok(())
}

/// The limits on client connections, from the `client:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Open client connections per process (all listeners together); more are closed as soon
    /// as they are accepted.
    pub max_connections: usize,
    /// From accepting a connection, or from the end of the previous request plus the
    /// keep-alive timeout, to a complete request header.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request; zero: no keep-alive.
    pub keepalive_timeout: Duration,
    /// Requests served on one connection before it is closed; `None`: no limit.
    pub max_requests: Option<u32>,
    /// The request line and headers, in bytes; larger requests get `431`.
    pub max_header_bytes: usize,
    /// Header fields in one request; more get `431`.
    pub max_headers: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_requests: Some(10_000),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

impl ClientLimits {
    /// `max_requests` as Pingora's `keepalive_request_limit`, which counts the reuses of a
    /// connection after its first request.
    pub fn keepalive_reuses(&self) -> Option<u32> {
        self.max_requests.map(|n| n.saturating_sub(1))
    }

    /// The keep-alive timeout as Pingora takes it: whole seconds, `None` for no keep-alive.
    pub fn keepalive_secs(&self) -> Option<u64> {
        if self.keepalive_timeout.is_zero() {
            None
        } else {
            // Rounded up: a sub-second timeout must not become "no keep-alive".
            Some(self.keepalive_timeout.as_millis().div_ceil(1000) as u64)
        }
    }
}

/// Hands the limits Pingora enforces itself to Pingora, for the whole process: a TLS
/// handshake is part of receiving a request header, so it gets the same deadline (Pingora's
/// own is a fixed 60 s), and the header read stops near `max_header_bytes` (Pingora's own
/// bound is 1 MiB a connection). Called at start and after each reload.
pub fn apply_to_pingora(limits: &ClientLimits) {
    pingora::services::listening::set_downstream_handshake_timeout(limits.header_timeout);
    // Pingora counts raw bytes (request line, separators, line ends) where authgate's 431
    // check counts names and values: twice the limit never cuts a header the check would
    // let through, and bounds what a connection buffers (Pingora's own bound is 1 MiB).
    pingora::protocols::http::v1::common::set_max_request_header_size(
        limits.max_header_bytes.saturating_mul(2),
    );
}

/// How long a connection a stopping listener accepted in its last instant has to send its
/// request (`drain::WINDOW`, which is this; connections waiting for their first byte get the
/// same). `pingora.grace_period_seconds` must stay well above it: Pingora drops the runtime,
/// with every request still on it, when the grace period ends, so `config` warns of a shorter
/// one.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(1);

/// The L4 buffers of a plain (not TLS) client connection. Pingora's default puts a 64 KiB read buffer in
/// front of every accepted socket (tokio's `BufReader`, zero-filled, so resident at once), for
/// an idle connection as much as for a busy one: two thirds of what an open connection cost.
/// A plain HTTP connection does not need it: the HTTP/1 session reads a header into its own
/// buffer (4 KiB, grown as needed) and a body into the caller's, so without it a read goes
/// straight from the socket into that buffer (one copy fewer). A TLS connection keeps it:
/// rustls reads records through it, and doing without it there is not measured.
pub fn plain_l4_buffers() -> pingora::listeners::L4BufferSettings {
    pingora::listeners::L4BufferSettings::default().read(0)
}

/// The current limits, read once per connection (so a reload applies to new connections).
pub trait LimitsSource: Send + Sync {
    fn limits(&self) -> ClientLimits;
}

/// One connection's header deadline, in milliseconds since `start`; 0: none (a request is
/// being served).
struct Conn {
    start: Instant,
    deadline_ms: AtomicU64,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl Conn {
    /// A connection just accepted: its first header is due within `header_timeout`.
    fn accepted(header_timeout: Duration, keepalive_timeout: Duration) -> Conn {
        let conn = Conn {
            start: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            header_timeout,
            keepalive_timeout,
        };
        conn.arm(header_timeout);
        conn
    }

    fn arm(&self, after: Duration) {
        let at = (self.start.elapsed() + after).as_millis() as u64;
        self.deadline_ms.store(at.max(1), Ordering::Relaxed);
    }

    /// Runs `serve`, with this connection in `CONN`, to its end; `None` once the deadline in
    /// force has passed first. The deadline changes only while `serve` runs
    /// (`header_received`, `request_done`), so it is looked at after each poll of `serve`:
    /// while a request is served (no deadline) that is one atomic load, and the timer is
    /// touched only when a deadline is in force. (A `select!` against a sleeping watcher
    /// polled the timer and read the clock on every wake of every request.)
    async fn watch<T>(self: Arc<Self>, serve: impl Future<Output = T>) -> Option<T> {
        let conn = self.clone();
        let mut serve = std::pin::pin!(CONN.scope(self, serve));
        // Registered with the timer on its first poll, not before.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(conn.start));
        let mut armed = 0;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = serve.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let deadline = conn.deadline_ms.load(Ordering::Relaxed);
            if deadline == 0 {
                return Poll::Pending;
            }
            if deadline != armed {
                armed = deadline;
                timer
                    .as_mut()
                    .reset(conn.start + Duration::from_millis(deadline));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

tokio::task_local! {
    static CONN: Arc<Conn>;
}

/// Called by the proxy when a request header is complete: the deadline is off until the
/// request is done.
pub fn header_received() {
    let _ = CONN.try_with(|c| c.deadline_ms.store(0, Ordering::Relaxed));
}

/// Called by the proxy when a request is done: the next header must be complete within the
/// keep-alive timeout (the wait for its first byte, enforced by Pingora) plus the header
/// timeout.
pub fn request_done() {
    let _ = CONN.try_with(|c| c.arm(c.keepalive_timeout + c.header_timeout));
}

/// One open connection's place in `OPEN`, given back when dropped.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        METRICS.client_connections.dec();
    }
}

/// Open client connections of the whole process, every listener counted.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Wraps a server app with the connection cap and the header deadline.
pub struct Guarded<A> {
    app: Arc<A>,
    limits: Arc<dyn LimitsSource>,
    /// The listener offers HTTP/2 without TLS, whose connections carry many requests at once.
    h2c: bool,
}

impl<A> Guarded<A> {
    pub fn new(app: A, limits: Arc<dyn LimitsSource>, h2c: bool) -> Self {
        Guarded {
            app: Arc::new(app),
            limits,
            h2c,
        }
    }

    fn enter(&self, max: usize) -> Option<Slot> {
        if OPEN.fetch_add(1, Ordering::Relaxed) >= max {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        METRICS.client_connections.inc();
        Some(Slot)
    }
}

fn closed_by_limit(reason: &str) {
    METRICS
        .connections_closed
        .with_label_values(&[reason])
        .inc();
}

/// Whether a connection speaks HTTP/2 (by ALPN, or by its preface on an h2c listener).
async fn is_h2(stream: &mut Stream, h2c: bool) -> bool {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return true;
    }
    if !h2c || stream.get_ssl_digest().is_some() {
        return false;
    }
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    matches!(stream.try_peek(&mut buf).await, Ok(true)) && buf == PREFACE
}

/// Waits for a plain connection's first byte (read, then put back for the session to read
/// again): until then Pingora's HTTP session (its two boxed futures, ~14 KiB, and the 4 KiB
/// header buffer) is not built, so a connection that sends nothing costs little. `false`: the
/// client closed or broke the connection before sending anything (Pingora closes those
/// silently too), or the listener stopped and the drain window passed with nothing sent: the
/// proxy's own wait for a request is cut short by its cleanup after that window, and a
/// connection waiting here must not hold a stopping process until `client.header_timeout`.
/// A TLS connection has sent its handshake already and goes straight on.
async fn first_byte(stream: &mut Stream, shutdown: &ShutdownWatch) -> bool {
    if stream.get_ssl_digest().is_some() {
        return true;
    }
    let mut byte = [0u8; 1];
    let peek = stream.try_peek(&mut byte);
    tokio::pin!(peek);
    let mut stopping = shutdown.clone();
    tokio::select! {
        sent = &mut peek => return sent.is_ok(),
        // An error: the server is gone; the window below still bounds the wait.
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    matches!(tokio::time::timeout(DRAIN_WINDOW, peek).await, Ok(Ok(_)))
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        crate::allocator::collect_on_this_thread();
        let limits = self.limits.limits();
        let Some(_slot) = self.enter(limits.max_connections) else {
            closed_by_limit("over_limit");
            log::debug!(
                "client connection refused: {} open (client.max_connections)",
                limits.max_connections
            );
            return None;
        };
        // On an h2c listener this waits for the client's first bytes: bounded like a header.
        let Ok(h2) =
            tokio::time::timeout(limits.header_timeout, is_h2(&mut stream, self.h2c)).await
        else {
            closed_by_limit("header_timeout");
            return None;
        };
        if h2 {
            // HTTP/2 multiplexes requests on one connection; its idle timeout is Pingora's
            // `h2_idle_timeout`, set from the same keep-alive setting.
            return self.app.process_new(stream, shutdown).await;
        }
        let conn = Arc::new(Conn::accepted(
            limits.header_timeout,
            limits.keepalive_timeout,
        ));
        let served = conn
            .watch(async move {
                if !self.h2c && !first_byte(&mut stream, shutdown).await {
                    return None;
                }
                self.app.process_new(stream, shutdown).await
            })
            .await;
        served.unwrap_or_else(|| {
            closed_by_limit("header_timeout");
            log::debug!("client connection closed: request header not complete in time (client.header_timeout)");
            None
        })
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
#[path = "connections/tests.rs"]
mod tests;
