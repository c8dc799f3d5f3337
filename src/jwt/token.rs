//! One bearer token read strictly: a compact JWS of three parts, a header that names RS256,
//! `at+jwt` and a key, JSON without duplicate names, and the claims of a user's access token.
//! Anything it cannot vouch for is a `Defer` (the resolver decides), never an error answer.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::Defer;

/// Subjects of client-credentials (machine) tokens: no user, the resolver decides.
const MACHINE_SUBJECT: &str = "client_id_";
/// Authgear's claims about the user, under its own URL-named namespace.
const CLAIM_ANONYMOUS: &str = "https://authgear.com/claims/user/is_anonymous";
const CLAIM_VERIFIED: &str = "https://authgear.com/claims/user/is_verified";
const CLAIM_CAN_REAUTH: &str = "https://authgear.com/claims/user/can_reauthenticate";
const CLAIM_ROLES: &str = "https://authgear.com/claims/user/roles";

/// A JSON object whose member names are unique: serde_json keeps the last of two equal names,
/// and another reader may keep the first, so a token with two `sub`s is not one authgate reads.
pub(super) struct Unique(pub BTreeMap<String, Value>);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object without duplicate names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                }
                Ok(Unique(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A compact JWS split and decoded; `signed` is what the signature covers.
pub(super) struct Parts<'a> {
    pub signed: &'a [u8],
    pub header: Unique,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Three base64url parts (no padding) separated by dots, under `max` bytes in all.
pub(super) fn split(token: &[u8], max: usize) -> Result<Parts<'_>, Defer> {
    if token.len() > max {
        return Err(Defer::NotJwt);
    }
    let mut dots = token.iter().enumerate().filter(|(_, &b)| b == b'.');
    let (Some((first, _)), Some((second, _)), None) = (dots.next(), dots.next(), dots.next())
    else {
        return Err(Defer::NotJwt);
    };
    let decode = |part: &[u8]| URL_SAFE_NO_PAD.decode(part).map_err(|_| Defer::NotJwt);
    let header = decode(&token[..first])?;
    let payload = decode(&token[first + 1..second])?;
    let signature = decode(&token[second + 1..])?;
    let header: Unique = serde_json::from_slice(&header).map_err(|_| Defer::NotJwt)?;
    Ok(Parts {
        signed: &token[..second],
        header,
        payload,
        signature,
    })
}

/// The key id of a header that names RS256 and an access token, and no extension authgate
/// would have to understand. `jku`, `x5u`, `x5c` and `jwk` are never read: keys come from
/// the configured JWKS only.
pub(super) fn key_id(header: &Unique) -> Result<&str, Defer> {
    let h = &header.0;
    // An allow-list of one: never `none`, never an HMAC keyed with the RSA key's bytes.
    if h.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(Defer::Header);
    }
    // An ID token is signed by the same keys; only its `typ` tells it apart.
    let typ = h.get("typ").and_then(Value::as_str).unwrap_or("");
    let typ = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(typ, |_| &typ[12..]);
    if !typ.eq_ignore_ascii_case("at+jwt") {
        return Err(Defer::Header);
    }
    if h.contains_key("crit") {
        return Err(Defer::Header);
    }
    h.get("kid").and_then(Value::as_str).ok_or(Defer::Header)
}

/// What the settings ask of the claims.
pub(super) struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a [String],
    pub leeway: u64,
    /// Unix seconds.
    pub now: u64,
}

/// The claims of a user's access token, checked; the raw values the identity is built from.
#[derive(Debug, PartialEq)]
pub(super) struct UserClaims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub anonymous: bool,
    pub verified: bool,
    pub can_reauthenticate: bool,
    pub roles: Vec<String>,
    pub amr: Vec<String>,
    pub auth_time: Option<u64>,
}

/// A NumericDate: whole seconds, a fraction rounded down.
fn date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
            .map(|f| f as u64)
    })
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().map(String::from)).collect(),
        Some(_) => None,
    }
}

/// The payload's claims, held to the settings. Time first (`Expired`), then the issuer and
/// audience and the claims of a user (`Claims`); a machine's subject is `M2m`.
pub(super) fn claims(payload: &[u8], want: &Expect<'_>) -> Result<UserClaims, Defer> {
    let Unique(c) = serde_json::from_slice(payload).map_err(|_| Defer::Claims)?;
    let at = |name: &str| {
        c.get(name)
            .map(|v| date(v).ok_or(Defer::Claims))
            .transpose()
    };
    let (exp, iat, nbf) = (at("exp")?, at("iat")?, at("nbf")?);
    // `iat` is required: a purge refuses the tokens of a user issued before it.
    let (Some(exp), Some(iat)) = (exp, iat) else {
        return Err(Defer::Claims);
    };
    let late = want.now.saturating_sub(want.leeway);
    let early = want.now.saturating_add(want.leeway);
    if exp <= late || iat > early || nbf.is_some_and(|n| n > early) {
        return Err(Defer::Expired);
    }
    if c.get("iss").and_then(Value::as_str) != Some(want.issuer) {
        return Err(Defer::Claims);
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => want.audience.iter().any(|w| w == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| want.audience.iter().any(|w| w == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(Defer::Claims);
    }
    let sub = c.get("sub").and_then(Value::as_str).ok_or(Defer::Claims)?;
    if sub.starts_with(MACHINE_SUBJECT) {
        return Err(Defer::M2m);
    }
    let flag = |name: &str| c.get(name).and_then(Value::as_bool).ok_or(Defer::Claims);
    let roles = match c.get(CLAIM_ROLES) {
        Some(v) => strings(Some(v)).ok_or(Defer::Claims)?,
        None => return Err(Defer::Claims),
    };
    let amr = strings(c.get("amr")).ok_or(Defer::Claims)?;
    // A role with a comma, or a method with a space, would read as two in the joined header.
    if sub.is_empty()
        || roles.iter().any(|r| r.is_empty() || r.contains(','))
        || amr.iter().any(|m| m.is_empty() || m.contains(' '))
    {
        return Err(Defer::Claims);
    }
    let auth_time = c
        .get("auth_time")
        .map(|v| date(v).ok_or(Defer::Claims))
        .transpose()?;
    Ok(UserClaims {
        sub: sub.to_string(),
        iat,
        exp,
        anonymous: flag(CLAIM_ANONYMOUS)?,
        verified: flag(CLAIM_VERIFIED)?,
        can_reauthenticate: flag(CLAIM_CAN_REAUTH)?,
        roles,
        amr,
        auth_time,
    })
}
