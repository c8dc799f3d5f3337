//! Hot reload: `SIGHUP` (or, when watching, a change of the file or of any file it names)
//! -> read and validate the whole file and the files it names -> swap the runtime snapshot
//! and the listeners' certificates. A file that fails validation changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};
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

/// A `SIGHUP` that arrives before the reloader's watch runs, whose default action would end
/// the process (a `systemctl reload` right after start): caught from the start of `main` and
/// acted on when the watch begins.
#[derive(Clone, Default)]
pub struct EarlyHangup(Arc<AtomicBool>);

impl EarlyHangup {
    /// Catches `SIGHUP` from now on (signal-hook's registry, which tokio's signal streams share:
    /// both are told).
    pub fn catch() -> EarlyHangup {
        let caught = EarlyHangup::default();
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, caught.0.clone()) {
            log::warn!("cannot catch SIGHUP before the reloader starts: {e}");
        }
        caught
    }

    /// Whether one arrived since the last look.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

pub struct Reloader {
    path: PathBuf,
    early: EarlyHangup,
    runtime: Arc<ArcSwap<Runtime>>,
    certs: Arc<CertStore>,
    fixed: Fixed,
    watch: Option<Duration>,
    /// The files the running configuration names (`Settings::named_files`).
    named: Mutex<Vec<PathBuf>>,
    /// The followed files as the process started with them.
    at_start: Fingerprint,
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
        // Taken now, right after the start's load, not when the service starts: a change in
        // between is then seen at the first look.
        let followed = followed(&path, &settings.named_files);
        Reloader {
            path,
            early: EarlyHangup::default(),
            runtime,
            certs,
            fixed: Fixed::of(settings),
            watch: settings.watch,
            named: Mutex::new(settings.named_files.clone()),
            at_start: Fingerprint::of(&followed),
        }
    }

    /// Acts, once the watch runs, on a `SIGHUP` `early` caught before.
    pub fn with_early_hangup(mut self, early: EarlyHangup) -> Self {
        self.early = early;
        self
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
        *self.named.lock().unwrap_or_else(|p| p.into_inner()) = settings.named_files;
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

    fn followed(&self) -> Vec<PathBuf> {
        followed(
            &self.path,
            &self.named.lock().unwrap_or_else(|p| p.into_inner()),
        )
    }
}

/// The configuration file and every file it names.
fn followed(path: &Path, named: &[PathBuf]) -> Vec<PathBuf> {
    std::iter::once(path.to_path_buf())
        .chain(named.iter().cloned())
        .collect()
}

/// The followed files' contents, by path, as digests (`None`: unreadable). Contents, not
/// metadata: a Kubernetes volume swaps its `..data` symlink to a new folder whose files may
/// carry the old mtimes, and the path the configuration names never changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fingerprint(BTreeMap<PathBuf, Option<[u8; 32]>>);

impl Fingerprint {
    fn of(files: &[PathBuf]) -> Fingerprint {
        Fingerprint(files.iter().map(|p| (p.clone(), digest(p))).collect())
    }

    /// After a reload: files no longer named are dropped, newly named ones read now.
    fn follow(&mut self, files: &[PathBuf]) {
        self.0.retain(|p, _| files.contains(p));
        for p in files {
            self.0.entry(p.clone()).or_insert_with(|| digest(p));
        }
    }
}

fn digest(p: &Path) -> Option<[u8; 32]> {
    std::fs::read(p)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
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
        let mut seen = self.at_start.clone();
        if self.early.take() {
            seen = Fingerprint::of(&self.followed());
            self.reload_and_report("SIGHUP before the reloader started");
            seen.follow(&self.followed());
        }
        let tick = self.watch.unwrap_or(Duration::from_secs(3600));
        loop {
            // Each fingerprint is taken before the reload reads the files: a change that
            // lands while it reads is seen at the next look, and reloaded then.
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    // The same signal, seen by the early catch too.
                    self.early.take();
                    seen = Fingerprint::of(&self.followed());
                    self.reload_and_report("SIGHUP");
                    seen.follow(&self.followed());
                }
                _ = tokio::time::sleep(tick), if self.watch.is_some() => {
                    let now = Fingerprint::of(&self.followed());
                    if now != seen {
                        seen = now;
                        self.reload_and_report("a followed file changed");
                        seen.follow(&self.followed());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "reload/tests.rs"]
mod tests;
