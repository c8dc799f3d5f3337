//! Local validation of Authgear's JWT access tokens: a bearer token that passes every check
//! here is answered with the identity the resolver would give for it, without a resolver
//! call; anything else goes to the resolver as before (never a local refusal: the resolver
//! decides what a failed bearer means, it falls through to the cookies).
//!
//! This file owns the settings, the `Validator` (the key set, the checks in order, the
//! identity built from the claims) and `KeyKeeper`, the background service that fetches the
//! keys. One concern a file: `token` (the strict reading of one token), `keys` (the JWKS and
//! the signature), `fetch` (the JWKS request), `stats`. What a purge does to local answers is
//! the answer cache's (`cache::Vouched`): this module knows nothing of purges.

mod fetch;
mod keys;
mod stats;
mod token;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use crate::identity::{Identity, Namespace};

pub use fetch::JwksSource;
pub use keys::{KeySet, MAX_RSA_BITS, MIN_RSA_BITS};
pub use stats::{JwtStats, FETCH_RESULTS, STATS};

/// A JWKS answer larger than this is refused (Authgear's holds a few 2048-bit keys, ~1.5 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// A JWKS with more keys than this is refused.
pub const MAX_KEYS: usize = 64;

/// `jwt:`, checked by `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub jwks: JwksSource,
    pub issuer: String,
    /// Any one of them in `aud` will do.
    pub audience: Vec<String>,
    pub leeway: Duration,
    /// How often the keys are fetched again (shorter when the JWKS says `max-age`).
    pub refresh: Duration,
    /// After a token names an unknown key, the keys are fetched again at most once in this long.
    pub unknown_kid_cooldown: Duration,
    pub max_token_bytes: usize,
    /// The whole JWKS request, connection included.
    pub fetch_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// Why a bearer token was left to the resolver (`authgate_jwt_tokens_total`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// Not a compact JWS of three parts under `max_token_bytes`, or not JSON.
    NotJwt,
    /// `alg` other than RS256, `typ` other than `at+jwt`, a `crit`, no `kid`.
    Header,
    /// A key the key set does not hold (or no key set yet).
    UnknownKid,
    BadSignature,
    /// `exp`, `nbf` or `iat` beyond the leeway.
    Expired,
    /// Issuer, audience, subject, the user's claims, duplicate names.
    Claims,
    /// Issued before a purge of its user or credentials (the answer cache says so).
    Purged,
    /// A client-credentials token: no user.
    M2m,
}

impl Defer {
    pub const ALL: [Defer; 8] = [
        Defer::NotJwt,
        Defer::Header,
        Defer::UnknownKid,
        Defer::BadSignature,
        Defer::Expired,
        Defer::Claims,
        Defer::Purged,
        Defer::M2m,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Defer::NotJwt => "not_jwt",
            Defer::Header => "header",
            Defer::UnknownKid => "unknown_kid",
            Defer::BadSignature => "bad_signature",
            Defer::Expired => "expired",
            Defer::Claims => "claims",
            Defer::Purged => "purged",
            Defer::M2m => "m2m",
        }
    }
}

/// A token vouched for: the identity, when it was issued and when it expires (Unix seconds).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub identity: Arc<Identity>,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// What local validation says of a request's `Authorization`.
#[derive(Debug)]
pub enum Verdict {
    /// No bearer token: nothing to count.
    NoBearer,
    Deferred(Defer),
    Accepted(Accepted),
}

