//! The configuration file as the operator writes it: serde's view, with defaults, unknown
//! keys refused. Nothing here checks values; `config` turns this into settings.
//!
//! The file form only: nothing here names a type the proxy runs on. Where a choice is an
//! enum, the file form has its own (`PolicyFile`, `LbFile`, `FormatFile`), which `config`
//! converts; the domain enums never see serde.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use serde::Deserialize;

/// The file form, as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Pingora's own `ServerConf`, passed through (its keys are checked separately).
    #[serde(default)]
    pub pingora: ServerConf,
    pub listen: Vec<ListenFile>,
    pub resolver: ResolverFile,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-*` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub upstreams: BTreeMap<String, UpstreamFile>,
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub cache: CacheFile,
    #[serde(default)]
    pub login: Option<LoginFile>,
    #[serde(default)]
    pub access_log: AccessLogFile,
    #[serde(default)]
    pub reload: ReloadFile,
    /// The operator's endpoint; off when absent.
    #[serde(default)]
    pub admin: Option<AdminFile>,
    /// Limits on client connections and request headers.
    #[serde(default)]
    pub client: ClientFile,
    /// Several instances as one fleet through Redis; off when absent.
    #[serde(default)]
    pub fleet: Option<FleetFile>,
    #[serde(default)]
    pub response_cache: ResponseCacheFile,
    /// What SIGTERM does before listeners close.
    #[serde(default)]
    pub shutdown: ShutdownFile,
}

/// A graceful stop (`SIGTERM`): readiness fails at once, the listeners keep serving for
/// `drain_delay` (a load balancer is still sending traffic), then Pingora's shutdown.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl FileConfig {
    /// Every file this configuration reads (secrets, TLS pairs, CA files), as written: what a
    /// reload reads again, so the file watch follows them too. A new field naming a file
    /// to read belongs here. Not the access log (written, not read) nor `pingora.ca_file`
    /// (Pingora reads it once, at start).
    pub fn named_files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = Vec::new();
        for l in &self.listen {
            if let Some(t) = &l.tls {
                files.extend([t.cert.as_path(), t.key.as_path()]);
            }
        }
        files.extend(self.resolver.ca_file.as_deref());
        for up in self.upstreams.values() {
            files.extend(up.tls.as_ref().and_then(|t| t.ca_file.as_deref()));
        }
        if let Some(a) = &self.admin {
            files.extend(a.token_file.as_deref());
            files.extend(a.webhook.as_ref().and_then(|w| w.secret_file.as_deref()));
        }
        if let Some(f) = &self.fleet {
            files.extend(f.secret_file.as_deref());
            files.extend(f.redis.password_file.as_deref());
            files.extend(f.redis.ca_file.as_deref());
        }
        files
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    pub redis: RedisFile,
    /// A file holding the fleet secret (surrounding white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Prefix of every key and of the channel, so several fleets can share one Redis.
    #[serde(default = "defaults::fleet_prefix")]
    pub prefix: String,
    /// The most a request waits on Redis, in all.
    #[serde(default = "defaults::fleet_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Resolver answers shared through Redis (the bus runs either way).
    #[serde(default = "defaults::yes")]
    pub shared_cache: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://host:port/db` or `rediss://` (TLS); no password in it.
    pub url: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) for `rediss://`, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Limits on client connections; each one absent is `connections::ClientLimits`' default
/// (filled in by `config`, so the numbers live in one place).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    /// `0s`: no keep-alive.
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
    /// `0`: no limit.
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    #[serde(default)]
    pub max_headers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    #[serde(default = "defaults::capacity")]
    pub capacity: usize,
    #[serde(default = "defaults::ttl", with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default = "defaults::negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Default: the resolver's `timeout` plus one second.
    #[serde(default, with = "humantime_serde")]
    pub lock_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Default: 60 s, or half the TTL when that is shorter; `0s`: off.
    #[serde(default, with = "humantime_serde")]
    pub refresh_after: Option<Duration>,
}

