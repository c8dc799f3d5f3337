//! The configuration file turned into checked settings: plain data, errors with the file, the
//! field path and the reason.
//!
//! The file is read into its file form (`file`: serde, defaults, unknown keys rejected), its
//! numbers are held to their bounds (`bounds`), and every section is checked and turned into
//! the settings each part of authgate is built from (`Settings`), by the file named after it:
//! `server` (`pingora:`, `listen:`, `client:`, `trusted_proxies:`, `reload:`, `access_log:`),
//! `resolver` (`resolver:`, `cache:`), `upstreams`, `routes` (`routes:`, `login:`,
//! `response_cache:`), `admin` (`admin:`, its `webhook:`), `fleet` and `jwt`; `paths` reads what the
//! file names (paths relative to it, secrets, CA files). This file only composes them.
//! Nothing here opens a socket, starts a thread or opens a file other than the ones the
//! configuration names for reading: `authgate -t` is exactly this. `runtime` builds the live
//! objects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::server::configuration::ServerConf;

mod admin;
mod bounds;
mod file;
mod fleet;
mod jwt;
mod paths;
mod resolver;
mod routes;
mod server;
mod upstreams;

use bounds::check_bounds;
pub use file::*;

pub use admin::MIN_ADMIN_TOKEN;
pub use server::{Listener, DEFAULT_PID_FILE, DEFAULT_UPGRADE_SOCK};
pub use upstreams::resolve_addr;

use crate::access_log::AccessLogSettings;
use crate::cache::CacheSettings;
use crate::connections::ClientLimits;
use crate::credentials::KeyRules;
use crate::fleet::FleetSettings;
use crate::forwarded::TrustedProxies;
use crate::identity::Namespace;
use crate::jwt::JwtSettings;
use crate::policy::Login;
use crate::resolver::ResolverSettings;
use crate::response_cache::ResponseCacheSettings;
use crate::routes::RouteRule;
use crate::upstreams::PoolSettings;
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

/// A field path from the top of the file (`resolver.timeout`, `routes[1].upstream`; empty for
/// the file itself) and what is wrong with it: what each section's checks return, made a
/// `ConfigError` here.
type Bad = (String, String);

/// Puts `section` in front of the field path of an error found inside it.
fn under(section: impl std::fmt::Display) -> impl FnOnce(Bad) -> Bad {
    move |(field, reason)| (format!("{section}{field}"), reason)
}

/// The target of the checks' warnings, whichever section's file makes them: `authgate::config`.
const LOG_TARGET: &str = module_path!();

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
    /// Local validation of JWT access tokens, when configured.
    pub jwt: Option<JwtSettings>,
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
    let err = |(field, reason): Bad| ConfigError {
        file: file.to_string(),
        field,
        reason,
    };
    let de = serde_yaml::Deserializer::from_str(text);
    let mut parsed: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let reason = tidy_serde_message(&field, &e.into_inner().to_string());
        err((field, reason))
    })?;
    let pingora = server::pingora(std::mem::take(&mut parsed.pingora), text).map_err(err)?;
    // Before anything is sized from a number: a reload must never abort or balloon.
    check_bounds(&parsed, &pingora).map_err(err)?;

    // In this order: with several mistakes, the first one found is the one reported.
    let listen = server::listen(&parsed.listen, base).map_err(err)?;
    let namespace = resolver::namespace(&parsed.resolver).map_err(err)?;
    let resolve = resolver::settings(&parsed.resolver, base).map_err(err)?;
    let keys = resolver::keys(&parsed.resolver, &resolve).map_err(err)?;
    let cache = resolver::cache(&parsed.cache, resolve.total_timeout).map_err(err)?;
    let admin = admin::admin(parsed.admin.as_ref(), base).map_err(err)?;
    let trusted = server::trusted_proxies(&parsed.trusted_proxies).map_err(err)?;
    let pools = upstreams::pools(&parsed.upstreams, base).map_err(err)?;
    let rules = routes::routes(&parsed.routes, &pools).map_err(err)?;
    let login = routes::login(parsed.login.as_ref()).map_err(err)?;
    let access_log = server::access_log(&parsed.access_log, base).map_err(err)?;
    let watch = server::watch(&parsed.reload).map_err(err)?;
    let fleet = fleet::fleet(parsed.fleet.as_ref(), base).map_err(err)?;
    let response_cache = routes::response_cache(&parsed.response_cache).map_err(err)?;
    let jwt = jwt::jwt(parsed.jwt.as_ref(), base).map_err(err)?;
    Ok(Settings {
        file: file.to_string(),
        server: pingora,
        listen,
        admin_listen: admin.listen,
        watch,
        namespace,
        resolver: resolve,
        keys,
        cache,
        admin_token: admin.token,
        webhook: admin.webhook,
        trusted,
        pools,
        routes: rules,
        login,
        access_log,
        forward_set_cookie: parsed.resolver.forward_set_cookie,
        client: server::client_limits(&parsed.client),
        fleet,
        jwt,
        response_cache,
        drain_delay: parsed.shutdown.drain_delay,
        named_files: paths::anchored(parsed.named_files(), base),
    })
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

#[cfg(test)]
mod tests;
