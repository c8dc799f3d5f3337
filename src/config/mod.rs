//! The configuration file turned into checked settings: plain data, errors with the file, the
//! field path and the reason.
//!
//! The file is read into its file form (`file`: serde, defaults, unknown keys rejected), its
//! numbers are held to their bounds (`bounds`), and every value is checked and turned into
//! the settings each part of authgate is built from (`Settings`). Nothing here opens a socket,
//! starts a thread or opens a file other than the ones the configuration names for reading:
//! `authgate -t` is exactly this. `runtime` builds the live objects.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use pingora::server::configuration::ServerConf;

mod bounds;
mod file;

use bounds::check_bounds;
pub use file::*;

use crate::access_log::{AccessLogSettings, Format};
use crate::cache::CacheSettings;
use crate::connections::ClientLimits;
use crate::credentials::KeyRules;
use crate::fleet::FleetSettings;
use crate::forwarded::TrustedProxies;
use crate::identity::Namespace;
use crate::policy::Login;
use crate::resolver::{ResolverSettings, POOL_NAME as RESOLVER_POOL};
use crate::response_cache::{ResponseCacheSettings, RouteCache};
use crate::routes::{Policy, RouteRule, RuleSpec};
use crate::upstreams::{HashKey, HealthKind, HealthSettings, LbKind, PoolSettings, TlsSettings};
use crate::webhook::WebhookSettings;

/// A configuration problem: which file, which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Dotted field path such as `resolver.timeout` or `routes[1].upstream`; empty for the file.
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// One listening socket, as Pingora will open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub h2: bool,
    pub h2c: bool,
}

/// Admin tokens shorter than this are refused: the endpoint can flush every session.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// How long a connection a stopping listener accepted in its last instant has to send its
/// request (`drain::WINDOW`, which is this). `pingora.grace_period_seconds` must stay well
/// above it: Pingora drops the runtime, with every request still on it, when the grace period
/// ends, so a shorter one is warned about.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(1);

pub const DEFAULT_PID_FILE: &str = "/tmp/authgate.pid";
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/authgate_upgrade.sock";

/// A checked configuration, as plain data: what Pingora needs to start, and what
/// `runtime::Runtime::build` makes the request path's snapshot from. Nothing in it holds a
/// socket, a thread or an open file.
#[derive(Debug)]
pub struct Settings {
    /// The file's name, for errors found while building the runtime.
    pub file: String,
    pub server: ServerConf,
    pub listen: Vec<Listener>,
    pub admin_listen: Option<SocketAddr>,
    /// How often to look at the file for changes, when watching is on.
    pub watch: Option<Duration>,
    pub namespace: Namespace,
    pub resolver: ResolverSettings,
    pub keys: KeyRules,
    pub cache: CacheSettings,
    /// The admin bearer token, when the admin listener is on.
    pub admin_token: Option<Vec<u8>>,
    pub webhook: Option<WebhookSettings>,
    pub trusted: TrustedProxies,
    /// Pools by name.
    pub pools: BTreeMap<String, PoolSettings>,
    pub routes: Vec<RouteRule>,
    pub login: Option<Login>,
    pub access_log: Option<AccessLogSettings>,
    pub forward_set_cookie: bool,
    pub client: ClientLimits,
    /// Fleet mode through Redis, when configured.
    pub fleet: Option<FleetSettings>,
    /// The response cache's store (used by routes with `cache:`).
    pub response_cache: ResponseCacheSettings,
    /// From `SIGTERM` to closing the listeners: readiness fails, traffic is still served.
    pub drain_delay: Duration,
    /// Every file the configuration reads besides itself (`FileConfig::named_files`, anchored
    /// like the fields): the file watch follows them.
    pub named_files: Vec<PathBuf>,
}

/// Reads, parses and checks a configuration file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        field: String::new(),
        reason: format!("cannot read file: {e}"),
    })?;
    parse(&file, &text, path.parent())
}

