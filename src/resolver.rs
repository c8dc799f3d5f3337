//! The resolve subrequest: pooled connections to the resolver, timeouts, TLS/SNI, reading the reply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION, COOKIE, HOST, USER_AGENT};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::credentials::Credentials;
use crate::forwarded::{Forwarded, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::identity::{Answer, AnswerError, Namespace, SessionState};
use crate::metrics;
use crate::upstreams::{fresh_group_key, HealthSettings, LbKind, Pool, PoolSettings, TlsSettings};

/// A resolver reply body larger than this is not drained: the connection is dropped instead.
const MAX_BODY: usize = 64 * 1024;

/// The name the resolver's own pool goes by in `/upstreams` and the health metrics; no
/// upstream may take it.
pub const POOL_NAME: &str = "resolver";

/// Every label of `authgate_resolver_calls_total`: how a call ended (the access log's words for
/// the same cases, `outcome::Outcome`, agree; a test there checks it).
pub const CALL_OUTCOMES: [&str; 8] = [
    "valid",
    "invalid",
    "anonymous",
    "denied",
    "unreachable",
    "timeout",
    "broken",
    "bad_answer",
];

/// How a call ended, as `authgate_resolver_calls_total` labels it.
pub fn call_outcome(result: &Result<Answer, ResolveError>) -> &'static str {
    match result {
        Ok(Answer::Identity(i)) => match i.session() {
            SessionState::Valid => "valid",
            SessionState::Invalid => "invalid",
            SessionState::Anonymous => "anonymous",
        },
        Ok(Answer::Denied { .. }) => "denied",
        Err(e) => e.kind(),
    }
}

/// Where and how to reach the resolver, validated by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// The resolver instances: the URL's address, or `resolver.backends`.
    pub addrs: Vec<SocketAddr>,
    /// Active checks of the instances (useful with more than one).
    pub health: Option<HealthSettings>,
    pub tls: bool,
    pub sni: String,
    pub host_header: HeaderValue,
    /// Path and query of the resolve endpoint.
    pub path: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub total_timeout: Duration,
    pub idle_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// Why a resolve failed. Each maps to one client status in `status()`; none to 401.
#[derive(Debug)]
pub enum ResolveError {
    /// No connection could be made (refused, no route, connect timeout, TLS handshake).
    Unreachable(Box<Error>),
    /// The resolver did not answer in time.
    Timeout(String),
    /// The connection broke after it was made, before a whole answer arrived.
    Broken(Box<Error>),
    /// An answer arrived but is not one authgate can use.
    Answer(AnswerError),
}

impl ResolveError {
    pub fn status(&self) -> u16 {
        match self {
            ResolveError::Unreachable(_) => 503,
            ResolveError::Timeout(_) => 504,
            ResolveError::Broken(_) | ResolveError::Answer(_) => 502,
        }
    }

    /// The short reason given to the client; the log gets `Display`.
    pub fn client_reason(&self) -> &'static str {
        match self {
            ResolveError::Unreachable(_) => "identity resolver unreachable",
            ResolveError::Timeout(_) => "identity resolver timed out",
            ResolveError::Broken(_) => "identity resolver connection failed",
            ResolveError::Answer(_) => "bad answer from identity resolver",
        }
    }

    /// A label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ResolveError::Unreachable(_) => "unreachable",
            ResolveError::Timeout(_) => "timeout",
            ResolveError::Broken(_) => "broken",
            ResolveError::Answer(_) => "bad_answer",
        }
    }
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Unreachable(e) => write!(f, "resolver unreachable: {e}"),
            ResolveError::Timeout(what) => write!(f, "resolver timed out: {what}"),
            ResolveError::Broken(e) => write!(f, "resolver connection failed: {e}"),
            ResolveError::Answer(e) => write!(f, "{e}"),
        }
    }
}

/// A client for one resolver endpoint (one or several instances), with its own connections.
pub struct Resolver {
    settings: ResolverSettings,
    /// The instances, balanced round robin; one that refuses connections is skipped.
    pool: Arc<Pool>,
    connector: Connector,
}

