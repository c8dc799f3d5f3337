//! Named backend pools: load balancing (round robin, random, consistent hashing, weights),
//! per-pool timeouts and TLS, active health checks, and the choice of a backend not yet tried.

#[path = "upstreams/attempts.rs"]
mod attempts;
pub use attempts::{fresh_group_key, Attempts};

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

/// How a pool spreads requests over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    RoundRobin,
    Random,
    /// Ketama consistent hashing of `hash_key`.
    Consistent,
}

/// What a `consistent` pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
    /// The resolved `x-authgear-user-id` (anonymous requests hash to one backend).
    UserId,
}

impl HashKey {
    /// `client_ip`, `user_id`, `header:NAME` or `cookie:NAME`.
    pub fn parse(s: &str) -> Result<HashKey, String> {
        match s.split_once(':') {
            None if s == "client_ip" => Ok(HashKey::ClientIp),
            None if s == "user_id" => Ok(HashKey::UserId),
            Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{name}` is not a header name")),
            Some(("cookie", name)) if !name.trim().is_empty() => {
                Ok(HashKey::Cookie(name.trim().to_string()))
            }
            _ => Err(format!(
                "`{s}`: expected client_ip, user_id, header:NAME or cookie:NAME"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    Tcp,
    Http {
        path: String,
        host: String,
        status: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes to mark a backend up again.
    pub rise: usize,
    /// Consecutive failures to mark a backend down.
    pub fall: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub sni: String,
    pub verify: bool,
    /// DER certificates of a private CA; the system's roots when `None`.
    pub ca: Option<Vec<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub name: String,
    /// Address and weight of each backend.
    pub backends: Vec<(SocketAddr, usize)>,
    pub lb: LbKind,
    pub hash_key: Option<HashKey>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub tls: Option<TlsSettings>,
    /// How many other backends a request whose connect failed may try.
    pub retries: usize,
    pub health: Option<HealthSettings>,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<KetamaHashing>),
}

/// How many backends `select` may look at before giving up.
const MAX_SELECT_ITERATIONS: usize = 256;

impl Balancer {
    fn select(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }
    }

    fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }
}

pub struct Pool {
    settings: PoolSettings,
    balancer: Balancer,
    /// A ready peer per backend, built once.
    peers: HashMap<SocketAddr, HttpPeer>,
    /// The backend of a pool that has only one (the common case), and its peer: there is
    /// nothing to choose, so `select` skips the balancer (a hash, a set of the backends seen,
    /// a readiness lookup), and asks for readiness only when health checks can take it down.
    sole: Option<(Backend, HttpPeer)>,
    last_check: Mutex<Option<Instant>>,
}

fn build_lb<S>(backends: Backends) -> Result<LoadBalancer<S>, String>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let lb = LoadBalancer::<S>::from_backends(backends);
    // Static discovery resolves nothing: the first update completes at once.
    match lb.update().now_or_never() {
        Some(Ok(())) => Ok(lb),
        Some(Err(e)) => Err(format!("cannot build the backend set: {e}")),
        None => Err("the backend set did not build at once".into()),
    }
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Result<Pool, String> {
        let mut set = BTreeSet::new();
        for (addr, weight) in &settings.backends {
            let b = Backend::new_with_weight(&addr.to_string(), *weight)
                .map_err(|e| format!("backend {addr}: {e}"))?;
            set.insert(b);
        }
        let sole = if set.len() == 1 {
            set.first().cloned()
        } else {
            None
        };
        let mut backends = Backends::new(Static::new(set));
        if let Some(h) = &settings.health {
            backends.set_health_check(health_check(h, settings.tls.as_ref()));
        }
        let balancer = match settings.lb {
            LbKind::RoundRobin => Balancer::RoundRobin(build_lb(backends)?),
            LbKind::Random => Balancer::Random(build_lb(backends)?),
            LbKind::Consistent => Balancer::Consistent(build_lb(backends)?),
        };
        let ca = match settings.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            Some(ders) => Some(Arc::<[WrappedX509]>::from(ca_list(ders)?)),
            None => None,
        };
        let peers: HashMap<SocketAddr, HttpPeer> = settings
            .backends
            .iter()
            .map(|(addr, _)| {
                let (tls, sni) = settings
                    .tls
                    .as_ref()
                    .map_or((false, String::new()), |t| (true, t.sni.clone()));
                let mut p = HttpPeer::new(*addr, tls, sni);
                p.options.connection_timeout = Some(settings.connect_timeout);
                p.options.total_connection_timeout = Some(settings.connect_timeout);
                p.options.read_timeout = Some(settings.read_timeout);
                p.options.write_timeout = Some(settings.write_timeout);
                if let Some(t) = &settings.tls {
                    p.options.verify_cert = t.verify;
                    p.options.verify_hostname = t.verify;
                    p.options.ca = ca.clone();
                }
                (*addr, p)
            })
            .collect();
        let sole = sole.and_then(|b| {
            let peer = peers.get(b.addr.as_inet()?)?.clone();
            Some((b, peer))
        });
        Ok(Pool {
            settings,
            balancer,
            peers,
            sole,
            last_check: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// A healthy backend that is not in `tried`; `key` feeds consistent hashing. Boxed as
    /// Pingora takes it, the copy made straight into the box (a peer is some 400 bytes).
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Box<HttpPeer>> {
        let peer = match &self.sole {
            Some((backend, peer)) => {
                let fresh = backend.addr.as_inet().is_some_and(|a| !tried.contains(a));
                let ready =
                    self.settings.health.is_none() || self.balancer.backends().ready(backend);
                (fresh && ready).then_some(peer)?
            }
            None => {
                let backend = self.balancer.select(key, |b, healthy| {
                    healthy && b.addr.as_inet().is_some_and(|a| !tried.contains(a))
                })?;
                self.peers.get(backend.addr.as_inet()?)?
            }
        };
        Some(Box::new(peer.clone()))
    }

    /// Each backend and whether the health checks hold it up (always up without checks).
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        self.settings
            .backends
            .iter()
            .map(|&(addr, weight)| {
                let up = Backend::new_with_weight(&addr.to_string(), weight)
                    .is_ok_and(|b| self.balancer.backends().ready(&b));
                (addr, up)
            })
            .collect()
    }

    /// Runs this pool's health checks if they are due.
    async fn check_if_due(&self, now: Instant) {
        let Some(h) = &self.settings.health else {
            return;
        };
        {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|l| now.duration_since(l) < h.interval) {
                return;
            }
            *last = Some(now);
        }
        self.balancer.backends().run_health_check(true).await;
    }

    /// A pool of loopback backends on `ports` (with weights), for unit tests.
    #[cfg(test)]
    pub fn for_tests(name: &str, lb: LbKind, ports: &[(u16, usize)]) -> Pool {
        Pool::new(PoolSettings {
            name: name.into(),
            backends: ports
                .iter()
                .map(|&(port, w)| (SocketAddr::from(([127, 0, 0, 1], port)), w))
                .collect(),
            lb,
            hash_key: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls: None,
            retries: 0,
            health: None,
        })
        .unwrap_or_else(|e| panic!("test pool: {e}"))
    }
}

/// The `authgate_backend_up` series of `pools`, as the metrics page shows them.
pub fn render_health(pools: &[Arc<Pool>], text: &mut String) {
    let _ = writeln!(text, "# HELP authgate_backend_up Whether health checks hold a backend up\n# TYPE authgate_backend_up gauge");
    for pool in pools {
        for (addr, up) in pool.health() {
            let _ = writeln!(
                text,
                "authgate_backend_up{{upstream=\"{}\",backend=\"{addr}\"}} {}",
                pool.name(),
                u8::from(up)
            );
        }
    }
}

fn ca_list(ders: &[Vec<u8>]) -> Result<Box<[WrappedX509]>, String> {
    ders.iter()
        .map(|der| {
            // Pingora's parser panics on a bad certificate: check it first.
            x509_parser::parse_x509_certificate(der)
                .map_err(|e| format!("bad CA certificate: {e}"))?;
            Ok(WrappedX509::new(der.clone(), |raw| {
                pingora::utils::tls::parse_x509(raw)
            }))
        })
        .collect()
}

fn health_check(
    h: &HealthSettings,
    tls: Option<&TlsSettings>,
) -> Box<dyn HealthCheck + Send + Sync> {
    match &h.kind {
        HealthKind::Tcp => {
            let mut c = match tls {
                Some(t) => TcpHealthCheck::new_tls(&t.sni),
                None => TcpHealthCheck::new(),
            };
            c.consecutive_success = h.rise;
            c.consecutive_failure = h.fall;
            c.peer_template.options.connection_timeout = Some(h.timeout);
            c.peer_template.options.total_connection_timeout = Some(h.timeout);
            c
        }
        HealthKind::Http { path, host, status } => {
            let mut c = HttpHealthCheck::new(host, tls.is_some());
            if let Some(t) = tls {
                c.peer_template.sni = t.sni.clone();
                c.peer_template.options.verify_cert = t.verify;
                c.peer_template.options.verify_hostname = t.verify;
            }
            c.consecutive_success = h.rise;
            c.consecutive_failure = h.fall;
            c.peer_template.options.connection_timeout = Some(h.timeout);
            c.peer_template.options.total_connection_timeout = Some(h.timeout);
            c.peer_template.options.read_timeout = Some(h.timeout);
            if let Ok(uri) = path.parse() {
                c.req.set_uri(uri);
            }
            let expected = *status;
            c.validator = Some(Box::new(move |resp| {
                if resp.status.as_u16() == expected {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode(
                            "unexpected health check status",
                            resp.status.as_u16(),
                        ),
                        format!("expected {expected}"),
                    )
                }
            }));
            Box::new(c)
        }
    }
}

/// Runs the active health checks of whatever pools `pools` returns, each at its interval.
/// Reading the pools at every tick means a reloaded configuration is checked without a restart.
pub struct HealthChecks<F> {
    pools: F,
}

impl<F> HealthChecks<F>
where
    F: Fn() -> Vec<Arc<Pool>> + Send + Sync + 'static,
{
    pub fn new(pools: F) -> Self {
        HealthChecks { pools }
    }
}

/// How often the service looks for checks that are due.
const TICK: Duration = Duration::from_millis(100);

#[async_trait]
impl<F> BackgroundService for HealthChecks<F>
where
    F: Fn() -> Vec<Arc<Pool>> + Send + Sync + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let now = Instant::now();
            let pools = (self.pools)();
            let due = pools.iter().map(|p| p.check_if_due(now));
            futures_util::future::join_all(due).await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

/// Hash input for a `consistent` pool; empty for the others. The identity's user id is looked
/// up only for a pool hashed on it.
pub fn hash_input(
    key: Option<&HashKey>,
    client_ip: Option<std::net::IpAddr>,
    req: &pingora::http::RequestHeader,
    identity: Option<&crate::identity::Identity>,
) -> Vec<u8> {
    match key {
        None => Vec::new(),
        Some(HashKey::ClientIp) => client_ip
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default(),
        Some(HashKey::Header(name)) => req
            .headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        Some(HashKey::Cookie(name)) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| crate::credentials::cookie_values(v.as_bytes(), name.as_bytes()))
            .next()
            .map(|v| v.to_vec())
            .unwrap_or_default(),
        Some(HashKey::UserId) => identity
            .and_then(|i| i.user_id())
            .map(|u| u.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "upstreams/tests.rs"]
mod tests;
