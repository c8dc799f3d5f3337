//! The request path's snapshot, `Runtime`, built from checked settings, and every rule of
//! what survives a reload: what keeps its state when the file changes, and why.
//!
//! | part | kept across a reload when | because |
//! |---|---|---|
//! | resolver (its pooled connections) | its settings are unchanged | new settings need new connections |
//! | answer cache (its answers) | resolver, key rules and capacity are unchanged; TTLs and timeouts are updated in place | answers from another resolver, or under other keys, are not answers for this one; TinyUFO's capacity is fixed at creation |
//! | each upstream pool (health state, balancer) | same name, same settings | a backend marked down stays down until its checks say otherwise |
//! | access log writer | its settings are unchanged | one writer thread, lines in order |
//! | fleet (its Redis connections, purges remembered) | its settings and the namespace are unchanged | new settings need new connections; shared answers are named by the namespace |
//! | JWT validator (its keys, the unknown-`kid` cooldown) | `jwt:` is unchanged | other keys, issuer or audience are another trust decision; a new one fetches its keys at once |
//! | purges remembered against locally validated tokens | always (a new cache adopts them) | a disabled user's old tokens must not be vouched for again because the cache was rebuilt |
//!
//! Everything else (routes, namespace, trusted proxies, login, limits, the drain delay) is plain
//! data, rebuilt.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::cache::{Cache, PurgeCause};
use crate::config::{ConfigError, Settings};
use crate::connections::{ClientLimits, LimitsSource};
use crate::credentials::KeyRules;
use crate::fleet::{self, Fleet, Target};
use crate::forwarded::TrustedProxies;
use crate::identity::Namespace;
use crate::jwt::Validator;
use crate::metrics::{self, RequestCounters};
use crate::policy::Login;
use crate::resolver::Resolver;
use crate::response_cache;
use crate::routes::{Route, Routes};
use crate::upstreams::Pool;
use crate::webhook::WebhookSettings;

/// Everything the request path reads, immutable once built; swapped whole on reload.
pub struct Runtime {
    pub namespace: Namespace,
    pub resolver: Arc<Resolver>,
    pub keys: KeyRules,
    pub cache: Arc<Cache>,
    /// The admin bearer token, when the admin listener is on.
    pub admin_token: Option<Vec<u8>>,
    /// Authgear's webhook receiver, when configured.
    pub webhook: Option<WebhookSettings>,
    pub trusted: TrustedProxies,
    pub routes: Routes,
    /// Every pool, the resolver's last (named `resolver::POOL_NAME`), for the health checks.
    pub pools: Vec<Arc<Pool>>,
    pub login: Option<Login>,
    pub access_log: Option<Arc<AccessLog>>,
    pub forward_set_cookie: bool,
    pub client: ClientLimits,
    /// `shutdown.drain_delay`, read when `SIGTERM` arrives (a reload changes it).
    pub drain_delay: Duration,
    /// Each route's request counters, by the route's position in the file.
    pub route_counters: Vec<RequestCounters>,
    /// Fleet mode, when configured; the cache's misses and purges go through it.
    pub fleet: Option<Arc<Fleet>>,
    /// The response cache's store, once a route has `cache:` (made at the first such
    /// configuration and kept for the life of the process).
    pub response_cache: Option<&'static response_cache::Engine>,
    /// Local validation of JWT access tokens, when `jwt:` is configured.
    pub jwt: Option<Arc<Validator>>,
}

