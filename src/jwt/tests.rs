//! Each check of `validate` against a token that fails only that check, the JWKS rules, and
//! arbitrary bytes; tokens are signed by the stand-in's demo key (and a second key of the
//! test fixtures for "another key under a known kid").

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use super::*;
use crate::devserver::tokens::{self, Signer};

const ORIGIN: &str = "https://project.authgear.test";
const NOW: u64 = 1_800_000_000;
const OTHER_KEY: &str = include_str!("../../tests/fixtures/other-key.pem");

fn settings() -> JwtSettings {
    JwtSettings {
        jwks: JwksSource {
            addr: ([127, 0, 0, 1], 9).into(),
            tls: false,
            sni: String::new(),
            host_header: HeaderValue::from_static("localhost"),
            path: "/oauth2/jwks".into(),
        },
        issuer: ORIGIN.into(),
        audience: vec![ORIGIN.into()],
        leeway: Duration::from_secs(30),
        refresh: Duration::from_secs(300),
        unknown_kid_cooldown: Duration::from_secs(30),
        max_token_bytes: 8 * 1024,
        fetch_timeout: Duration::from_secs(1),
        ca_file: None,
    }
}

fn demo() -> Signer {
    Signer::demo().expect("the demo key")
}

/// A validator holding the demo key.
fn validator() -> Validator {
    let v = Validator::new(settings());
    v.install(tokens::jwks(&[&demo()]).as_bytes())
        .expect("the demo JWKS");
    v
}

fn ns() -> Namespace {
    Namespace::new("x-authgear-")
}

/// A user's access token's claims, as Authgear writes them.
fn claims() -> Value {
    json!({
        "iss": ORIGIN,
        "aud": [ORIGIN],
        "sub": "user-alice",
        "iat": NOW - 60,
        "exp": NOW + 1740,
        "client_id": "spa",
        "jti": "grant-hash",
        "auth_time": NOW - 600,
        "amr": ["pwd", "otp"],
        "https://authgear.com/claims/user/is_anonymous": false,
        "https://authgear.com/claims/user/is_verified": true,
        "https://authgear.com/claims/user/can_reauthenticate": true,
        "https://authgear.com/claims/user/roles": ["admin", "staff"],
    })
}

fn header() -> Value {
    json!({"alg": "RS256", "typ": "at+jwt", "kid": tokens::DEMO_KID})
}

fn signed(header: &Value, claims: &Value) -> String {
    demo()
        .sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
        .expect("signing")
}

fn check(token: &str) -> Result<Accepted, Defer> {
    validator().validate(token.as_bytes(), &ns(), NOW)
}

/// The headers an accepted token's identity injects, as text.
fn listed(a: &Accepted) -> Vec<(String, String)> {
    a.identity
        .wire_headers()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                v.to_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn with(mut c: Value, name: &str, value: Value) -> Value {
    c[name] = value;
    c
}

#[test]
fn a_users_access_token_gives_the_resolvers_headers() {
    let a = check(&signed(&header(), &claims())).expect("accepted");
    let h = listed(&a);
    let get = |n: &str| {
        h.iter()
            .find(|(name, _)| *name == format!("x-authgear-{n}"))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("session-valid").as_deref(), Some("true"));
    assert_eq!(get("user-id").as_deref(), Some("user-alice"));
    assert_eq!(get("user-anonymous").as_deref(), Some("false"));
    assert_eq!(get("user-verified").as_deref(), Some("true"));
    assert_eq!(get("user-can-reauthenticate").as_deref(), Some("true"));
    assert_eq!(get("user-roles").as_deref(), Some("admin,staff"));
    assert_eq!(get("session-amr").as_deref(), Some("pwd otp"));
    assert_eq!(
        get("session-authenticated-at"),
        Some((NOW - 600).to_string())
    );
    assert_eq!((a.issued_at, a.expires_at), (NOW - 60, NOW + 1740));
}

#[test]
fn no_roles_no_roles_header_and_no_amr_an_empty_one() {
    let mut c = with(
        claims(),
        "https://authgear.com/claims/user/roles",
        json!([]),
    );
    c.as_object_mut().map(|o| o.remove("amr"));
    let a = check(&signed(&header(), &c)).expect("accepted");
    let names: Vec<String> = listed(&a)
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("x-authgear-user-roles")));
    assert!(
        names.contains(&"x-authgear-session-amr=".to_string()),
        "{names:?}"
    );
}

