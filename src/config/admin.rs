//! `admin:`, the operator's endpoint (its listener and bearer token), and its `webhook:`
//! (Authgear's events, signed with a shared secret).

use std::net::SocketAddr;
use std::path::Path;

use super::file::{AdminFile, WebhookFile};
use super::paths::secret;
use super::{under, Bad};
use crate::webhook::WebhookSettings;

/// Admin tokens shorter than this are refused: the endpoint can flush every session.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// What `admin:` turns on; all `None` when it is absent.
#[derive(Default)]
pub(super) struct Admin {
    pub listen: Option<SocketAddr>,
    /// The bearer token.
    pub token: Option<Vec<u8>>,
    pub webhook: Option<WebhookSettings>,
}

pub(super) fn admin(a: Option<&AdminFile>, base: Option<&Path>) -> Result<Admin, Bad> {
    let Some(a) = a else {
        return Ok(Admin::default());
    };
    let (listen, token) = listener(a, base).map_err(under("admin."))?;
    let webhook = match &a.webhook {
        None => None,
        Some(w) => Some(webhook_settings(w, base).map_err(under("admin.webhook."))?),
    };
    Ok(Admin {
        listen: Some(listen),
        token: Some(token),
        webhook,
    })
}

/// The admin listener's address and its bearer token.
fn listener(a: &AdminFile, base: Option<&Path>) -> Result<(SocketAddr, Vec<u8>), Bad> {
    let listen: SocketAddr = a.listen.parse().map_err(|_| {
        (
            "listen".to_string(),
            format!("`{}` is not an IP:port address", a.listen),
        )
    })?;
    let (field, token) = secret(
        (&a.token_file, "token_file"),
        (&a.token_env, "token_env"),
        base,
        "the admin listener needs a token: set token_file or token_env",
    )?;
    let token = token.trim();
    if token.len() < MIN_ADMIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err((
            field.into(),
            format!(
                "the token must be at least {MIN_ADMIN_TOKEN} printable characters without spaces"
            ),
        ));
    }
    Ok((listen, token.as_bytes().to_vec()))
}

fn webhook_settings(w: &WebhookFile, base: Option<&Path>) -> Result<WebhookSettings, Bad> {
    let (field, secret) = secret(
        (&w.secret_file, "secret_file"),
        (&w.secret_env, "secret_env"),
        base,
        "the webhook needs Authgear's secret: set secret_file or secret_env",
    )?;
    let secret = secret.trim();
    if secret.is_empty() {
        return Err((field.into(), "the secret is empty".into()));
    }
    Ok(WebhookSettings {
        secret: secret.as_bytes().to_vec(),
        max_age: w.max_age,
    })
}