impl Default for CacheFile {
    fn default() -> Self {
        CacheFile {
            capacity: defaults::capacity(),
            ttl: defaults::ttl(),
            negative_ttl: defaults::negative_ttl(),
            lock_timeout: None,
            stale_if_error: Duration::ZERO,
            refresh_after: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    /// A file holding the bearer token (surrounding white space ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Authgear's webhook events at `POST /hooks/authgear`; off when absent.
    #[serde(default)]
    pub webhook: Option<WebhookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// A file holding Authgear's webhook secret (surrounding white space ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Events stamped further than this from now are refused.
    #[serde(default = "defaults::webhook_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub addr: String,
    /// TLS termination (HTTP/2 offered by ALPN unless `h2: false`).
    #[serde(default)]
    pub tls: Option<ListenTlsFile>,
    #[serde(default = "defaults::yes")]
    pub h2: bool,
    /// HTTP/2 without TLS (prior knowledge), on a plain listener.
    #[serde(default)]
    pub h2c: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTlsFile {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverFile {
    pub url: String,
    /// `Host` sent to the resolver; the URL's host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "defaults::header_prefix")]
    pub header_prefix: String,
    #[serde(default)]
    pub forward_set_cookie: bool,
    /// Cookies the resolver reads a session from, without the prefix.
    #[serde(default = "defaults::credential_cookies")]
    pub credential_cookies: Vec<String>,
    /// Authgear's cookie name prefix (empty by default).
    #[serde(default)]
    pub cookie_prefix: String,
    /// Resolver instances (`host:port`) to use instead of the URL's address; the URL still
    /// gives the scheme, path, `Host` and SNI.
    #[serde(default)]
    pub backends: Vec<String>,
    #[serde(default)]
    pub health_check: Option<HealthFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub backends: Vec<BackendFile>,
    #[serde(default)]
    pub lb: LbFile,
    /// For `lb: consistent`: client_ip, user_id, header:NAME or cookie:NAME.
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::upstream_io_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(default = "defaults::upstream_io_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    #[serde(default)]
    pub tls: Option<UpstreamTlsFile>,
    /// Other backends tried after a failed connect.
    #[serde(default = "defaults::retries")]
    pub retries: usize,
    #[serde(default)]
    pub health_check: Option<HealthFile>,
}

/// `lb:`, how a pool spreads requests (`upstreams::LbKind`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbFile {
    #[default]
    RoundRobin,
    Random,
    Consistent,
}

/// `127.0.0.1:3000`, or `{ addr: 127.0.0.1:3000, weight: 3 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BackendFile {
    Addr(String),
    Weighted(WeightedBackendFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackendFile {
    pub addr: String,
    #[serde(default = "defaults::weight")]
    pub weight: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// Server name sent and verified; default: the host of the first backend.
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `false` turns certificate verification off (a lab only; logged at every start).
    #[serde(default = "defaults::yes")]
    pub verify: bool,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthKindFile {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    #[serde(default)]
    pub kind: HealthKindFile,
    /// Default: `/` for upstreams, the resolve path for the resolver.
    #[serde(default)]
    pub path: Option<String>,
    /// `Host` of the check request; default: the backend's SNI or `localhost`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "defaults::expected_status")]
    pub expected_status: u16,
    #[serde(default = "defaults::health_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes to mark a backend up.
    #[serde(default = "defaults::one")]
    pub rise: usize,
    /// Consecutive failures to mark a backend down.
    #[serde(default = "defaults::one")]
    pub fall: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Exact host or `*.domain`; any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "defaults::route_path")]
    pub path: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub auth: PolicyFile,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The app's logout: a 2xx answer from the backend drops the cached answer for the
    /// request's credentials, so the next request is resolved afresh.
    #[serde(default)]
    pub logout: bool,
    /// Store and serve the backend's cacheable responses (off when absent).
    #[serde(default)]
    pub cache: Option<RouteCacheFile>,
}

/// A route's `auth:` (`routes::Policy`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyFile {
    Public,
    #[default]
    Identify,
    Require,
}

/// A route's `cache:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheFile {
    /// Freshness of a response that states none; 0s: only responses that state theirs.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default = "defaults::response_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
}

/// `response_cache:`: the store every route with `cache:` shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheFile {
    #[serde(default = "defaults::response_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "defaults::response_max_object_bytes")]
    pub max_object_bytes: usize,
    #[serde(default = "defaults::response_lock_timeout", with = "humantime_serde")]
    pub lock_timeout: Duration,
}

impl Default for ResponseCacheFile {
    fn default() -> Self {
        ResponseCacheFile {
            max_bytes: defaults::response_max_bytes(),
            max_object_bytes: defaults::response_max_object_bytes(),
            lock_timeout: defaults::response_lock_timeout(),
        }
    }
}

/// Reloading on `SIGHUP` is always on; watching the file is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadFile {
    #[serde(default)]
    pub watch: bool,
    #[serde(default = "defaults::watch_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadFile {
    fn default() -> Self {
        ReloadFile {
            watch: false,
            interval: defaults::watch_interval(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default)]
    pub format: FormatFile,
    /// A file to append to; standard error when absent.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Log the query string too (it may carry tokens: off by default).
    #[serde(default)]
    pub include_query: bool,
}

impl Default for AccessLogFile {
    fn default() -> Self {
        AccessLogFile {
            enabled: true,
            format: FormatFile::Json,
            path: None,
            include_query: false,
        }
    }
}

/// The access log's `format:` (`access_log::Format`).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FormatFile {
    #[default]
    Json,
    Text,
}

/// Where `auth: require` sends a browser without a session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    pub url: String,
    #[serde(default = "defaults::return_to_param")]
    pub return_to_param: String,
}

pub(super) mod defaults {
    use std::time::Duration;

    pub fn connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn read_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(3)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_prefix() -> String {
        "x-authgear-".into()
    }
    pub fn response_max_ttl() -> Duration {
        Duration::from_secs(86_400)
    }
    pub fn response_max_bytes() -> usize {
        64 << 20
    }
    pub fn response_max_object_bytes() -> usize {
        1 << 20
    }
    pub fn response_lock_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn route_path() -> String {
        "/".into()
    }
    pub fn capacity() -> usize {
        100_000
    }
    pub fn ttl() -> Duration {
        Duration::from_secs(600)
    }
    pub fn negative_ttl() -> Duration {
        Duration::from_secs(10)
    }
    pub fn refresh_after() -> Duration {
        Duration::from_secs(60)
    }
    pub fn fleet_prefix() -> String {
        "authgate:".into()
    }
    pub fn fleet_timeout() -> Duration {
        Duration::from_millis(20)
    }
    pub fn webhook_max_age() -> Duration {
        Duration::from_secs(300)
    }
    pub fn upstream_io_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn retries() -> usize {
        2
    }
    pub fn weight() -> usize {
        1
    }
    pub fn yes() -> bool {
        true
    }
    pub fn one() -> usize {
        1
    }
    pub fn expected_status() -> u16 {
        200
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn watch_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn return_to_param() -> String {
        "return_to".into()
    }
    pub fn credential_cookies() -> Vec<String> {
        ["session", "app_session", "app_access_token"]
            .map(String::from)
            .to_vec()
    }
}
