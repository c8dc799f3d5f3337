//! The configuration file as the operator writes it: serde's view, with defaults, unknown
//! keys refused. Nothing here checks values; `config` turns this into settings.
//!
//! The file form only: nothing here names a type the proxy runs on. Where a choice is an
//! enum, the file form has its own (`PolicyFile`, `LbFile`, `FormatFile`), which `config`
//! converts; the domain enums never see serde.

use std::collections::BTreeMap;
use std::path::Path;

use pingora::server::configuration::ServerConf;
use serde::Deserialize;

mod admin;
pub(super) mod defaults;
mod fleet;
mod jwt;
mod resolver;
mod routes;
mod server;
mod upstreams;

pub use admin::*;
pub use fleet::*;
pub use jwt::*;
pub use resolver::*;
pub use routes::*;
pub use server::*;
pub use upstreams::*;

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
    /// Local validation of JWT access tokens; off when absent.
    #[serde(default)]
    pub jwt: Option<JwtFile>,
    /// What SIGTERM does before listeners close.
    #[serde(default)]
    pub shutdown: ShutdownFile,
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
        if let Some(j) = &self.jwt {
            files.extend(j.ca_file.as_deref());
        }
        if let Some(f) = &self.fleet {
            files.extend(f.secret_file.as_deref());
            files.extend(f.redis.password_file.as_deref());
            files.extend(f.redis.ca_file.as_deref());
        }
        files
    }
}