/// Parses and checks configuration text; `file` names it in errors, `base` anchors relative
/// paths (CA files) at the configuration file's folder.
pub fn parse(file: &str, text: &str, base: Option<&Path>) -> Result<Settings, ConfigError> {
    let err = |field: &str, reason: String| ConfigError {
        file: file.to_string(),
        field: field.to_string(),
        reason,
    };
    let de = serde_yaml::Deserializer::from_str(text);
    let mut parsed: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        err(
            &field,
            tidy_serde_message(&field, &e.into_inner().to_string()),
        )
    })?;
    // ServerConf accepts unknown keys silently; a typo there must not pass either.
    let raw: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| err("", e.to_string()))?;
    let pingora_raw = raw.get("pingora");
    check_pingora_keys(pingora_raw).map_err(|(k, r)| err(&format!("pingora.{k}"), r))?;
    let has = |k: &str| pingora_raw.and_then(|p| p.get(k)).is_some();
    let mut server = std::mem::take(&mut parsed.pingora);
    if !has("pid_file") {
        server.pid_file = DEFAULT_PID_FILE.into();
    }
    if !has("upgrade_sock") {
        server.upgrade_sock = DEFAULT_UPGRADE_SOCK.into();
    }
    validate_server(&server).map_err(|(k, r)| err(&format!("pingora.{k}"), r))?;
    // Before anything is sized from a number: a reload must never abort or balloon.
    check_bounds(&parsed, &server).map_err(|(k, r)| err(&k, r))?;

    if parsed.listen.is_empty() {
        return Err(err("listen", "at least one listener is required".into()));
    }
    let mut listen = Vec::with_capacity(parsed.listen.len());
    for (i, l) in parsed.listen.iter().enumerate() {
        let addr: SocketAddr = l.addr.parse().map_err(|_| {
            err(
                &format!("listen[{i}].addr"),
                format!("`{}` is not an IP:port address", l.addr),
            )
        })?;
        if listen.iter().any(|o: &Listener| o.addr == addr) {
            return Err(err(
                &format!("listen[{i}].addr"),
                format!("{addr} is listed twice"),
            ));
        }
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                if l.h2c {
                    return Err(err(
                        &format!("listen[{i}].h2c"),
                        "h2c is HTTP/2 without TLS; this listener has TLS".into(),
                    ));
                }
                let (cert, key) = (relative_to(base, &t.cert), relative_to(base, &t.key));
                crate::tls::Pair::read(&cert, &key).map_err(|why| {
                    err(
                        &format!("listen[{i}].tls"),
                        format!("listener {addr}: {why}"),
                    )
                })?;
                Some((cert, key))
            }
        };
        listen.push(Listener {
            addr,
            tls,
            h2: l.h2,
            h2c: l.h2c,
        });
    }

    let namespace = header_prefix(&parsed.resolver.header_prefix)
        .map_err(|r| err("resolver.header_prefix", r))?;
    let resolver_settings = resolver_settings(&parsed.resolver, base)
        .map_err(|(k, r)| err(&format!("resolver.{k}"), r))?;
    let keys = key_rules(&parsed.resolver, resolver_settings.host_header.as_bytes())
        .map_err(|(k, r)| err(&format!("resolver.{k}"), r))?;
    let cache_settings = CacheSettings {
        capacity: parsed.cache.capacity,
        ttl: parsed.cache.ttl,
        negative_ttl: parsed.cache.negative_ttl,
        lock_timeout: match parsed.cache.lock_timeout {
            Some(d) => d,
            // Longer than the resolve it waits for, or waiters would give up just before the
            // answer and each call the resolver themselves.
            None => resolver_settings.total_timeout + Duration::from_secs(1),
        },
        stale_if_error: parsed.cache.stale_if_error,
        refresh_after: match parsed.cache.refresh_after {
            Some(r) if !r.is_zero() && !parsed.cache.ttl.is_zero() && r >= parsed.cache.ttl => {
                return Err(err(
                    "cache.refresh_after",
                    format!(
                        "{} is not below cache.ttl ({}): answers would expire before a refresh",
                        humantime::format_duration(r),
                        humantime::format_duration(parsed.cache.ttl)
                    ),
                ))
            }
            Some(r) => r,
            None => defaults::refresh_after().min(parsed.cache.ttl / 2),
        },
    };
    let (admin_listen, admin_token, webhook) = match &parsed.admin {
        None => (None, None, None),
        Some(a) => {
            let (l, t) = admin(a, base).map_err(|(k, r)| err(&format!("admin.{k}"), r))?;
            let w = match &a.webhook {
                None => None,
                Some(w) => Some(
                    webhook_settings(w, base)
                        .map_err(|(k, r)| err(&format!("admin.webhook.{k}"), r))?,
                ),
            };
            (Some(l), Some(t), w)
        }
    };

    let mut nets = Vec::with_capacity(parsed.trusted_proxies.len());
    for (i, t) in parsed.trusted_proxies.iter().enumerate() {
        nets.push(parse_net(t).map_err(|r| err(&format!("trusted_proxies[{i}]"), r))?);
    }

    let mut pools = BTreeMap::new();
    for (name, up) in &parsed.upstreams {
        if name == RESOLVER_POOL {
            // The resolver's own pool is listed under this name.
            return Err(err(
                &format!("upstreams.{name}"),
                format!("`{RESOLVER_POOL}` is the resolver's pool; name this upstream otherwise"),
            ));
        }
        let settings = pool_settings(name, up, base)
            .map_err(|(k, r)| err(&format!("upstreams.{name}{k}"), r))?;
        pools.insert(name.clone(), settings);
    }

    if parsed.routes.is_empty() {
        return Err(err("routes", "at least one route is required".into()));
    }
    let mut routes = Vec::with_capacity(parsed.routes.len());
    for (i, r) in parsed.routes.iter().enumerate() {
        let pool = pools.get(&r.upstream).ok_or_else(|| {
            let known: Vec<&str> = pools.keys().map(String::as_str).collect();
            err(
                &format!("routes[{i}].upstream"),
                format!(
                    "no upstream named `{}` is defined (defined: {})",
                    r.upstream,
                    known.join(", ")
                ),
            )
        })?;
        let route = RouteRule::new(RuleSpec {
            host: r.host.as_deref(),
            path: &r.path,
            methods: &r.methods,
            upstream: &r.upstream,
            policy: r.auth.into(),
            roles: &r.roles,
            index: i,
            logout: r.logout,
            cache: r.cache.as_ref().map(|c| RouteCache {
                ttl: c.ttl,
                max_ttl: c.max_ttl,
                stale_while_revalidate: c.stale_while_revalidate,
                stale_if_error: c.stale_if_error,
            }),
        })
        .map_err(|(k, why)| err(&format!("routes[{i}].{k}"), why))?;
        if let Some(c) = &r.cache {
            if c.ttl > c.max_ttl {
                return Err(err(
                    &format!("routes[{i}].cache.ttl"),
                    "is longer than cache.max_ttl".into(),
                ));
            }
        }
        if pool.hash_key == Some(HashKey::UserId) && route.policy == Policy::Public {
            return Err(err(
                &format!("routes[{i}].auth"),
                format!(
                    "upstream `{}` hashes on user_id, which a public route never resolves",
                    r.upstream
                ),
            ));
        }
        routes.push(route);
    }
    let login = match &parsed.login {
        None => None,
        Some(l) => {
            let uri: Uri = l
                .url
                .parse()
                .map_err(|_| err("login.url", format!("`{}` is not a URL", l.url)))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) && !l.url.starts_with('/') {
                return Err(err(
                    "login.url",
                    "must be an http(s) URL or a path starting with /".into(),
                ));
            }
            if l.return_to_param.is_empty()
                || !l
                    .return_to_param
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(err(
                    "login.return_to_param",
                    format!(
                        "`{}` is not a plain query parameter name",
                        l.return_to_param
                    ),
                ));
            }
            Some(Login {
                url: l.url.clone(),
                return_to_param: l.return_to_param.clone(),
            })
        }
    };

    let access_log = match &parsed.access_log {
        AccessLogFile { enabled: false, .. } => None,
        a => {
            let path = a.path.as_ref().map(|p| relative_to(base, p));
            // Opened by the runtime; its folder is looked at here, so `-t` catches a typo.
            if let Some(p) = &path {
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) {
                    return Err(err(
                        "access_log.path",
                        format!("the folder of `{}` does not exist", p.display()),
                    ));
                }
            }
            Some(AccessLogSettings {
                format: a.format.into(),
                path,
                include_query: a.include_query,
            })
        }
    };

    if parsed.reload.watch && parsed.reload.interval.is_zero() {
        return Err(err("reload.interval", "must be greater than zero".into()));
    }
    let fleet = match &parsed.fleet {
        None => None,
        Some(f) => Some(fleet_settings(f, base).map_err(|(k, r)| err(&format!("fleet.{k}"), r))?),
    };
    let rc = &parsed.response_cache;
    if rc.max_object_bytes > rc.max_bytes {
        return Err(err(
            "response_cache.max_object_bytes",
            "is larger than response_cache.max_bytes".into(),
        ));
    }
    let mut named_files = Vec::new();
    for p in parsed.named_files() {
        let p = relative_to(base, p);
        if !named_files.contains(&p) {
            named_files.push(p);
        }
    }
    Ok(Settings {
        named_files,
        response_cache: ResponseCacheSettings {
            max_bytes: rc.max_bytes,
            max_object_bytes: rc.max_object_bytes,
            lock_timeout: rc.lock_timeout,
        },
        fleet,
        drain_delay: parsed.shutdown.drain_delay,
        file: file.to_string(),
        server,
        listen,
        admin_listen,
        watch: parsed.reload.watch.then_some(parsed.reload.interval),
        namespace,
        resolver: resolver_settings,
        keys,
        cache: cache_settings,
        admin_token,
        webhook,
        trusted: TrustedProxies::new(nets),
        pools,
        routes,
        login,
        access_log,
        forward_set_cookie: parsed.resolver.forward_set_cookie,
        client: client_limits(&parsed.client),
    })
}

