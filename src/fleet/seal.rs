//! What crosses Redis, sealed with the fleet secret: bus messages and shared answers, and the
//! names under which answers are kept. Whoever can write to Redis but lacks the secret can
//! delete, but cannot forge, alter, or move an answer from one key to another.

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::identity::{Identity, Namespace};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a fleet secret, at least.
pub const MIN_SECRET: usize = 32;

/// One key per use, derived from the fleet secret, so a MAC made for one use is never valid
/// for another.
#[derive(Clone)]
pub struct Keys {
    bus: [u8; 32],
    entry: [u8; 32],
    name: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: the else branch is never taken.
    let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(&(p.len() as u32).to_le_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return false;
    };
    for p in parts {
        m.update(&(p.len() as u32).to_le_bytes());
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

impl Keys {
    pub fn derive(secret: &[u8]) -> Keys {
        Keys {
            bus: mac(secret, &[b"authgate-fleet-bus-v1"]),
            entry: mac(secret, &[b"authgate-fleet-entry-v1"]),
            name: mac(secret, &[b"authgate-fleet-name-v1"]),
        }
    }

    /// The Redis name part of an answer's key: a MAC of the cache key and the namespace, so
    /// Redis holds no digest of a token, and fleets with other namespaces never share answers.
    pub fn answer_name(&self, ns: &Namespace, digest: &[u8; 32]) -> String {
        hex::encode(mac(
            &self.name,
            &[b"answer", ns.prefix().as_bytes(), digest],
        ))
    }

    /// The Redis name part of a user's index of answers.
    pub fn user_name(&self, user: &str) -> String {
        hex::encode(mac(&self.name, &[b"user", user.as_bytes()]))
    }
}

/// A purge, as the bus carries it: digests and user ids, never tokens or cookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Purge {
    /// The answer of one cache key (hex of its digest).
    Key { key: String },
    /// Every answer of a user.
    User { user: String },
    /// Every answer.
    Flush,
    /// Stored responses of the response cache: one URL (all its variants), or every URL
    /// under a prefix.
    Responses { url: String, prefix: bool },
}

/// A bus message: who sent it, its number from that sender, and when (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub v: u8,
    pub from: String,
    pub seq: u64,
    pub at: u64,
    pub purge: Purge,
}

/// Bus messages larger than this are not read.
const MAX_MESSAGE: usize = 16 * 1024;

/// `<hex MAC>.<json>`; the MAC covers the channel prefix too, so a message of one fleet
/// replayed on another that shares the secret is refused.
pub fn seal_message(keys: &Keys, prefix: &str, msg: &Message) -> String {
    let json = serde_json::to_string(msg).unwrap_or_default();
    let tag = mac(&keys.bus, &[prefix.as_bytes(), json.as_bytes()]);
    format!("{}.{json}", hex::encode(tag))
}

/// Why a bus message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    BadSignature,
    Replayed,
    Stale,
}

impl Refused {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::BadSignature => "bad signature",
            Refused::Replayed => "replayed",
            Refused::Stale => "outside the replay window",
        }
    }
}

/// Checks a message's MAC before reading a byte of its JSON.
pub fn open_message(keys: &Keys, prefix: &str, wire: &[u8]) -> Result<Message, Refused> {
    if wire.len() > MAX_MESSAGE {
        return Err(Refused::Malformed);
    }
    let dot = wire
        .iter()
        .position(|&b| b == b'.')
        .ok_or(Refused::Malformed)?;
    let tag = hex::decode(&wire[..dot]).map_err(|_| Refused::Malformed)?;
    let json = &wire[dot + 1..];
    if tag.len() != 32 {
        return Err(Refused::Malformed);
    }
    if !verify(&keys.bus, &[prefix.as_bytes(), json], &tag) {
        return Err(Refused::BadSignature);
    }
    let msg: Message = serde_json::from_slice(json).map_err(|_| Refused::Malformed)?;
    if msg.v != 1 {
        return Err(Refused::Malformed);
    }
    Ok(msg)
}

