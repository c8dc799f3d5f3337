//! The stand-in's JWT access tokens, as Authgear issues them: RS256, `typ: at+jwt`, a `kid`,
//! Authgear's claims for a user; its JWKS; and the check its resolver makes of a bearer JWT.
//!
//! The demo key (`standin-key.pem`) is public, in this repository: it signs demo tokens only,
//! and no configuration but the demo's may trust it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

use super::standin::User;

/// The demo signing key (RSA-2048, PKCS#8 PEM).
pub const DEMO_KEY_PEM: &str = include_str!("standin-key.pem");
/// Its key id (Authgear's are UUIDs).
pub const DEMO_KID: &str = "5f1d4c0e-8d0a-4b8e-9a57-2c1f3b6d7e90";
/// Access token lifetime, Authgear's default.
pub const LIFETIME: u64 = 1800;

/// An RSA key that signs tokens under a `kid`.
pub struct Signer {
    key: RsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    /// A PKCS#8 PEM private key (2048 to 8192 bits).
    pub fn from_pem(pem: &str, kid: &str) -> Result<Signer, String> {
        let der = rustls_pemfile::pkcs8_private_keys(&mut pem.as_bytes())
            .next()
            .ok_or("no PKCS#8 private key in the PEM")?
            .map_err(|e| format!("unreadable PEM: {e}"))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("not an RSA key ring accepts: {e}"))?;
        Ok(Signer {
            key,
            kid: kid.to_string(),
            rng: SystemRandom::new(),
        })
    }

    /// The stand-in's demo key.
    pub fn demo() -> Result<Signer, String> {
        Signer::from_pem(DEMO_KEY_PEM, DEMO_KID)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(self.key.public());
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        })
    }

    /// `header.payload.signature` for these exact bytes (tests craft odd ones).
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> Result<String, String> {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, signed.as_bytes(), &mut sig)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// A token of these claims under this key, with Authgear's access token header.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": self.kid});
        self.sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&Signer]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// The claims Authgear puts in a user's access token (`docs/resolver-contract.md`); `origin`
/// is the project's public origin, both `iss` and `aud`.
pub fn access_claims(user: &User, origin: &str, now: u64) -> Value {
    let mut c = json!({
        "iss": origin,
        "aud": [origin],
        "sub": user.id,
        "iat": now,
        "exp": now + LIFETIME,
        "client_id": "standin-client",
        "scope": "openid offline_access",
        "jti": format!("standin-{}-{now}", user.id),
        "https://authgear.com/claims/user/is_anonymous": user.anonymous,
        "https://authgear.com/claims/user/is_verified": user.verified,
        "https://authgear.com/claims/user/can_reauthenticate": user.can_reauthenticate,
        "https://authgear.com/claims/user/roles": user.roles,
    });
    if !user.amr.is_empty() {
        c["amr"] = json!(user.amr);
    }
    if let Some(t) = user.authenticated_at {
        c["auth_time"] = json!(t);
    }
    c
}

/// A client-credentials (machine) token's claims: no user.
pub fn machine_claims(client: &str, origin: &str, now: u64) -> Value {
    json!({
        "iss": origin,
        "aud": [origin],
        "sub": format!("client_id_{client}"),
        "iat": now,
        "exp": now + LIFETIME,
        "client_id": client,
        "scope": "api",
        "jti": format!("standin-{client}-{now}"),
    })
}