impl Runtime {
    /// Builds the snapshot for `settings`, keeping from `previous` what the table above says.
    pub fn build(settings: &Settings, previous: Option<&Runtime>) -> Result<Runtime, ConfigError> {
        let err = |field: &str, reason: String| ConfigError {
            file: settings.file.clone(),
            field: field.to_string(),
            reason,
        };
        let same_resolver = previous.filter(|p| *p.resolver.settings() == settings.resolver);
        let cache = match same_resolver {
            Some(p)
                if p.keys == settings.keys
                    && p.cache.settings().capacity == settings.cache.capacity =>
            {
                p.cache.update_settings(settings.cache.clone());
                p.cache.clone()
            }
            _ => {
                let cache = Cache::new(settings.cache.clone());
                if let Some(p) = previous {
                    cache.adopt_purges(&p.cache);
                }
                cache
            }
        };
        let resolver = match same_resolver {
            Some(p) => p.resolver.clone(),
            None => Arc::new(
                Resolver::new(settings.resolver.clone(), &settings.server)
                    .map_err(|r| err("resolver", r))?,
            ),
        };

        let fleet = match &settings.fleet {
            None => None,
            Some(f) => match previous
                .and_then(|p| p.fleet.as_ref())
                .filter(|old| old.settings() == f && *old.namespace() == settings.namespace)
            {
                Some(kept) => Some(kept.clone()),
                None => Some(Arc::new(
                    Fleet::new(f.clone(), settings.namespace.clone())
                        .map_err(|r| err("fleet.redis.url", r))?,
                )),
            },
        };
        let mut pools = Vec::with_capacity(settings.pools.len() + 1);
        for (name, pool_settings) in &settings.pools {
            let kept = previous.and_then(|p| {
                p.pools
                    .iter()
                    .find(|old| old.name() == name && old.settings() == pool_settings)
            });
            pools.push(match kept {
                Some(old) => old.clone(),
                None => Arc::new(
                    Pool::new(pool_settings.clone())
                        .map_err(|r| err(&format!("upstreams.{name}"), r))?,
                ),
            });
        }
        let mut routes = Vec::with_capacity(settings.routes.len());
        let mut route_counters = Vec::with_capacity(settings.routes.len());
        for rule in &settings.routes {
            // The checks made sure every route names a defined upstream.
            let pool = pools
                .iter()
                .find(|p| p.name() == rule.upstream)
                .ok_or_else(|| {
                    err(
                        &format!("routes[{}].upstream", rule.index),
                        format!("no upstream named `{}`", rule.upstream),
                    )
                })?;
            routes.push(Route::bind(rule, pool.clone()));
            route_counters.push(metrics::request_counters(&rule.label));
        }
        pools.push(resolver.pool().clone());

        let access_log = match &settings.access_log {
            None => None,
            Some(log) => match previous
                .and_then(|p| p.access_log.as_ref())
                .filter(|l| l.settings() == log)
            {
                Some(kept) => Some(kept.clone()),
                None => Some(Arc::new(
                    AccessLog::open(log.clone()).map_err(|why| err("access_log.path", why))?,
                )),
            },
        };
        let jwt = settings.jwt.as_ref().map(|j| {
            previous
                .and_then(|p| p.jwt.as_ref())
                .filter(|old| old.settings() == j)
                .cloned()
                .unwrap_or_else(|| Arc::new(Validator::new(j.clone())))
        });
        // Last: a build that fails leaves the running cache as it was.
        cache.attach_fleet(fleet.clone());
        let response_cache = settings
            .routes
            .iter()
            .any(|r| r.cache.is_some())
            .then(|| response_cache::engine(settings.response_cache));
        Ok(Runtime {
            response_cache,
            namespace: settings.namespace.clone(),
            resolver,
            keys: settings.keys.clone(),
            cache,
            admin_token: settings.admin_token.clone(),
            webhook: settings.webhook.clone(),
            trusted: settings.trusted.clone(),
            routes: Routes::new(routes),
            pools,
            login: settings.login.clone(),
            access_log,
            forward_set_cookie: settings.forward_set_cookie,
            client: settings.client,
            drain_delay: settings.drain_delay,
            route_counters,
            fleet,
            jwt,
        })
    }
}

/// The client limits follow reloads: `connections` reads them through its own trait.
impl LimitsSource for ArcSwap<Runtime> {
    fn limits(&self) -> ClientLimits {
        self.load().client
    }
}

/// The fleet follows reloads through the live snapshot: each call reads the current one.
impl fleet::Host for ArcSwap<Runtime> {
    fn fleet(&self) -> Option<Arc<Fleet>> {
        self.load().fleet.clone()
    }

    fn apply(&self, target: &Target) {
        self.load().cache.apply(target, PurgeCause::Fleet);
    }

    fn resync(&self) -> i64 {
        self.load().cache.resync()
    }

    fn horizon(&self) -> Duration {
        self.load().cache.horizon()
    }

    fn purge_responses(&self, url: &str, prefix: bool) -> Result<(), String> {
        match self.load().response_cache {
            Some(engine) => response_cache::purge_local(engine, url, prefix).map(|_| ()),
            None => Ok(()),
        }
    }
}
