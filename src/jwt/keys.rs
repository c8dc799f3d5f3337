//! The key set: a JWKS answer read into RSA public keys by `kid`, bounded in keys, each key
//! between 2048 and 8192 bits; and the signature check against one of them.

use std::collections::HashMap;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde_json::Value;

use super::token::Unique;

/// Smaller RSA keys are refused: factorable by a determined attacker.
pub const MIN_RSA_BITS: usize = 2048;
/// ring verifies no larger keys; a larger one would cost each verification more CPU.
pub const MAX_RSA_BITS: usize = 8192;

pub(super) struct Key {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl Key {
    /// Whether `signature` is this key's RS256 signature of `message`.
    pub(super) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
        .is_ok()
    }
}

/// The keys of the last good JWKS answer, by `kid`; empty until the first one.
#[derive(Default)]
pub struct KeySet {
    pub(super) keys: HashMap<String, Key>,
    /// When the answer arrived; `None`: no answer yet.
    pub(super) fetched: Option<Instant>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn bits(n: &[u8]) -> usize {
    let n = &n[n.iter().position(|&b| b != 0).unwrap_or(n.len())..];
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// Reads a JWKS answer. The RSA signing keys with a `kid` are kept; a key of another type or
/// use is skipped, as is a `kid` given twice (which key would be meant?); a key below
/// `MIN_RSA_BITS` is skipped with a warning. More than `max_keys` keys, or not a JWKS at all:
/// an error, and the last good set stays.
pub(super) fn parse_jwks(body: &[u8], max_keys: usize) -> Result<HashMap<String, Key>, String> {
    let Unique(top) =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let Some(Value::Array(list)) = top.get("keys") else {
        return Err("no `keys` array".into());
    };
    if list.len() > max_keys {
        return Err(format!("{} keys, more than {max_keys}", list.len()));
    }
    let mut keys = HashMap::new();
    let mut twice = Vec::new();
    for k in list {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        if s("kty") != Some("RSA")
            || s("use").is_some_and(|u| u != "sig")
            || s("alg").is_some_and(|a| a != "RS256")
        {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (s("kid"), s("n"), s("e")) else {
            continue;
        };
        let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
            continue;
        };
        let size = bits(&n);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&size) || e.is_empty() || e.len() > 8 {
            log::warn!("jwt: key {kid:?} of the JWKS refused: {size}-bit RSA (allowed: {MIN_RSA_BITS} to {MAX_RSA_BITS})");
            continue;
        }
        if keys.insert(kid.to_string(), Key { n, e }).is_some() {
            twice.push(kid.to_string());
        }
    }
    for kid in twice {
        log::warn!("jwt: key id {kid:?} appears twice in the JWKS; neither is used");
        keys.remove(&kid);
    }
    Ok(keys)
}