/// A shared answer as read back: the identity, when it was resolved and until when it is
/// fresh (unix ms).
#[derive(Debug)]
pub struct Entry {
    pub identity: Identity,
    pub resolved_at: u64,
    pub fresh_until: u64,
}

const ENTRY_V1: u8 = 1;

/// The largest sealed answer (identity headers are under 64 KiB, Set-Cookie values aside);
/// anything longer read from Redis is refused.
pub const MAX_ENTRY: usize = 128 * 1024;

/// `MAC || body`; the MAC binds the body to the Redis key it is stored under.
pub fn seal_entry(
    keys: &Keys,
    redis_key: &str,
    identity: &Identity,
    resolved_at: u64,
    fresh_until: u64,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.push(ENTRY_V1);
    body.extend_from_slice(&resolved_at.to_be_bytes());
    body.extend_from_slice(&fresh_until.to_be_bytes());
    let headers: Vec<_> = identity.wire_headers().collect();
    body.push(headers.len() as u8);
    for (name, value) in &headers {
        put(&mut body, name);
        put(&mut body, value.as_bytes());
    }
    let cookies = identity.set_cookie();
    body.push(cookies.len().min(u8::MAX as usize) as u8);
    for c in cookies.iter().take(u8::MAX as usize) {
        put(&mut body, c.as_bytes());
    }
    let tag = mac(&keys.entry, &[redis_key.as_bytes(), &body]);
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(&tag);
    out.extend_from_slice(&body);
    out
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    // Identity headers are under 64 KiB in all (Identity::from_headers).
    let len = bytes.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

/// Why a shared answer was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Wrong MAC: forged, altered, or moved from another key.
    Forged,
    /// A good MAC over bytes this version cannot read, or an identity that fails the checks.
    Unreadable(String),
}

/// Reads an entry stored under `redis_key`, MAC first.
pub fn open_entry(
    keys: &Keys,
    redis_key: &str,
    ns: &Namespace,
    wire: &[u8],
) -> Result<Entry, Rejected> {
    if wire.len() < 32 || wire.len() > MAX_ENTRY {
        return Err(Rejected::Forged);
    }
    let (tag, body) = wire.split_at(32);
    if !verify(&keys.entry, &[redis_key.as_bytes(), body], tag) {
        return Err(Rejected::Forged);
    }
    let bad = |why: &str| Rejected::Unreadable(why.to_string());
    let mut r = Reader { buf: body, at: 0 };
    if r.u8().ok_or_else(|| bad("empty"))? != ENTRY_V1 {
        return Err(bad("unknown version"));
    }
    let resolved_at = r.u64().ok_or_else(|| bad("truncated"))?;
    let fresh_until = r.u64().ok_or_else(|| bad("truncated"))?;
    let mut headers = HeaderMap::new();
    for _ in 0..r.u8().ok_or_else(|| bad("truncated"))? {
        let name = r.bytes().ok_or_else(|| bad("truncated"))?;
        let value = r.bytes().ok_or_else(|| bad("truncated"))?;
        let name = HeaderName::from_bytes(name).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad("header value"))?;
        headers.append(name, value);
    }
    for _ in 0..r.u8().ok_or_else(|| bad("truncated"))? {
        let value = r.bytes().ok_or_else(|| bad("truncated"))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad("set-cookie value"))?;
        headers.append(SET_COOKIE, value);
    }
    if r.at != body.len() {
        return Err(bad("trailing bytes"));
    }
    // The same checks as a resolver answer: one value a name, flags true or false.
    let identity = Identity::from_headers(&headers, ns).map_err(|e| bad(&e.to_string()))?;
    Ok(Entry {
        identity,
        resolved_at,
        fresh_until,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.take(2)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        self.take(len)
    }
}