/// The token of an `Authorization: Bearer` header, read as Authgear reads it: the scheme in
/// any case, one space, the rest as is (a token with white space around it is not one this
/// path reads: the resolver may read it otherwise).
pub fn bearer(authorization: &HeaderValue) -> Option<&[u8]> {
    let v = authorization.as_bytes();
    let (scheme, token) = (v.get(..7)?, &v[7..]);
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

/// The keys and the checks; one per configuration of `jwt:`, kept across reloads that leave
/// it unchanged (its keys with it).
pub struct Validator {
    settings: JwtSettings,
    keys: ArcSwap<KeySet>,
    connector: Connector,
    epoch: Instant,
    /// When (ms since `epoch`) a token last asked for the keys because of an unknown `kid`,
    /// `u64::MAX` never: one such fetch per cooldown, whatever the tokens.
    kid_asked: AtomicU64,
    /// A fetch was asked for; the keeper takes it.
    wanted: AtomicBool,
    wake: Notify,
    /// When (ms since `epoch`) the keeper fetches next; 0: at once.
    next_fetch: AtomicU64,
}

impl Validator {
    pub fn new(settings: JwtSettings) -> Validator {
        let mut opts = ConnectorOptions::new(1);
        opts.ca_file = settings.ca_file.as_ref().map(|p| p.display().to_string());
        Validator {
            settings,
            keys: ArcSwap::from_pointee(KeySet::default()),
            connector: Connector::new(Some(opts)),
            epoch: Instant::now(),
            kid_asked: AtomicU64::new(u64::MAX),
            wanted: AtomicBool::new(false),
            wake: Notify::new(),
            next_fetch: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Local validation of a request's `Authorization`; `now` in Unix seconds. A deferral is
    /// counted here; an acceptance by the caller, once the answer cache has taken it (a purge
    /// may still defer it).
    pub fn check(&self, authorization: Option<&HeaderValue>, ns: &Namespace, now: u64) -> Verdict {
        let Some(token) = authorization.and_then(bearer) else {
            return Verdict::NoBearer;
        };
        match self.validate(token, ns, now) {
            Ok(a) => Verdict::Accepted(a),
            Err(why) => {
                STATS.deferred(why);
                Verdict::Deferred(why)
            }
        }
    }

    /// Every check of the list, in order; the first that fails says why.
    pub fn validate(&self, token: &[u8], ns: &Namespace, now: u64) -> Result<Accepted, Defer> {
        let parts = token::split(token, self.settings.max_token_bytes)?;
        let kid = token::key_id(&parts.header)?;
        let keys = self.keys.load();
        let Some(key) = keys.keys.get(kid) else {
            self.ask_for_keys();
            return Err(Defer::UnknownKid);
        };
        if !key.verifies(parts.signed, &parts.signature) {
            return Err(Defer::BadSignature);
        }
        let claims = token::claims(
            &parts.payload,
            &token::Expect {
                issuer: &self.settings.issuer,
                audience: &self.settings.audience,
                leeway: self.settings.leeway.as_secs(),
                now,
            },
        )?;
        let identity = identity(&claims, ns).ok_or(Defer::Claims)?;
        Ok(Accepted {
            identity: Arc::new(identity),
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }

    /// Takes a JWKS document's keys as the key set (the stand-in's own keys, tests); how many.
    pub fn install(&self, jwks: &[u8]) -> Result<usize, String> {
        let keys = keys::parse_jwks(jwks, MAX_KEYS)?;
        let n = keys.len();
        self.keys.store(Arc::new(KeySet {
            keys,
            fetched: Some(Instant::now()),
        }));
        Ok(n)
    }

    /// An unknown `kid`: a key rotation may have published it. One fetch per cooldown for the
    /// whole process; the request itself never waits for it.
    fn ask_for_keys(&self) {
        let now = self.now_ms();
        let last = self.kid_asked.load(Ordering::Acquire);
        let cooldown = self.settings.unknown_kid_cooldown.as_millis() as u64;
        if last != u64::MAX && now.saturating_sub(last) < cooldown {
            return;
        }
        if self
            .kid_asked
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.wanted.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    fn due(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
            || self.now_ms() >= self.next_fetch.load(Ordering::Acquire)
    }

    /// One JWKS fetch; on success the new keys replace the old, on failure the old stay and
    /// the next try comes after a cooldown.
    pub async fn refresh(&self) {
        let s = &self.settings;
        let got = fetch::get(&self.connector, &s.jwks, s.fetch_timeout, MAX_JWKS_BYTES).await;
        let parsed = got.and_then(|f| {
            let keys = keys::parse_jwks(&f.body, MAX_KEYS).map_err(|why| ("not_jwks", why))?;
            Ok((keys, f.max_age))
        });
        let next = match parsed {
            Ok((keys, max_age)) => {
                STATS.fetched("ok");
                log::debug!("jwt: {} signing keys from the JWKS", keys.len());
                self.keys.store(Arc::new(KeySet {
                    keys,
                    fetched: Some(Instant::now()),
                }));
                // A max-age may shorten the interval, never below the cooldown.
                max_age.map_or(s.refresh, |m| m.max(s.unknown_kid_cooldown).min(s.refresh))
            }
            Err((result, why)) => {
                STATS.fetched(result);
                log::warn!(
                    "jwt: JWKS fetch from {} failed ({why}); keeping the {} keys held",
                    s.jwks.addr,
                    self.keys.load().len()
                );
                s.unknown_kid_cooldown.min(s.refresh)
            }
        };
        self.next_fetch.store(
            self.now_ms().saturating_add(next.as_millis() as u64),
            Ordering::Release,
        );
    }
}

/// The headers the resolver sends for such a token (`docs/resolver-contract.md`), read into an
/// identity by the same code that reads the resolver's answers.
fn identity(c: &token::UserClaims, ns: &Namespace) -> Option<Identity> {
    let mut h = HeaderMap::new();
    let mut put = |name: &str, value: &str| -> Option<()> {
        let name = HeaderName::from_bytes(format!("{}{name}", ns.prefix()).as_bytes()).ok()?;
        h.insert(name, HeaderValue::from_str(value).ok()?);
        Some(())
    };
    let yes = |b: bool| if b { "true" } else { "false" };
    put("session-valid", "true")?;
    put("user-id", &c.sub)?;
    put("user-anonymous", yes(c.anonymous))?;
    put("user-verified", yes(c.verified))?;
    put("user-can-reauthenticate", yes(c.can_reauthenticate))?;
    if !c.roles.is_empty() {
        put("user-roles", &c.roles.join(","))?;
    }
    put("session-amr", &c.amr.join(" "))?;
    if let Some(t) = c.auth_time {
        put("session-authenticated-at", &t.to_string())?;
    }
    Identity::from_headers(&h, ns).ok()
}

/// Keeps the current validator's keys: the first fetch at start, then on its interval, and
/// when a token names an unknown key (one fetch at a time: only this service fetches).
pub struct KeyKeeper {
    current: Box<dyn Fn() -> Option<Arc<Validator>> + Send + Sync>,
}

impl KeyKeeper {
    pub fn new(current: impl Fn() -> Option<Arc<Validator>> + Send + Sync + 'static) -> Self {
        KeyKeeper {
            current: Box::new(current),
        }
    }
}

/// How often the keeper looks for a reload's new validator when nothing wakes it.
const LOOK_EVERY: Duration = Duration::from_millis(250);

#[async_trait]
impl BackgroundService for KeyKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let current = (self.current)();
            if let Some(v) = &current {
                if v.due() {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = v.refresh() => {}
                    }
                }
            }
            let wake = async {
                match &current {
                    Some(v) => v.wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = wake => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
