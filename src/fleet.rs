//! Fleet mode: instances that share one Redis forget together (an authenticated pub/sub bus)
//! and share resolver answers (sealed keys with TTLs). Redis down, slow or restarted never
//! delays a request past `fleet.timeout`: the local cache and the resolver carry on alone.

pub mod seal;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::IntoConnectionInfo;
use tokio::time::Instant;

use crate::identity::{Answer, Identity, Namespace};
use crate::throttle::Throttle;
pub use seal::Purge;

/// The `fleet:` section, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// As written (it holds no password), for logs.
    pub url: String,
    pub password: Option<String>,
    /// CA certificates (PEM) for `rediss://`, instead of the system's.
    pub ca: Option<Vec<u8>>,
    pub secret: Vec<u8>,
    /// Prefix of every key and of the bus channel.
    pub prefix: String,
    /// The most a request waits on Redis, in all.
    pub timeout: Duration,
    pub shared_cache: bool,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("shared_cache", &self.shared_cache)
            .finish_non_exhaustive()
    }
}

/// A Redis URL authgate accepts: `redis://` or `rediss://`, no password in it (it would end
/// up in logs and in the YAML).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!("`{url}` is not a redis:// or rediss:// URL"));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| format!("`{url}` is not a Redis URL: {e}"))?;
    if info.redis_settings().password().is_some() {
        return Err(
            "the URL holds a password: give it in fleet.redis.password_file or password_env".into(),
        );
    }
    Ok(())
}

/// How long a bus message is accepted after it was sent (and before, for clock skew); a
/// message is applied once within it, so a replay is refused.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);
/// How often the connection is checked, and how long a check may take before it is dropped.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const DEAD_AFTER: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// What runs off the request path (publishing, writing answers through) may take this long.
const OFF_PATH_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a request polls for another instance's answer while that instance resolves.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// Tombstones (purges remembered to refuse older shared answers) kept at most.
const MAX_TOMBS: usize = 100_000;
/// Bus message ids remembered to refuse replays, at most.
const MAX_SEEN: usize = 100_000;

/// Process-wide counters: they outlive a reload that replaces the fleet.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub up: AtomicI64,
    pub sent: AtomicU64,
    pub send_failed: AtomicU64,
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub entries_rejected: AtomicU64,
    pub errors: AtomicU64,
    pub writes: AtomicU64,
    pub resyncs: AtomicU64,
}