impl Resolver {
    pub fn new(settings: ResolverSettings, server: &ServerConf) -> Result<Resolver, String> {
        let mut opts = ConnectorOptions::from_server_conf(server);
        if let Some(ca) = &settings.ca_file {
            opts.ca_file = Some(ca.display().to_string());
        }
        let pool = Pool::new(PoolSettings {
            name: POOL_NAME.into(),
            backends: settings.addrs.iter().map(|a| (*a, 1)).collect(),
            lb: LbKind::RoundRobin,
            hash_key: None,
            connect_timeout: settings.connect_timeout,
            read_timeout: settings.read_timeout,
            write_timeout: settings.read_timeout,
            // The resolver's CA file is the connector's; verification is never off here.
            tls: settings.tls.then(|| TlsSettings {
                sni: settings.sni.clone(),
                verify: true,
                ca: None,
            }),
            retries: settings.addrs.len().saturating_sub(1),
            health: settings.health.clone(),
        })?;
        // Every outcome's series starts at zero: a rate() or an alert on one has a series to
        // read before the first such call.
        for outcome in CALL_OUTCOMES {
            metrics::METRICS
                .resolver_calls
                .with_label_values(&[outcome]);
        }
        Ok(Resolver {
            connector: Connector::new(Some(opts)),
            pool: Arc::new(pool),
            settings,
        })
    }

    /// The resolver instances as a pool, for health checks and the admin endpoint.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn settings(&self) -> &ResolverSettings {
        &self.settings
    }

    /// Asks the resolver who sent a request with these credentials.
    pub async fn resolve(
        &self,
        creds: &Credentials,
        fwd: &Forwarded,
        ns: &Namespace,
    ) -> Result<Answer, ResolveError> {
        let started = std::time::Instant::now();
        let result = self.call(creds, fwd, ns).await;
        metrics::resolver_call(call_outcome(&result), started.elapsed());
        result
    }

    async fn call(
        &self,
        creds: &Credentials,
        fwd: &Forwarded,
        ns: &Namespace,
    ) -> Result<Answer, ResolveError> {
        let req = self.request(creds, fwd).map_err(ResolveError::Broken)?;
        let total = self.settings.total_timeout;
        match tokio::time::timeout(total, self.exchange(req, ns)).await {
            Ok(r) => r?.map_err(ResolveError::Answer),
            Err(_) => Err(ResolveError::Timeout(format!("no answer within {total:?}"))),
        }
    }

    /// The subrequest: always GET, never a body, only the headers the resolver reads.
    fn request(&self, creds: &Credentials, fwd: &Forwarded) -> pingora::Result<RequestHeader> {
        let mut req = RequestHeader::build_no_case("GET", self.settings.path.as_bytes(), Some(8))?;
        req.insert_header(HOST, self.settings.host_header.clone())?;
        for (name, value) in [
            (AUTHORIZATION, &creds.authorization),
            (COOKIE, &creds.cookie),
            (USER_AGENT, &creds.user_agent),
            (X_FORWARDED_FOR, &fwd.for_),
            (X_FORWARDED_HOST, &fwd.host),
        ] {
            if let Some(v) = value {
                req.insert_header(name, v.clone())?;
            }
        }
        req.insert_header(X_FORWARDED_PROTO, fwd.proto.clone())?;
        Ok(req)
    }

    /// The round trip, with failover and a retry of a dropped reused connection; the answer
    /// as read (or why it is not one).
    async fn exchange(
        &self,
        req: RequestHeader,
        ns: &Namespace,
    ) -> Result<Result<Answer, AnswerError>, ResolveError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        // After a reused connection failed: the instance to send to again, on a new connection.
        let mut again: Option<Box<HttpPeer>> = None;
        loop {
            let (mut peer, fresh) = match again.take() {
                Some(peer) => (peer, true),
                None => match self.pool.select(b"", &tried) {
                    Some(peer) => (peer, false),
                    None => {
                        return Err(ResolveError::Unreachable(Error::explain(
                            ErrorType::ConnectError,
                            if tried.is_empty() {
                                "no resolver instance is up"
                            } else {
                                "every resolver instance failed"
                            },
                        )))
                    }
                },
            };
            peer.options.idle_timeout = Some(self.settings.idle_timeout);
            // The pool files idle connections by the peer's hash, group key included: under a
            // group of its own the checkout finds none and connects. Released under the
            // instance's own hash (`peer`), the new connection joins the pool.
            let checkout = if fresh {
                let mut new = peer.clone();
                new.group_key = fresh_group_key();
                self.connector.get_http_session(&*new).await
            } else {
                self.connector.get_http_session(&*peer).await
            };
            let (mut http, reused) = match checkout {
                Ok(s) => s,
                Err(e) => {
                    // Another instance may answer: a connect failure has sent nothing.
                    if let Some(a) = peer._address.as_inet() {
                        tried.push(*a);
                    }
                    if tried.len() < self.settings.addrs.len() {
                        log::warn!("resolver instance {peer} unreachable ({e}); trying another");
                        continue;
                    }
                    return Err(ResolveError::Unreachable(e));
                }
            };
            http.set_read_timeout(Some(self.settings.read_timeout));
            http.set_write_timeout(Some(self.settings.read_timeout));
            match round_trip(&mut http, req.clone(), ns).await {
                Ok(Reply::Complete(answer)) => {
                    self.connector
                        .release_http_session(http, &*peer, Some(self.settings.idle_timeout))
                        .await;
                    return Ok(answer);
                }
                // The connection is dropped, not pooled: its state is unknown.
                Ok(Reply::Unusable(why)) => {
                    return Err(ResolveError::Answer(AnswerError::Malformed(why)))
                }
                // A reused keep-alive connection the resolver closed meanwhile: a GET without
                // a body is safe to send again. Not on another pooled connection: when the
                // resolver (or a load balancer before it) closes idle connections, it closes
                // them all, and the next one is as stale as this one. A new connection is
                // never reused, so this happens once per resolve.
                Err(Failure::BeforeAnswer(e)) if reused && !is_timeout(&e) => {
                    metrics::METRICS.resolver_retries.inc();
                    log::debug!("resolver: reused connection failed ({e}), retrying on a new one");
                    again = Some(peer);
                }
                Err(Failure::BeforeAnswer(e) | Failure::AfterAnswer(e)) => {
                    return Err(if is_timeout(&e) {
                        ResolveError::Timeout(e.to_string())
                    } else {
                        ResolveError::Broken(e)
                    })
                }
            }
        }
    }
}

