//! The shared answer cache in Redis (L2): the names answers and their locks are kept under,
//! the one-round-trip lookup that takes a key's lock on a miss, `fetch_through` (a local
//! miss: a sealed shared answer, or the resolver's, written through for the others), and the
//! deletes a purge makes. It keeps answers by the rules and TTLs the local cache gives it, as
//! plain values and a function, and knows nothing of resolving: the caller's `fetch` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use super::link::OFF_PATH_TIMEOUT;
use super::seal;
use super::stats::{bump, STATS};
use super::{unix_ms, Fleet, Target};
use crate::identity::{Answer, Identity};

/// How often a request polls for another instance's answer while that instance resolves.
const POLL_EVERY: Duration = Duration::from_millis(2);

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

impl Fleet {
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

    /// Deletes the shared answers a purge covers.
    pub(super) async fn delete_shared(
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