pub static STATS: FleetStats = FleetStats {
    up: AtomicI64::new(0),
    sent: AtomicU64::new(0),
    send_failed: AtomicU64::new(0),
    applied: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    entries_rejected: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    writes: AtomicU64::new(0),
    resyncs: AtomicU64::new(0),
};

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl FleetStats {
    /// Bus messages by result.
    pub fn bus(&self) -> [(&'static str, u64); 4] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("sent", g(&self.sent)),
            ("send_failed", g(&self.send_failed)),
            ("applied", g(&self.applied)),
            ("rejected", g(&self.rejected)),
        ]
    }

    /// Shared-cache lookups by result.
    pub fn lookups(&self) -> [(&'static str, u64); 4] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("hit", g(&self.hits)),
            ("miss", g(&self.misses)),
            ("rejected", g(&self.entries_rejected)),
            ("error", g(&self.errors)),
        ]
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Warnings about what peers send come at most once in this long, not once per message.
const WARN_EVERY_MS: u64 = 10_000;

/// Purges remembered for as long as an answer resolved before them could still be fresh: a
/// shared answer resolved before a purge that covers it is refused, whoever wrote it when.
#[derive(Default)]
struct Tombstones {
    keys: HashMap<[u8; 32], u64>,
    users: HashMap<String, u64>,
    /// Every answer resolved at or before this instant is refused (a flush, or tombstones
    /// overflowing).
    floor: u64,
}

impl Tombstones {
    fn allows(&self, digest: &[u8; 32], user: Option<&str>, resolved_at: u64) -> bool {
        resolved_at > self.floor
            && self.keys.get(digest).is_none_or(|&t| resolved_at > t)
            && user.is_none_or(|u| self.users.get(u).is_none_or(|&t| resolved_at > t))
    }

    fn bury(&mut self, purge: &Target, at: u64, horizon: Duration) {
        match purge {
            Target::Key(d) => {
                let t = self.keys.entry(*d).or_default();
                *t = (*t).max(at);
            }
            Target::User(u) => {
                let t = self.users.entry(u.clone()).or_default();
                *t = (*t).max(at);
            }
            Target::Flush => {
                self.floor = self.floor.max(at);
                self.keys.clear();
                self.users.clear();
            }
            // Not a resolver answer: nothing shared in Redis to refuse.
            Target::Responses { .. } => return,
        }
        if self.keys.len() + self.users.len() > MAX_TOMBS {
            // Older than any fresh answer: nothing they refuse could be served anyway.
            let cut = at.saturating_sub(horizon.as_millis() as u64);
            self.keys.retain(|_, t| *t > cut);
            self.users.retain(|_, t| *t > cut);
            if self.keys.len() + self.users.len() > MAX_TOMBS {
                // Refusing every older shared answer is safe: it costs resolver calls only.
                self.floor = self.floor.max(at);
                self.keys.clear();
                self.users.clear();
            }
        }
    }
}

/// A purge with its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Key([u8; 32]),
    User(String),
    Flush,
    /// The response cache's objects for a URL or a prefix (not resolver answers).
    Responses {
        url: String,
        prefix: bool,
    },
}

impl Target {
    fn from_purge(p: &Purge) -> Option<Target> {
        Some(match p {
            Purge::Key { key } => Target::Key(hex::decode(key).ok()?.try_into().ok()?),
            Purge::User { user } => Target::User(user.clone()),
            Purge::Flush => Target::Flush,
            Purge::Responses { url, prefix } => Target::Responses {
                url: url.clone(),
                prefix: *prefix,
            },
        })
    }

    fn to_purge(&self) -> Purge {
        match self {
            Target::Key(d) => Purge::Key {
                key: hex::encode(d),
            },
            Target::User(u) => Purge::User { user: u.clone() },
            Target::Flush => Purge::Flush,
            Target::Responses { url, prefix } => Purge::Responses {
                url: url.clone(),
                prefix: *prefix,
            },
        }
    }
}

/// What a local miss got from the fleet path (`E`: the caller's fetch error).
pub struct Fetched<E> {
    pub result: Result<Answer, E>,
    /// Freshness left of an answer found in Redis (the local copy lives no longer).
    pub left: Option<Duration>,
}

/// How a miss through the shared cache goes, from the local cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How long this instance holds a key's lock while it resolves (the others wait on it).
    pub lock_timeout: Duration,
    /// For a refresh-ahead: a shared answer is taken only when it was resolved within this
    /// long; `None` for a plain miss.
    pub refresh_within: Option<Duration>,
}

/// What the fleet needs of the process it serves, asked afresh each time so that it follows
/// reloads. Implemented in `runtime` for the live snapshot; a fake in the unit tests.
pub trait Host: Send + Sync {
    /// The fleet the current configuration names: any other one stops serving the bus.
    fn fleet(&self) -> Option<Arc<Fleet>>;
    /// Applies another instance's purge of resolver answers to the local answer cache.
    fn apply(&self, target: &Target);
    /// Drops every local answer (purges sent while the bus was away were lost to this
    /// instance); how many were held.
    fn resync(&self) -> i64;
    /// How long a purge must be remembered to refuse shared answers resolved before it.
    fn horizon(&self) -> Duration;
    /// Applies another instance's purge of stored responses (a URL, or a prefix); why not,
    /// when it does not apply here.
    fn purge_responses(&self, url: &str, prefix: bool) -> Result<(), String>;
}

pub struct Fleet {
    settings: FleetSettings,
    client: redis::Client,
    keys: seal::Keys,
    namespace: Namespace,
    channel: String,
    /// This process on the bus: its own messages come back and are skipped.
    instance: String,
    seq: AtomicU64,
    /// The command connection while connected and subscribed.
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Redis answered a request or a check later than `timeout`: requests leave it alone
    /// until a check is in time again.
    slow: AtomicBool,
    seen: Mutex<HashMap<(String, u64), u64>>,
    tombs: Mutex<Tombstones>,
    warn_refused: Throttle,
    warn_forged: Throttle,
    warn_publish: Throttle,
}