/// `client:`, each limit it leaves out at `ClientLimits`' default.
fn client_limits(c: &ClientFile) -> ClientLimits {
    let d = ClientLimits::default();
    ClientLimits {
        max_connections: c.max_connections.unwrap_or(d.max_connections),
        header_timeout: c.header_timeout.unwrap_or(d.header_timeout),
        keepalive_timeout: c.keepalive_timeout.unwrap_or(d.keepalive_timeout),
        max_requests: match c.max_requests_per_connection {
            None => d.max_requests,
            Some(n) => (n > 0).then_some(n),
        },
        max_header_bytes: c.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: c.max_headers.unwrap_or(d.max_headers),
    }
}

impl From<PolicyFile> for Policy {
    fn from(p: PolicyFile) -> Policy {
        match p {
            PolicyFile::Public => Policy::Public,
            PolicyFile::Identify => Policy::Identify,
            PolicyFile::Require => Policy::Require,
        }
    }
}

impl From<LbFile> for LbKind {
    fn from(lb: LbFile) -> LbKind {
        match lb {
            LbFile::RoundRobin => LbKind::RoundRobin,
            LbFile::Random => LbKind::Random,
            LbFile::Consistent => LbKind::Consistent,
        }
    }
}

impl From<FormatFile> for Format {
    fn from(f: FormatFile) -> Format {
        match f {
            FormatFile::Json => Format::Json,
            FormatFile::Text => Format::Text,
        }
    }
}

