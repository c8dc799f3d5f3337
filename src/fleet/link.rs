//! The link to Redis: the client and its connections, the PING health check, the slow flag
//! that keeps requests off a Redis answering late, reconnection with backoff, and the
//! supervisor that keeps the current configuration's fleet connected across reloads.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::IntoConnectionInfo;
use tokio::time::Instant;

use super::stats::{bump, STATS};
use super::{Fleet, FleetSettings, Host};

/// How often the connection is checked, and how long a check may take before it is dropped.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const DEAD_AFTER: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// What runs off the request path (publishing, writing answers through) may take this long.
pub(super) const OFF_PATH_TIMEOUT: Duration = Duration::from_secs(1);

/// The client for `settings`: the URL with the password and CA given apart; connects nothing.
pub(super) fn client(settings: &FleetSettings) -> Result<redis::Client, String> {
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("`{}` is not a Redis URL: {e}", settings.url))?;
    if let Some(p) = &settings.password {
        let redis = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(redis);
    }
    match &settings.ca {
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
    .map_err(|e| format!("cannot use `{}`: {e}", settings.url))
}

/// What `connect` makes: the command connection and the bus subscription's two halves.
type Session = (
    MultiplexedConnection,
    redis::aio::PubSubSink,
    redis::aio::PubSubStream,
);

impl Fleet {
    /// The connection while connected, however slow (for what runs off the request path).
    pub(super) fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.load().as_deref().cloned()
    }

    /// The connection for a request, when Redis is there and answering in time.
    pub(super) fn fast_conn(&self) -> Option<MultiplexedConnection> {
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

    /// Runs one Redis exchange within `deadline`. A timeout marks Redis slow only when the
    /// exchange had at least half of `timeout` to answer: a wait for another instance's
    /// answer that runs out of time says nothing about Redis.
    pub(super) async fn within<T>(
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
    pub(super) async fn follow<S, C, V>(
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