#[test]
fn alg_none_is_refused() {
    let h = json!({"alg": "none", "typ": "at+jwt", "kid": tokens::DEMO_KID});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(h.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_eq!(check(&unsigned).err(), Some(Defer::Header));
    // Signed, but still `none`.
    assert_eq!(check(&signed(&h, &claims())).err(), Some(Defer::Header));
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let h = json!({"alg": "HS256", "typ": "at+jwt", "kid": tokens::DEMO_KID});
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(h.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    // The key bytes an HMAC confusion attack would use: the JWK's modulus, and its JSON.
    let jwk = demo().jwk();
    for key in [
        URL_SAFE_NO_PAD
            .decode(jwk["n"].as_str().unwrap_or(""))
            .unwrap_or_default(),
        jwk.to_string().into_bytes(),
    ] {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC key");
        mac.update(signing.as_bytes());
        let token = format!(
            "{signing}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(check(&token).err(), Some(Defer::Header));
    }
}

#[test]
fn another_keys_signature_under_a_known_kid_is_refused() {
    let other = Signer::from_pem(OTHER_KEY, tokens::DEMO_KID).expect("the other key");
    let token = other.sign(&claims()).expect("signing");
    assert_eq!(check(&token).err(), Some(Defer::BadSignature));
}

#[test]
fn an_altered_payload_is_refused() {
    let token = signed(&header(), &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(claims(), "sub", json!("user-mallory"));
    let token = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    assert_eq!(check(&token).err(), Some(Defer::BadSignature));
}

#[test]
fn an_id_token_is_refused() {
    for typ in [json!("JWT"), json!("jwt"), Value::Null, json!(["at+jwt"])] {
        let mut h = header();
        h["typ"] = typ.clone();
        assert_eq!(
            check(&signed(&h, &claims())).err(),
            Some(Defer::Header),
            "typ {typ}"
        );
    }
    let mut h = header();
    h["typ"] = json!("application/at+jwt");
    assert!(check(&signed(&h, &claims())).is_ok(), "the media type form");
}

#[test]
fn an_unknown_crit_is_refused() {
    let mut h = header();
    h["crit"] = json!(["exp"]);
    assert_eq!(check(&signed(&h, &claims())).err(), Some(Defer::Header));
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    for c in [
        with(claims(), "iss", json!("https://evil.test")),
        with(claims(), "iss", json!([ORIGIN])),
        with(claims(), "aud", json!("spa-client-id")),
        with(claims(), "aud", json!(["a", "b"])),
        with(claims(), "aud", json!(null)),
    ] {
        assert_eq!(
            check(&signed(&header(), &c)).err(),
            Some(Defer::Claims),
            "{c}"
        );
    }
    let string_aud = with(claims(), "aud", json!(ORIGIN));
    assert!(check(&signed(&header(), &string_aud)).is_ok());
    let listed = with(claims(), "aud", json!(["other", ORIGIN]));
    assert!(check(&signed(&header(), &listed)).is_ok());
}

#[test]
fn time_claims_hold_within_the_leeway_only() {
    let cases = [
        ("exp", json!(NOW - 31), Err(Defer::Expired)),
        ("exp", json!(NOW - 29), Ok(())),
        ("nbf", json!(NOW + 31), Err(Defer::Expired)),
        ("nbf", json!(NOW + 29), Ok(())),
        ("iat", json!(NOW + 31), Err(Defer::Expired)),
        ("iat", json!(NOW + 29), Ok(())),
        ("exp", json!("tomorrow"), Err(Defer::Claims)),
        ("exp", json!(null), Err(Defer::Claims)),
    ];
    for (name, value, want) in cases {
        let c = with(claims(), name, value.clone());
        let got = check(&signed(&header(), &c)).map(drop);
        assert_eq!(got, want, "{name}: {value}");
    }
    let mut c = claims();
    c.as_object_mut().map(|o| o.remove("exp"));
    assert_eq!(check(&signed(&header(), &c)).err(), Some(Defer::Claims));
}

#[test]
fn an_unknown_kid_is_a_lookup_only() {
    for kid in [
        "../../../etc/passwd",
        "https://attacker.test/key.pem",
        "/oauth2/jwks?x=1",
        "",
    ] {
        let mut h = header();
        h["kid"] = json!(kid);
        assert_eq!(
            check(&signed(&h, &claims())).err(),
            Some(Defer::UnknownKid),
            "kid {kid:?}"
        );
    }
    let mut h = header();
    h.as_object_mut().map(|o| o.remove("kid"));
    assert_eq!(check(&signed(&h, &claims())).err(), Some(Defer::Header));
}

#[test]
fn jku_x5u_x5c_and_jwk_are_ignored() {
    let mut h = header();
    h["jku"] = json!("https://attacker.test/jwks");
    h["x5u"] = json!("https://attacker.test/cert.pem");
    h["x5c"] = json!(["MIIB"]);
    h["jwk"] = demo().jwk();
    assert!(check(&signed(&h, &claims())).is_ok(), "the kid decides");
    // The same headers with an attacker's key: the embedded key is not used.
    let other = Signer::from_pem(OTHER_KEY, tokens::DEMO_KID).expect("the other key");
    h["jwk"] = other.jwk();
    let token = other
        .sign_raw(h.to_string().as_bytes(), claims().to_string().as_bytes())
        .expect("signing");
    assert_eq!(check(&token).err(), Some(Defer::BadSignature));
}

#[test]
fn duplicate_names_are_refused() {
    let body = claims().to_string();
    // A second `sub` after the first: serde_json alone would keep this one.
    let twice = format!("{},\"sub\":\"user-admin\"}}", &body[..body.len() - 1]);
    let token = demo()
        .sign_raw(header().to_string().as_bytes(), twice.as_bytes())
        .expect("signing");
    assert_eq!(check(&token).err(), Some(Defer::Claims));
    let h = header().to_string();
    let h = format!("{},\"alg\":\"none\"}}", &h[..h.len() - 1]);
    let token = demo()
        .sign_raw(h.as_bytes(), claims().to_string().as_bytes())
        .expect("signing");
    assert_eq!(check(&token).err(), Some(Defer::NotJwt));
}

#[test]
fn tokens_over_the_size_limit_are_not_read() {
    let mut c = claims();
    c["pad"] = json!("x".repeat(10 * 1024 * 1024));
    let token = signed(&header(), &c);
    assert_eq!(check(&token).err(), Some(Defer::NotJwt));
    for bad in ["", "a.b", "a.b.c.d", "eyJ.eyJ.", "Bearer x", "....."] {
        assert_eq!(check(bad).err(), Some(Defer::NotJwt), "{bad:?}");
    }
}

#[test]
fn machine_tokens_and_odd_user_claims_go_to_the_resolver() {
    let m2m = tokens::machine_claims("backend", ORIGIN, NOW - 10);
    assert_eq!(check(&signed(&header(), &m2m)).err(), Some(Defer::M2m));
    for c in [
        with(claims(), "sub", json!("")),
        with(claims(), "sub", json!(42)),
        with(
            claims(),
            "https://authgear.com/claims/user/is_verified",
            json!("yes"),
        ),
        with(
            claims(),
            "https://authgear.com/claims/user/roles",
            json!(["a,b"]),
        ),
        with(
            claims(),
            "https://authgear.com/claims/user/roles",
            json!("admin"),
        ),
        with(claims(), "amr", json!(["pwd otp"])),
        with(claims(), "sub", json!("user\nx-authgear-user-roles: admin")),
    ] {
        assert_eq!(
            check(&signed(&header(), &c)).err(),
            Some(Defer::Claims),
            "{c}"
        );
    }
}

#[test]
fn bearer_is_read_as_authgear_reads_it() {
    let v = |s: &'static str| HeaderValue::from_static(s);
    assert_eq!(bearer(&v("Bearer abc")), Some(&b"abc"[..]));
    assert_eq!(bearer(&v("bEaReR abc")), Some(&b"abc"[..]));
    assert_eq!(bearer(&v("Basic abc")), None);
    assert_eq!(bearer(&v("Bearer")), None);
    // Two spaces: the token would be " abc", which is not a JWT.
    let token = signed(&header(), &claims());
    let two = HeaderValue::from_str(&format!("Bearer  {token}")).expect("header");
    assert!(matches!(
        validator().check(Some(&two), &ns(), NOW),
        Verdict::Deferred(Defer::NotJwt)
    ));
}

#[test]
fn jwks_rules() {
    let demo_jwk = demo().jwk();
    let mut small = demo_jwk.clone();
    small["kid"] = json!("small");
    // A 1024-bit modulus.
    small["n"] = json!(URL_SAFE_NO_PAD.encode([0xC5u8; 128]));
    let mut hmac = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
    hmac["alg"] = json!("HS256");
    let mut enc = demo_jwk.clone();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let doc = json!({"keys": [demo_jwk, small, hmac, enc]}).to_string();
    let keys = keys::parse_jwks(doc.as_bytes(), MAX_KEYS).expect("a JWKS");
    assert_eq!(keys.keys().collect::<Vec<_>>(), vec![tokens::DEMO_KID]);

    let twice = json!({"keys": [demo().jwk(), demo().jwk()]}).to_string();
    assert!(keys::parse_jwks(twice.as_bytes(), MAX_KEYS)
        .expect("a JWKS")
        .is_empty());
    let many = json!({"keys": vec![demo().jwk(); MAX_KEYS + 1]}).to_string();
    assert!(keys::parse_jwks(many.as_bytes(), MAX_KEYS).is_err());
    for garbage in [
        "",
        "<html>",
        "{\"keys\":{}}",
        "[]",
        "{\"keys\":[],\"keys\":[]}",
    ] {
        assert!(
            keys::parse_jwks(garbage.as_bytes(), MAX_KEYS).is_err(),
            "{garbage}"
        );
    }
}

#[test]
fn an_unknown_kid_asks_for_keys_once_per_cooldown() {
    let v = validator();
    let mut h = header();
    for i in 0..100 {
        h["kid"] = json!(format!("rotated-{i}"));
        let _ = v.validate(signed(&h, &claims()).as_bytes(), &ns(), NOW);
    }
    assert!(v.wanted.load(Ordering::Acquire), "one fetch asked for");
    assert!(v.due());
    for i in 0..100 {
        h["kid"] = json!(format!("again-{i}"));
        let _ = v.validate(signed(&h, &claims()).as_bytes(), &ns(), NOW);
    }
    assert!(
        !v.wanted.load(Ordering::Acquire),
        "no second fetch within the cooldown"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    #[test]
    fn arbitrary_bytes_are_never_accepted(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let (v, _) = shared();
        proptest::prop_assert!(v.validate(&bytes, &ns(), NOW).is_err());
    }

    #[test]
    fn a_valid_token_altered_anywhere_is_never_accepted(at in 0usize..4096, byte in proptest::prelude::any::<u8>()) {
        let (v, token) = shared();
        let token = token.as_bytes();
        let at = at % token.len();
        let mut altered = token.to_vec();
        altered[at] = byte;
        let got = v.validate(&altered, &ns(), NOW);
        // Base64url's last character may carry unused bits: an equal decoding is the same token.
        let same = decode_all(&altered) == decode_all(token);
        proptest::prop_assert!(got.is_err() || same, "accepted an altered token at {}", at);
    }
}

/// One validator and one valid token for every case (signing is slow in a debug build).
fn shared() -> &'static (Validator, String) {
    static SHARED: std::sync::OnceLock<(Validator, String)> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| (validator(), signed(&header(), &claims())))
}

fn decode_all(token: &[u8]) -> Option<Vec<Vec<u8>>> {
    token
        .split(|&b| b == b'.')
        .map(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .collect()
}

#[test]
fn a_jwks_max_age_is_read() {
    let v = |s: &'static str| fetch::max_age(&HeaderValue::from_static(s));
    assert_eq!(v("public, max-age=60"), Some(Duration::from_secs(60)));
    assert_eq!(v("Max-Age=\"120\""), Some(Duration::from_secs(120)));
    assert_eq!(v("no-store"), None);
    assert_eq!(v("max-age=soon"), None);
}