/// serde_yaml prefixes its messages with its own idea of the path and names Rust types;
/// the operator gets the field path once and the word "mapping".
fn tidy_serde_message(field: &str, msg: &str) -> String {
    let msg = match msg.split_once(": ") {
        Some((head, rest))
            if !head.is_empty() && !head.contains(' ') && field.starts_with(head) =>
        {
            rest
        }
        _ => msg,
    };
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("struct ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "struct ".len()..];
        let end = after
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        out.push_str("a mapping");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn check_pingora_keys(raw: Option<&serde_yaml::Value>) -> Result<(), (String, String)> {
    let Some(raw) = raw else { return Ok(()) };
    let Some(map) = raw.as_mapping() else {
        return Err((String::new(), "must be a mapping".into()));
    };
    let known =
        serde_yaml::to_value(ServerConf::default()).map_err(|e| (String::new(), e.to_string()))?;
    for key in map.keys() {
        let name = key.as_str().unwrap_or_default();
        if known.get(name).is_none() {
            return Err((name.to_string(), "unknown Pingora server setting".into()));
        }
    }
    Ok(())
}

fn validate_server(s: &ServerConf) -> Result<(), (String, String)> {
    // Pingora drops the runtime, with every request still on it, when the grace period ends.
    if let Some(g) = s
        .grace_period_seconds
        .filter(|g| *g <= DRAIN_WINDOW.as_secs())
    {
        log::warn!(
            "pingora.grace_period_seconds is {g}: requests in flight when a graceful upgrade or shutdown stops the listeners are cut after {g} s"
        );
    }
    // Pingora parses these with unwrap() when it builds connectors.
    for (k, list, v4) in [
        ("client_bind_to_ipv4", &s.client_bind_to_ipv4, true),
        ("client_bind_to_ipv6", &s.client_bind_to_ipv6, false),
    ] {
        for (i, ip) in list.iter().enumerate() {
            match ip.parse::<IpAddr>() {
                Ok(a) if a.is_ipv4() == v4 => {}
                _ => {
                    return Err((
                        format!("{k}[{i}]"),
                        format!("`{ip}` is not an IPv{} address", if v4 { 4 } else { 6 }),
                    ))
                }
            }
        }
    }
    Ok(())
}

fn header_prefix(p: &str) -> Result<Namespace, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if http::HeaderName::from_bytes(p.as_bytes()).is_err() {
        return Err(format!("`{p}` is not a valid header name prefix"));
    }
    Ok(Namespace::new(p))
}

fn resolver_settings(
    r: &ResolverFile,
    base: Option<&Path>,
) -> Result<ResolverSettings, (String, String)> {
    let bad = |k: &str, why: String| (k.to_string(), why);
    let uri: Uri = r
        .url
        .parse()
        .map_err(|e| bad("url", format!("`{}` is not a URL: {e}", r.url)))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(bad(
                "url",
                format!("`{}` must start with http:// or https://", r.url),
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| bad("url", "has no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(bad("url", "must not carry user info".into()));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addrs = if r.backends.is_empty() {
        vec![resolve_addr(&format!("{}:{port}", authority.host())).map_err(|why| bad("url", why))?]
    } else {
        let mut addrs = Vec::with_capacity(r.backends.len());
        for (i, b) in r.backends.iter().enumerate() {
            let a = resolve_addr(b).map_err(|why| bad(&format!("backends[{i}]"), why))?;
            if addrs.contains(&a) {
                return Err(bad(
                    &format!("backends[{i}]"),
                    format!("{a} is listed twice"),
                ));
            }
            addrs.push(a);
        }
        addrs
    };
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/_resolver/resolve".to_string(),
        Some(p) => p.to_string(),
    };
    let host_header_text = r
        .host
        .clone()
        .unwrap_or_else(|| authority.as_str().to_string());
    let host_header = match &r.host {
        Some(h) => http::HeaderValue::from_str(h)
            .map_err(|_| bad("host", format!("`{h}` is not a valid Host value")))?,
        None => http::HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("url", "host is not a valid Host value".into()))?,
    };
    let ca_file = match &r.ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(bad(
                "ca_file",
                "only applies to an https:// resolver url".into(),
            ))
        }
        Some(p) => {
            let p = relative_to(base, p);
            check_ca_file(&p).map_err(|why| bad("ca_file", why))?;
            Some(p)
        }
    };
    let health = match &r.health_check {
        None => None,
        Some(h) => Some(
            health_settings(h, &host_header_text, path.split('?').next().unwrap_or("/"))
                .map_err(|(k, why)| (format!("health_check{k}"), why))?,
        ),
    };
    Ok(ResolverSettings {
        addrs,
        health,
        tls,
        sni: host,
        host_header,
        path,
        connect_timeout: r.connect_timeout,
        read_timeout: r.read_timeout,
        total_timeout: r.timeout,
        idle_timeout: r.idle_timeout,
        ca_file,
    })
}

