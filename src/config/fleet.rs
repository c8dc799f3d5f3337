//! `fleet:`: several instances as one through Redis (the URL, its password and CA, the
//! fleet's shared secret, the key prefix).

use std::path::Path;

use super::file::FleetFile;
use super::paths::{check_ca_file, relative_to, secret};
use super::{under, Bad};
use crate::fleet::FleetSettings;

/// `fleet:`, `None` when it is absent.
pub(super) fn fleet(
    f: Option<&FleetFile>,
    base: Option<&Path>,
) -> Result<Option<FleetSettings>, Bad> {
    let Some(f) = f else { return Ok(None) };
    fleet_settings(f, base).map(Some).map_err(under("fleet."))
}

fn fleet_settings(f: &FleetFile, base: Option<&Path>) -> Result<FleetSettings, Bad> {
    crate::fleet::check_url(&f.redis.url).map_err(|r| ("redis.url".to_string(), r))?;
    let password = match (&f.redis.password_file, &f.redis.password_env) {
        (None, None) => None,
        (file, env) => {
            let (field, text) = secret((file, "password_file"), (env, "password_env"), base, "")
                .map_err(|(k, r)| (format!("redis.{k}"), r))?;
            let text = text.trim();
            if text.is_empty() {
                return Err((format!("redis.{field}"), "the password is empty".into()));
            }
            Some(text.to_string())
        }
    };
    let ca = match &f.redis.ca_file {
        None => None,
        Some(p) => {
            if !f.redis.url.starts_with("rediss://") {
                return Err((
                    "redis.ca_file".into(),
                    "a CA file is for rediss:// (TLS) URLs only".into(),
                ));
            }
            let p = relative_to(base, p);
            check_ca_file(&p).map_err(|r| ("redis.ca_file".to_string(), r))?;
            Some(std::fs::read(&p).map_err(|e| {
                (
                    "redis.ca_file".to_string(),
                    format!("cannot read `{}`: {e}", p.display()),
                )
            })?)
        }
    };
    let (field, text) = secret(
        (&f.secret_file, "secret_file"),
        (&f.secret_env, "secret_env"),
        base,
        "the fleet needs a shared secret: set secret_file or secret_env",
    )?;
    let text = text.trim();
    if text.len() < crate::fleet::seal::MIN_SECRET {
        return Err((
            field.into(),
            format!(
                "the secret must be at least {} bytes (e.g. `openssl rand -hex 32`)",
                crate::fleet::seal::MIN_SECRET
            ),
        ));
    }
    if !f
        .prefix
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?' && b != b'[')
    {
        return Err((
            "prefix".into(),
            format!(
                "`{}` must be printable, without spaces or glob characters (* ? [)",
                f.prefix
            ),
        ));
    }
    Ok(FleetSettings {
        url: f.redis.url.clone(),
        password,
        ca,
        secret: text.as_bytes().to_vec(),
        prefix: f.prefix.clone(),
        timeout: f.timeout,
        shared_cache: f.shared_cache,
    })
}
