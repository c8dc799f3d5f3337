//! Hot reload: `SIGHUP` (or a change of the file, when watching) -> read and validate the
//! whole file and the TLS pairs -> swap the runtime snapshot and the listeners' certificates.
//! A file that fails validation changes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, ConfigError, Listener};
use crate::metrics::METRICS;
use crate::runtime::Runtime;
use crate::tls::CertStore;

/// What cannot change without a graceful upgrade, as the process started with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub listen: Vec<Listener>,
    pub admin_listen: Option<std::net::SocketAddr>,
    /// The `pingora:` section as loaded (Pingora reads it once, at start).
    pub pingora: serde_yaml::Value,
    /// `client.*` settings handed to Pingora's server options at start.
    pub client_at_start: (Option<u32>, Duration),
}

impl Fixed {
    pub fn of(settings: &config::Settings) -> Fixed {
        Fixed {
            listen: settings.listen.clone(),
            admin_listen: settings.admin_listen,
            pingora: pingora_value(settings),
            client_at_start: client_at_start(settings),
        }
    }
}

fn client_at_start(settings: &config::Settings) -> (Option<u32>, Duration) {
    let c = &settings.client;
    (c.max_requests, c.keepalive_timeout)
}

fn pingora_value(settings: &config::Settings) -> serde_yaml::Value {
    serde_yaml::to_value(&settings.server).unwrap_or_default()
}

pub struct Reloader {
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    certs: Arc<CertStore>,
    fixed: Fixed,
    watch: Option<Duration>,
}

impl Reloader {
    /// A reloader of the file at `path`, which `settings` were loaded from at start; `certs`
    /// serves the TLS listeners' pairs.
    pub fn new(
        path: PathBuf,
        settings: &config::Settings,
        runtime: Arc<ArcSwap<Runtime>>,
        certs: Arc<CertStore>,
    ) -> Self {
        Reloader {
            path,
            runtime,
            certs,
            fixed: Fixed::of(settings),
            watch: settings.watch,
        }
    }

    /// Reads the file and swaps the runtime; returns what needs a graceful upgrade to apply.
    pub fn reload(&self) -> Result<Vec<String>, ConfigError> {
        let old = self.runtime.load_full();
        let settings = config::load(&self.path)?;
        let runtime = Runtime::build(&settings, Some(&old))?;
        // A pair that cannot be served fails the whole reload, like any error in the file:
        // one state to reason about, never routes of the new file with a certificate refused.
        let rotation = self.certs.read_all().map_err(|reason| ConfigError {
            file: settings.file.clone(),
            field: String::new(),
            reason,
        })?;
        let mut pending = Vec::new();
        if settings.listen != self.fixed.listen {
            pending.push("listen".to_string());
        }
        if settings.admin_listen != self.fixed.admin_listen {
            pending.push("admin.listen".to_string());
        }
        let (requests, keepalive) = client_at_start(&settings);
        if requests != self.fixed.client_at_start.0 {
            pending.push("client.max_requests_per_connection".to_string());
        }
        if keepalive != self.fixed.client_at_start.1 {
            pending.push("client.keepalive_timeout (for HTTP/2)".to_string());
        }
        let pingora = pingora_value(&settings);
        if let (Some(was), Some(now)) = (self.fixed.pingora.as_mapping(), pingora.as_mapping()) {
            for (key, value) in now {
                if was.get(key) != Some(value) {
                    let key = key.as_str().unwrap_or("?");
                    pending.push(format!("pingora.{key}"));
                }
            }
        }
        if !Arc::ptr_eq(&old.cache, &runtime.cache) {
            log::info!(
                "reload: the resolver or the cache key changed; the answer cache starts empty"
            );
        }
        crate::connections::apply_to_pingora(&runtime.client);
        self.runtime.store(Arc::new(runtime));
        self.certs.install(rotation);
        Ok(pending)
    }

    fn reload_and_report(&self, why: &str) {
        match self.reload() {
            Ok(pending) => {
                METRICS.reloads.with_label_values(&["ok"]).inc();
                log::info!("reloaded {} ({why})", self.path.display());
                if !pending.is_empty() {
                    log::warn!(
                        "reload: {} changed and needs a graceful upgrade (authgate -u); kept as they were",
                        pending.join(", ")
                    );
                }
            }
            Err(e) => {
                METRICS.reloads.with_label_values(&["failed"]).inc();
                log::error!("reload failed, the previous configuration keeps serving: {e}");
            }
        }
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                return;
            }
        };
        let mut seen = self.modified();
        let tick = self.watch.unwrap_or(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    self.reload_and_report("SIGHUP");
                    seen = self.modified();
                }
                _ = tokio::time::sleep(tick), if self.watch.is_some() => {
                    let now = self.modified();
                    if now != seen {
                        seen = now;
                        self.reload_and_report("the file changed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "reload/tests.rs"]
mod tests;