fn pool_settings(
    name: &str,
    up: &UpstreamFile,
    base: Option<&Path>,
) -> Result<PoolSettings, (String, String)> {
    if up.backends.is_empty() {
        return Err((
            ".backends".into(),
            "at least one backend is required".into(),
        ));
    }
    let mut backends = Vec::with_capacity(up.backends.len());
    let mut first_host = None;
    for (i, b) in up.backends.iter().enumerate() {
        let (addr, weight, field) = match b {
            BackendFile::Addr(a) => (a, 1, format!(".backends[{i}]")),
            BackendFile::Weighted(w) => (&w.addr, w.weight, format!(".backends[{i}].addr")),
        };
        if weight == 0 {
            return Err((
                format!(".backends[{i}].weight"),
                "must be at least 1".into(),
            ));
        }
        if first_host.is_none() {
            first_host = addr
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string());
        }
        let resolved = resolve_addr(addr).map_err(|why| (field.clone(), why))?;
        if backends.iter().any(|(a, _)| *a == resolved) {
            return Err((field, format!("{resolved} is listed twice")));
        }
        backends.push((resolved, weight));
    }
    let hash_key = match (&up.hash_key, up.lb) {
        (None, LbFile::Consistent) => {
            return Err((".hash_key".into(), "lb: consistent needs a hash_key".into()))
        }
        (Some(_), lb) if lb != LbFile::Consistent => {
            return Err((".hash_key".into(), "only applies to lb: consistent".into()))
        }
        (Some(k), _) => Some(HashKey::parse(k).map_err(|why| (".hash_key".to_string(), why))?),
        (None, _) => None,
    };
    let tls = match &up.tls {
        None => None,
        Some(t) => {
            let sni = match t.sni.clone().or(first_host) {
                Some(s) if !s.is_empty() => s,
                _ => {
                    return Err((
                        ".tls.sni".into(),
                        "set the server name to send and verify".into(),
                    ))
                }
            };
            let ca = match &t.ca_file {
                None => None,
                Some(p) => Some(
                    read_ca_ders(&relative_to(base, p))
                        .map_err(|why| (".tls.ca_file".to_string(), why))?,
                ),
            };
            if !t.verify {
                log::warn!("upstreams.{name}: TLS certificate verification is OFF: anyone on the path can impersonate these backends");
            }
            Some(TlsSettings {
                sni,
                verify: t.verify,
                ca,
            })
        }
    };
    let health = match &up.health_check {
        None => None,
        Some(h) => {
            let host = h
                .host
                .clone()
                .or_else(|| tls.as_ref().map(|t| t.sni.clone()))
                .unwrap_or_else(|| "localhost".into());
            Some(
                health_settings(h, &host, "/")
                    .map_err(|(k, why)| (format!(".health_check{k}"), why))?,
            )
        }
    };
    Ok(PoolSettings {
        name: name.to_string(),
        backends,
        lb: up.lb.into(),
        hash_key,
        connect_timeout: up.connect_timeout,
        read_timeout: up.read_timeout,
        write_timeout: up.write_timeout,
        tls,
        retries: up.retries,
        health,
    })
}