enum Reply {
    /// The exchange ended cleanly (the connection can be reused): the answer it carried.
    Complete(Result<Answer, AnswerError>),
    Unusable(String),
}

enum Failure {
    BeforeAnswer(Box<Error>),
    AfterAnswer(Box<Error>),
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

async fn round_trip(
    http: &mut HttpSession,
    req: RequestHeader,
    ns: &Namespace,
) -> Result<Reply, Failure> {
    http.write_request_header(Box::new(req))
        .await
        .map_err(Failure::BeforeAnswer)?;
    http.finish_request_body()
        .await
        .map_err(Failure::BeforeAnswer)?;
    http.read_response_header()
        .await
        .map_err(Failure::BeforeAnswer)?;
    // Read from the header in place: no copy of the resolver's header map.
    let (status, answer) = match http.response_header() {
        Some(h) => {
            let status = h.status.as_u16();
            (status, Answer::from_reply(status, &h.headers, ns))
        }
        None => {
            return Err(Failure::AfterAnswer(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "no response header",
            )))
        }
    };
    let mut body = 0usize;
    while let Some(chunk) = http
        .read_response_body()
        .await
        .map_err(Failure::AfterAnswer)?
    {
        body += chunk.len();
        if body > MAX_BODY {
            return Ok(Reply::Unusable(format!(
                "status {status} answer with a body over {MAX_BODY} bytes"
            )));
        }
    }
    if status == 200 && body > 0 {
        // The resolver answers 200 with an empty body; anything else is not the resolver
        // (a wrong URL that reaches a web page must not pass as "anonymous").
        return Ok(Reply::Unusable(format!(
            "200 answer with a {body}-byte body (the resolve endpoint sends none): is resolver.url right?"
        )));
    }
    Ok(Reply::Complete(answer))
}