/// What `connect` makes: the command connection and the bus subscription's two halves.
type Session = (
    MultiplexedConnection,
    redis::aio::PubSubSink,
    redis::aio::PubSubStream,
);

fn instance_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(unix_ms());
    format!("{:016x}", h.finish())
}

impl Fleet {
    pub fn new(settings: FleetSettings, namespace: Namespace) -> Result<Fleet, String> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("`{}` is not a Redis URL: {e}", settings.url))?;
        if let Some(p) = &settings.password {
            let redis = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(redis);
        }
        let client = match &settings.ca {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| format!("cannot use `{}`: {e}", settings.url))?;
        Ok(Fleet {
            keys: seal::Keys::derive(&settings.secret),
            channel: format!("{}bus", settings.prefix),
            settings,
            client,
            namespace,
            instance: instance_id(),
            seq: AtomicU64::new(0),
            conn: ArcSwapOption::empty(),
            slow: AtomicBool::new(false),
            seen: Mutex::new(HashMap::new()),
            tombs: Mutex::new(Tombstones::default()),
            warn_refused: Throttle::every_ms(WARN_EVERY_MS),
            warn_forged: Throttle::every_ms(WARN_EVERY_MS),
            warn_publish: Throttle::every_ms(WARN_EVERY_MS),
        })
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Whether local misses look in Redis first.
    pub fn shares_answers(&self) -> bool {
        self.settings.shared_cache
    }

    /// The connection while connected, however slow (for what runs off the request path).
    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.load().as_deref().cloned()
    }

    /// The connection for a request, when Redis is there and answering in time.
    fn fast_conn(&self) -> Option<MultiplexedConnection> {
        if self.slow.load(Ordering::Relaxed) {
            return None;
        }
        self.conn()
    }

    fn mark_slow(&self, why: &str) {
        if !self.slow.swap(true, Ordering::Relaxed) {
            log::warn!(
                "fleet: Redis {why} (timeout {:?}); the shared cache is skipped until it answers in time",
                self.settings.timeout
            );
        }
    }

    fn answer_key(&self, digest: &[u8; 32]) -> (String, String) {
        let name = self.keys.answer_name(&self.namespace, digest);
        (
            format!("{}a:{name}", self.settings.prefix),
            format!("{}l:{name}", self.settings.prefix),
        )
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}u:{}", self.settings.prefix, self.keys.user_name(user))
    }

    /// Runs one Redis exchange within `deadline`. A timeout marks Redis slow only when the
    /// exchange had at least half of `timeout` to answer: a wait for another instance's
    /// answer that runs out of time says nothing about Redis.
    async fn within<T>(
        &self,
        deadline: Instant,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let had = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(deadline, f).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                bump(&STATS.errors);
                log::debug!("fleet: Redis error: {e}");
                None
            }
            Err(_) => {
                bump(&STATS.errors);
                if had >= self.settings.timeout / 2 {
                    self.mark_slow(&format!("took longer than {had:?} to answer a request"));
                }
                None
            }
        }
    }

    /// A shared answer, checked: sealed for this key, resolved after every purge that covers
    /// it, still fresh; for a refresh, resolved after `resolved_after` (unix ms).
    fn check(
        &self,
        digest: &[u8; 32],
        key: &str,
        wire: &[u8],
        resolved_after: u64,
    ) -> Option<(Arc<Identity>, Duration)> {
        let entry = match seal::open_entry(&self.keys, key, &self.namespace, wire) {
            Ok(e) => e,
            Err(why) => {
                bump(&STATS.entries_rejected);
                if self.warn_forged.ready() {
                    log::warn!("fleet: refused a shared answer ({why:?}): written without the fleet secret, altered, or moved from another key; resolving afresh");
                }
                return None;
            }
        };
        let allowed = self
            .tombs()
            .allows(digest, entry.identity.user_id(), entry.resolved_at);
        if !allowed {
            bump(&STATS.entries_rejected);
            return None;
        }
        let now = unix_ms();
        if now >= entry.fresh_until || entry.resolved_at < resolved_after {
            bump(&STATS.misses);
            return None;
        }
        bump(&STATS.hits);
        Some((
            Arc::new(entry.identity),
            Duration::from_millis(entry.fresh_until - now),
        ))
    }

    fn tombs(&self) -> std::sync::MutexGuard<'_, Tombstones> {
        self.tombs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A local miss: the shared answer when Redis has a good one; else the resolver's (one
    /// instance at a time per key, by a short lock), written through for the others. A
    /// refresh takes a shared answer only when another instance resolved it within
    /// `rules.refresh_within`, so a fleet refreshes a session about once a period, not once
    /// per instance. Redis is waited on for `timeout` at most in all, whatever it does. An
    /// answer is written through for as long as `ttl` says (`None`: not at all), and not once
    /// `purged` is set.
    pub async fn fetch_through<E, F, Fut>(
        &self,
        digest: &[u8; 32],
        rules: Rules,
        ttl: impl Fn(&Identity) -> Option<Duration>,
        fetch: F,
        purged: &AtomicBool,
    ) -> Fetched<E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Answer, E>>,
    {
        let (answer_key, lock_key) = self.answer_key(digest);
        let mut lock = None;
        let resolved_after = match rules.refresh_within {
            Some(within) => unix_ms().saturating_sub(within.as_millis() as u64),
            None => 0,
        };
        if let Some(mut conn) = self.fast_conn() {
            let deadline = Instant::now() + self.settings.timeout;
            let token = format!(
                "{}:{}",
                self.instance,
                self.seq.fetch_add(1, Ordering::Relaxed)
            );
            let lock_ms = rules.lock_timeout.as_millis().max(1) as u64;
            let got: Option<(Vec<u8>, i64)> = self
                .within(
                    deadline,
                    LOOKUP_OR_LOCK
                        .key(&answer_key)
                        .key(&lock_key)
                        .arg(&token)
                        .arg(lock_ms)
                        .arg(seal::MAX_ENTRY)
                        .invoke_async(&mut conn),
                )
                .await;
            let taken = match got {
                Some((wire, _)) if !wire.is_empty() => {
                    if let Some((identity, left)) =
                        self.check(digest, &answer_key, &wire, resolved_after)
                    {
                        return found(identity, left);
                    }
                    // Refused or expired: resolved afresh, and written over.
                    None
                }
                Some((_, taken)) => {
                    bump(&STATS.misses);
                    Some(taken == 1)
                }
                None => None,
            };
            match taken {
                Some(true) => lock = Some(token),
                // Another instance resolves this key now: its answer is awaited until the
                // deadline, or until its lock goes without an answer (a denial, a failure).
                Some(false) => loop {
                    if Instant::now() + POLL_EVERY >= deadline {
                        break;
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                    let polled: Option<(Vec<u8>, bool)> = self
                        .within(
                            deadline,
                            redis::pipe()
                                .add_command(read_entry(&answer_key))
                                .cmd("EXISTS")
                                .arg(&lock_key)
                                .query_async(&mut conn),
                        )
                        .await;
                    match polled {
                        Some((wire, _)) if !wire.is_empty() => {
                            if let Some((identity, left)) =
                                self.check(digest, &answer_key, &wire, resolved_after)
                            {
                                return found(identity, left);
                            }
                            break;
                        }
                        Some((_, true)) => {}
                        _ => break,
                    }
                },
                None => {}
            }
        }

        let resolved_at = unix_ms();
        let result = fetch().await;
        let conn = self.fast_conn();
        let write = match (&result, conn) {
            (Ok(Answer::Identity(identity)), Some(conn)) if !purged.load(Ordering::Acquire) => {
                ttl(identity).map(|ttl| (identity, ttl, conn))
            }
            _ => None,
        };
        // Written through off the request path: the request has had its `timeout` of Redis.
        let mut pipe = redis::pipe();
        let mut writes = false;
        if let Some((identity, ttl, _)) = &write {
            let fresh_until = resolved_at.saturating_add(ttl.as_millis() as u64);
            let sealed =
                seal::seal_entry(&self.keys, &answer_key, identity, resolved_at, fresh_until);
            let ttl_ms = ttl.as_millis().max(1) as u64;
            pipe.cmd("SET")
                .arg(&answer_key)
                .arg(sealed)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            if let Some(user) = identity.user_id() {
                // The user's index outlives each answer it lists.
                let index = self.user_key(user);
                pipe.cmd("SADD").arg(&index).arg(&answer_key).ignore();
                pipe.cmd("PEXPIRE").arg(&index).arg(ttl_ms).ignore();
            }
            writes = true;
        }
        // Waiters elsewhere see the lock go and read the answer, or resolve themselves.
        if let Some(token) = &lock {
            release(&mut pipe, &lock_key, token);
        }
        let conn = match write {
            Some((_, _, conn)) => Some(conn),
            None if lock.is_some() => self.conn(),
            None => None,
        };
        if let Some(mut conn) = conn {
            tokio::spawn(async move {
                match tokio::time::timeout(OFF_PATH_TIMEOUT, pipe.query_async::<()>(&mut conn))
                    .await
                {
                    Ok(Ok(())) if writes => bump(&STATS.writes),
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        bump(&STATS.errors);
                        log::debug!("fleet: writing a shared answer: {e}");
                    }
                    Err(_) => bump(&STATS.errors),
                }
            });
        }
        Fetched { result, left: None }
    }

    /// A purge made here: remembered (so older shared answers are refused), published to the
    /// others, and its shared answers deleted; off the request path.
    pub fn publish(self: &Arc<Self>, target: Target, horizon: Duration) {
        let at = unix_ms();
        self.tombs().bury(&target, at, horizon);
        let msg = seal::Message {
            v: 1,
            from: self.instance.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at,
            purge: target.to_purge(),
        };
        let wire = seal::seal_message(&self.keys, &self.settings.prefix, &msg);
        let Some(mut conn) = self.conn() else {
            bump(&STATS.send_failed);
            log::debug!("fleet: not connected; purge applied here only");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let published = tokio::time::timeout(
                OFF_PATH_TIMEOUT,
                redis::cmd("PUBLISH")
                    .arg(&this.channel)
                    .arg(&wire)
                    .query_async::<i64>(&mut conn),
            )
            .await;
            match published {
                Ok(Ok(_)) => bump(&STATS.sent),
                Ok(Err(e)) => {
                    bump(&STATS.send_failed);
                    if this.warn_publish.ready() {
                        log::warn!("fleet: a purge was not published: {e} (counted in authgate_fleet_bus_messages_total{{result=\"send_failed\"}})");
                    }
                }
                Err(_) => {
                    bump(&STATS.send_failed);
                    if this.warn_publish.ready() {
                        log::warn!("fleet: a purge was not published in {OFF_PATH_TIMEOUT:?} (counted in authgate_fleet_bus_messages_total{{result=\"send_failed\"}})");
                    }
                }
            }
            if this.settings.shared_cache {
                let _ =
                    tokio::time::timeout(BACKOFF_MAX, this.delete_shared(&mut conn, &target)).await;
            }
        });
    }

    /// Deletes the shared answers a purge covers.
    async fn delete_shared(
        &self,
        conn: &mut MultiplexedConnection,
        target: &Target,
    ) -> redis::RedisResult<()> {
        match target {
            Target::Key(d) => {
                let (answer_key, _) = self.answer_key(d);
                redis::cmd("UNLINK").arg(answer_key).query_async(conn).await
            }
            Target::User(u) => {
                let index = self.user_key(u);
                let members: Vec<String> =
                    redis::cmd("SMEMBERS").arg(&index).query_async(conn).await?;
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&index);
                for m in members {
                    unlink.arg(m);
                }
                unlink.query_async(conn).await
            }
            Target::Flush => {
                for kind in ["a", "u"] {
                    let pattern = format!("{}{kind}:*", self.settings.prefix);
                    let mut cursor = 0u64;
                    loop {
                        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(conn)
                            .await?;
                        if !keys.is_empty() {
                            redis::cmd("UNLINK")
                                .arg(keys)
                                .query_async::<()>(conn)
                                .await?;
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(())
            }
            Target::Responses { .. } => Ok(()),
        }
    }

    /// A bus message: checked (MAC, window, replay), then applied through the host.
    fn receive(&self, host: &dyn Host, wire: &[u8]) {
        let msg = match self.accept(wire) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(why) => {
                bump(&STATS.rejected);
                if self.warn_refused.ready() {
                    log::warn!(
                        "fleet: refused a bus message on {} ({}); whoever sent it lacks the fleet secret or replays old messages",
                        self.channel,
                        why.as_str()
                    );
                }
                return;
            }
        };
        let Some(target) = Target::from_purge(&msg.purge) else {
            bump(&STATS.rejected);
            return;
        };
        if let Target::Responses { url, prefix } = &target {
            if let Err(why) = host.purge_responses(url, *prefix) {
                log::debug!("fleet: a response purge for `{url}` does not apply: {why}");
            }
            bump(&STATS.applied);
            return;
        }
        let at = msg.at.max(unix_ms());
        self.tombs().bury(&target, at, host.horizon());
        host.apply(&target);
        bump(&STATS.applied);
    }

    /// The message if it is to be applied; `None` for this instance's own.
    fn accept(&self, wire: &[u8]) -> Result<Option<seal::Message>, seal::Refused> {
        let msg = seal::open_message(&self.keys, &self.settings.prefix, wire)?;
        if msg.from == self.instance {
            return Ok(None);
        }
        let now = unix_ms();
        let window = REPLAY_WINDOW.as_millis() as u64;
        if msg.at.abs_diff(now) > window {
            return Err(seal::Refused::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_SEEN / 2 {
            seen.retain(|_, at| at.abs_diff(now) <= window);
        }
        if seen.len() >= MAX_SEEN {
            return Err(seal::Refused::Replayed);
        }
        if seen.insert((msg.from.clone(), msg.seq), msg.at).is_some() {
            return Err(seal::Refused::Replayed);
        }
        Ok(Some(msg))
    }

    /// Connects, subscribes, and serves the bus until the host's fleet is another one;
    /// reconnects with backoff when Redis goes away.
    async fn run(self: &Arc<Self>, host: &dyn Host) {
        let serve = |(conn, sink, stream): Session| async move {
            self.conn.store(Some(Arc::new(conn.clone())));
            STATS.up.store(1, Ordering::Relaxed);
            let ended = self.serve(host, conn, sink, stream).await;
            self.conn.store(None);
            STATS.up.store(0, Ordering::Relaxed);
            ended
        };
        self.follow(host, || self.connect(), serve).await;
    }

    /// `run`'s loop, given how to make a session (`connect`) and how to keep one until it
    /// ends (`serve`: why, or `None` once this fleet was replaced), so that a unit test can
    /// drive it without Redis.
    async fn follow<S, C, V>(
        self: &Arc<Self>,
        host: &dyn Host,
        mut connect: impl FnMut() -> C,
        mut serve: impl FnMut(S) -> V,
    ) where
        C: Future<Output = Result<S, String>>,
        V: Future<Output = Option<String>>,
    {
        let mut backoff = BACKOFF_MIN;
        let mut reachable = None;
        while self.is_current(host) {
            match connect().await {
                Err(why) => {
                    if reachable != Some(false) {
                        log::warn!(
                            "fleet: cannot reach Redis at {} ({why}); serving from the local cache and the resolver, retrying",
                            self.settings.url
                        );
                        reachable = Some(false);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Ok(session) => {
                    let since = Instant::now();
                    // Purges published while this instance was not subscribed are lost to
                    // it: every answer it holds may be one of them.
                    let dropped = host.resync();
                    if dropped > 0 || reachable.is_some() {
                        bump(&STATS.resyncs);
                    }
                    self.slow.store(false, Ordering::Relaxed);
                    log::info!(
                        "fleet: connected to Redis at {}, subscribed to {}; dropped {dropped} local answers held while not subscribed",
                        self.settings.url,
                        self.channel
                    );
                    reachable = Some(true);
                    match serve(session).await {
                        Some(why) => log::warn!(
                            "fleet: lost Redis at {} ({why}); serving from the local cache and the resolver until it is back",
                            self.settings.url
                        ),
                        None => return,
                    }
                    // A connection that keeps failing soon after it is made backs off too.
                    if since.elapsed() > BACKOFF_MAX * 2 {
                        backoff = BACKOFF_MIN;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn is_current(self: &Arc<Self>, host: &dyn Host) -> bool {
        host.fleet().is_some_and(|f| Arc::ptr_eq(&f, self))
    }

    async fn connect(&self) -> Result<Session, String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(DEAD_AFTER))
            .set_response_timeout(Some(DEAD_AFTER));
        let conn = tokio::time::timeout(
            DEAD_AFTER,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| format!("no connection in {DEAD_AFTER:?}"))?
        .map_err(|e| e.to_string())?;
        let subscribed = tokio::time::timeout(DEAD_AFTER, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await
        .map_err(|_| format!("not subscribed in {DEAD_AFTER:?}"))?
        .map_err(|e| e.to_string())?;
        let (sink, stream) = subscribed.split();
        Ok((conn, sink, stream))
    }

    /// Applies bus messages and checks both connections every `HEALTH_EVERY`; returns why
    /// the connection ended, or `None` when this fleet was replaced by a reload.
    async fn serve(
        self: &Arc<Self>,
        host: &dyn Host,
        conn: MultiplexedConnection,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
    ) -> Option<String> {
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(m) => self.receive(host, m.get_payload_bytes()),
                    None => return Some("the bus connection closed".into()),
                },
                _ = tick.tick() => {
                    if !self.is_current(host) {
                        return None;
                    }
                    let started = Instant::now();
                    let mut c = conn.clone();
                    let checked = tokio::time::timeout(DEAD_AFTER, async {
                        redis::cmd("PING").query_async::<()>(&mut c).await?;
                        sink.ping::<redis::Value>().await.map(|_| ())
                    })
                    .await;
                    match checked {
                        Err(_) => return Some(format!("no answer to PING in {DEAD_AFTER:?}")),
                        Ok(Err(e)) => return Some(format!("PING failed: {e}")),
                        Ok(Ok(())) => {
                            let took = started.elapsed();
                            if took > self.settings.timeout {
                                self.mark_slow(&format!("took {took:?} to answer PING"));
                            } else if self.slow.swap(false, Ordering::Relaxed) {
                                log::info!("fleet: Redis answers in time again ({took:?}); the shared cache is used again");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One round trip for a miss: the shared answer (at most `MAX_ENTRY` bytes) if there is one,
/// else the lock, taken if free: `{answer, 0}`, `{"", 1}` (the lock is ours) or `{"", 0}`.
static LOOKUP_OR_LOCK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('GETRANGE', KEYS[1], 0, ARGV[3])
if #v > 0 then return {v, 0} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'', 1} end
return {'', 0}
",
    )
});

/// Reads at most `MAX_ENTRY` bytes of an answer (empty when there is none): a value planted
/// in Redis cannot make an instance read hundreds of megabytes per miss.
fn read_entry(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("GETRANGE");
    cmd.arg(key).arg(0).arg(seal::MAX_ENTRY);
    cmd
}

fn found<E>(identity: Arc<Identity>, left: Duration) -> Fetched<E> {
    Fetched {
        result: Ok(Answer::Identity(identity)),
        left: Some(left),
    }
}

/// Deletes the lock only while it is still this request's (it may have expired and been
/// taken by another instance).
fn release(pipe: &mut redis::Pipeline, lock_key: &str, token: &str) {
    pipe.cmd("EVAL")
        .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
        .arg(1)
        .arg(lock_key)
        .arg(token)
        .ignore();
}

/// Keeps the host's fleet connected (whichever fleet the current configuration names).
pub struct Supervisor {
    host: Arc<dyn Host>,
}

impl Supervisor {
    pub fn new(host: Arc<dyn Host>) -> Self {
        Supervisor { host }
    }
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let fleet = self.host.fleet();
            let idle = async {
                match &fleet {
                    Some(f) => f.run(&*self.host).await,
                    // No fleet configured: look again after a reload may have added one.
                    None => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = idle => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "fleet/tests.rs"]
mod tests;