/// Checks a `health_check` section; `host` and `path` are used where it names none.
fn health_settings(
    h: &HealthFile,
    host: &str,
    path: &str,
) -> Result<HealthSettings, (String, String)> {
    let kind = match h.kind {
        HealthKindFile::Tcp => HealthKind::Tcp,
        HealthKindFile::Http => {
            let path = h.path.clone().unwrap_or_else(|| path.to_string());
            if !path.starts_with('/') || path.parse::<Uri>().is_err() {
                return Err((".path".into(), format!("`{path}` is not a request path")));
            }
            if !(100..=599).contains(&h.expected_status) {
                return Err((".expected_status".into(), "must be an HTTP status".into()));
            }
            let host = h.host.clone().unwrap_or_else(|| host.to_string());
            if http::HeaderValue::from_str(&host).is_err() {
                return Err((
                    ".host".into(),
                    format!("`{host}` is not a valid Host value"),
                ));
            }
            HealthKind::Http {
                path,
                host,
                status: h.expected_status,
            }
        }
    };
    Ok(HealthSettings {
        kind,
        interval: h.interval,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
    })
}

/// The DER certificates of a PEM file.
fn read_ca_ders(p: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut &bytes[..])
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM file: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", p.display()));
    }
    Ok(certs)
}

fn key_rules(r: &ResolverFile, resolver_host: &[u8]) -> Result<KeyRules, (String, String)> {
    if r.credential_cookies.is_empty() {
        return Err((
            "credential_cookies".into(),
            "at least one cookie name is required".into(),
        ));
    }
    let token = |s: &str| !s.is_empty() && http::HeaderName::from_bytes(s.as_bytes()).is_ok();
    for (i, c) in r.credential_cookies.iter().enumerate() {
        if !token(&format!("{}{c}", r.cookie_prefix)) {
            return Err((
                format!("credential_cookies[{i}]"),
                format!("`{c}` is not a valid cookie name"),
            ));
        }
    }
    if !r.cookie_prefix.is_empty() && !token(&r.cookie_prefix) {
        return Err((
            "cookie_prefix".into(),
            format!("`{}` is not a valid cookie name prefix", r.cookie_prefix),
        ));
    }
    Ok(KeyRules::new(
        resolver_host,
        &r.cookie_prefix,
        &r.credential_cookies,
    ))
}

fn admin(a: &AdminFile, base: Option<&Path>) -> Result<(SocketAddr, Vec<u8>), (String, String)> {
    let listen: SocketAddr = a.listen.parse().map_err(|_| {
        (
            "listen".to_string(),
            format!("`{}` is not an IP:port address", a.listen),
        )
    })?;
    let (field, token) = secret(
        (&a.token_file, "token_file"),
        (&a.token_env, "token_env"),
        base,
        "the admin listener needs a token: set token_file or token_env",
    )?;
    let token = token.trim();
    if token.len() < MIN_ADMIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err((
            field.into(),
            format!(
                "the token must be at least {MIN_ADMIN_TOKEN} printable characters without spaces"
            ),
        ));
    }
    Ok((listen, token.as_bytes().to_vec()))
}

fn fleet_settings(f: &FleetFile, base: Option<&Path>) -> Result<FleetSettings, (String, String)> {
    crate::fleet::check_url(&f.redis.url).map_err(|r| ("redis.url".to_string(), r))?;
    let password = match (&f.redis.password_file, &f.redis.password_env) {
        (None, None) => None,
        (file, env) => {
            let (field, text) = secret((file, "password_file"), (env, "password_env"), base, "")
                .map_err(|(k, r)| (format!("redis.{k}"), r))?;
            let text = text.trim();
            if text.is_empty() {
                return Err((format!("redis.{field}"), "the password is empty".into()));
            }
            Some(text.to_string())
        }
    };
    let ca = match &f.redis.ca_file {
        None => None,
        Some(p) => {
            if !f.redis.url.starts_with("rediss://") {
                return Err((
                    "redis.ca_file".into(),
                    "a CA file is for rediss:// (TLS) URLs only".into(),
                ));
            }
            let p = relative_to(base, p);
            check_ca_file(&p).map_err(|r| ("redis.ca_file".to_string(), r))?;
            Some(std::fs::read(&p).map_err(|e| {
                (
                    "redis.ca_file".to_string(),
                    format!("cannot read `{}`: {e}", p.display()),
                )
            })?)
        }
    };
    let (field, text) = secret(
        (&f.secret_file, "secret_file"),
        (&f.secret_env, "secret_env"),
        base,
        "the fleet needs a shared secret: set secret_file or secret_env",
    )?;
    let text = text.trim();
    if text.len() < crate::fleet::seal::MIN_SECRET {
        return Err((
            field.into(),
            format!(
                "the secret must be at least {} bytes (e.g. `openssl rand -hex 32`)",
                crate::fleet::seal::MIN_SECRET
            ),
        ));
    }
    if !f
        .prefix
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?' && b != b'[')
    {
        return Err((
            "prefix".into(),
            format!(
                "`{}` must be printable, without spaces or glob characters (* ? [)",
                f.prefix
            ),
        ));
    }
    Ok(FleetSettings {
        url: f.redis.url.clone(),
        password,
        ca,
        secret: text.as_bytes().to_vec(),
        prefix: f.prefix.clone(),
        timeout: f.timeout,
        shared_cache: f.shared_cache,
    })
}

fn webhook_settings(
    w: &WebhookFile,
    base: Option<&Path>,
) -> Result<WebhookSettings, (String, String)> {
    let (field, secret) = secret(
        (&w.secret_file, "secret_file"),
        (&w.secret_env, "secret_env"),
        base,
        "the webhook needs Authgear's secret: set secret_file or secret_env",
    )?;
    let secret = secret.trim();
    if secret.is_empty() {
        return Err((field.into(), "the secret is empty".into()));
    }
    Ok(WebhookSettings {
        secret: secret.as_bytes().to_vec(),
        max_age: w.max_age,
    })
}

/// A secret read from a file or an environment variable (exactly one of them); the field it
/// came from, and its text.
fn secret(
    (file, file_field): (&Option<PathBuf>, &'static str),
    (env, env_field): (&Option<String>, &'static str),
    base: Option<&Path>,
    missing: &str,
) -> Result<(&'static str, String), (String, String)> {
    match (file, env) {
        (Some(_), Some(_)) => Err((
            file_field.into(),
            format!("give {file_field} or {env_field}, not both"),
        )),
        (None, None) => Err((file_field.into(), missing.into())),
        (Some(f), None) => {
            let f = relative_to(base, f);
            std::fs::read_to_string(&f)
                .map(|text| (file_field, text))
                .map_err(|e| {
                    (
                        file_field.to_string(),
                        format!("cannot read `{}`: {e}", f.display()),
                    )
                })
        }
        (None, Some(v)) => std::env::var(v).map(|text| (env_field, text)).map_err(|_| {
            (
                env_field.to_string(),
                format!("environment variable `{v}` is not set"),
            )
        }),
    }
}

/// A path from the file, anchored at the configuration file's folder when relative.
fn relative_to(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

fn check_ca_file(p: &Path) -> Result<(), String> {
    let bytes = std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    let mut reader = std::io::BufReader::new(&bytes[..]);
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM file: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", p.display()));
    }
    Ok(())
}

/// `host:port` to one socket address, resolved once at load time.
pub fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut it = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}` (want host:port): {e}"))?;
    it.next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR network"))
}

#[cfg(test)]
mod tests;
