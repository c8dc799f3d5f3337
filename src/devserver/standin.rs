//! A resolver stand-in that follows Authgear's resolver contract (docs/resolver-contract.md).
//!
//! Sessions and users come from a small YAML file. Credentials are read in Authgear's order:
//! `Authorization: Bearer`, then the `app_session`, `app_access_token` and `session` cookies;
//! the first one present decides. An unknown `session` cookie answers `valid: false` with a
//! clearing `Set-Cookie`; an unknown token answers no identity at all, as Authgear does.
//!
//! With `with_tokens(origin)` it is also the token issuer: `GET /_standin/token?user=alice`
//! signs a JWT access token for a user as Authgear does (`tokens`), `GET /oauth2/jwks`
//! serves the key, and a bearer JWT is checked (signature, `at+jwt`, issuer, expiry) and
//! answered with the user's current state, as Authgear's resolver does. `disable` turns a
//! user off while it runs (the tests' "disabled in the portal").
//!
//! For load benchmarks, `with_any_session_prefix("bench-")` makes every `session` cookie that
//! starts with the prefix a valid session of its own user (id derived from the cookie), so a
//! benchmark can send a session never seen before on every request and still get the answer a
//! signed-in user gets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;

use super::response;
use super::tokens::{self, Signer};
use crate::identity::Namespace;
use crate::jwt::{JwksSource, JwtSettings, Validator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Prefix of the credential cookie names (Authgear's `cookie_prefix`).
    #[serde(default)]
    pub cookie_prefix: String,
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default = "yes")]
    pub verified: bool,
    #[serde(default = "yes")]
    pub can_reauthenticate: bool,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub amr: Vec<String>,
    #[serde(default)]
    pub authenticated_at: Option<u64>,
    /// A disabled user's credentials answer `valid: false`.
    #[serde(default)]
    pub disabled: bool,
    /// IdP session cookie values (`session`).
    #[serde(default)]
    pub sessions: Vec<String>,
    /// Access tokens: bearer, `app_session` and `app_access_token`.
    #[serde(default)]
    pub tokens: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Directory {
    pub fn from_yaml(text: &str) -> Result<Directory, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }
}

/// What the stand-in received, for tests and `GET /_standin/stats`.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Recorded {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct Stats {
    pub connections: Arc<AtomicU64>,
    pub requests: AtomicU64,
    recent: Mutex<VecDeque<Recorded>>,
}

const RECENT: usize = 256;

impl Stats {
    /// The last requests received, oldest first.
    pub fn recent(&self) -> Vec<Recorded> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

pub struct Standin {
    by_session: HashMap<String, usize>,
    by_token: HashMap<String, usize>,
    directory: Directory,
    latency: Duration,
    /// Unknown `session` cookies with this prefix are valid sessions (benchmarks only).
    any_session_prefix: Option<String>,
    /// The login and logout pages, when the stand-in serves browsers.
    login: Option<super::login::Pages>,
    /// The issuer of JWT access tokens, when on.
    tokens: Option<Issuer>,
    /// Users disabled while running, by id.
    disabled: Mutex<HashSet<String>>,
    pub stats: Stats,
}

/// What issues and checks the stand-in's JWT access tokens.
struct Issuer {
    signer: Signer,
    origin: String,
    checker: Validator,
}

enum Found<'a> {
    Nothing,
    Unknown {
        clear_session: bool,
    },
    User(&'a User),
    /// A session accepted by `any_session_prefix`: a user made up from the cookie's value.
    Synthetic(User),
}

impl Standin {
    pub fn new(directory: Directory, latency: Duration) -> Standin {
        let mut by_session = HashMap::new();
        let mut by_token = HashMap::new();
        for (i, u) in directory.users.iter().enumerate() {
            for s in &u.sessions {
                by_session.insert(s.clone(), i);
            }
            for t in &u.tokens {
                by_token.insert(t.clone(), i);
            }
        }
        Standin {
            by_session,
            by_token,
            directory,
            latency,
            any_session_prefix: None,
            login: None,
            tokens: None,
            disabled: Mutex::new(HashSet::new()),
            stats: Stats::default(),
        }
    }

    /// Issues JWT access tokens of `origin` (`iss` and `aud`) under the demo key, serves
    /// its JWKS, and accepts them as bearer tokens.
    pub fn with_tokens(mut self, origin: &str) -> Result<Standin, String> {
        let signer = Signer::demo()?;
        let checker = Validator::new(JwtSettings {
            // Never fetched: the stand-in holds its own key.
            jwks: JwksSource {
                addr: ([127, 0, 0, 1], 9).into(),
                tls: false,
                sni: String::new(),
                host_header: http::HeaderValue::from_static("localhost"),
                path: "/oauth2/jwks".into(),
            },
            issuer: origin.to_string(),
            audience: vec![origin.to_string()],
            leeway: Duration::ZERO,
            refresh: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(3600),
            max_token_bytes: 64 * 1024,
            fetch_timeout: Duration::from_secs(1),
            ca_file: None,
        });
        checker.install(tokens::jwks(&[&signer]).as_bytes())?;
        self.tokens = Some(Issuer {
            signer,
            origin: origin.to_string(),
            checker,
        });
        Ok(self)
    }

    /// Turns a user off: its credentials answer `valid: false` from now on.
    pub fn disable(&self, user_id: &str) {
        if let Ok(mut d) = self.disabled.lock() {
            d.insert(user_id.to_string());
        }
    }

    fn is_disabled(&self, u: &User) -> bool {
        u.disabled || self.disabled.lock().is_ok_and(|d| d.contains(&u.id))
    }

    /// A token for the user named `name` (its id, or the id's last `-` part), issued now.
    pub fn token_for(&self, name: &str) -> Option<String> {
        let issuer = self.tokens.as_ref()?;
        let user = self.directory.users.iter().find(|u| {
            u.id == name || u.id.rsplit_once('-').is_some_and(|(_, last)| last == name)
        })?;
        let claims = tokens::access_claims(user, &issuer.origin, now());
        issuer.signer.sign(&claims).ok()
    }

    /// The token issuer's answers: the JWKS and a user's token.
    fn serve_tokens(&self, path: &str, query: Option<&str>) -> Option<Response<Full<Bytes>>> {
        let issuer = self.tokens.as_ref()?;
        match path {
            "/oauth2/jwks" => Some(response(
                200,
                &[("content-type", "application/json".into())],
                tokens::jwks(&[&issuer.signer]),
            )),
            "/_standin/token" => {
                let user = query
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("user="))
                    .unwrap_or("");
                Some(match self.token_for(user) {
                    Some(t) => response(200, &[("content-type", "text/plain".into())], t + "\n"),
                    None => response(404, &[], "no such user\n"),
                })
            }
            _ => None,
        }
    }

    /// Makes every unknown `session` cookie starting with `prefix` a valid session whose user
    /// id is `bench-user-` and the rest of the cookie (for load benchmarks). Empty: off.
    pub fn with_any_session_prefix(mut self, prefix: &str) -> Standin {
        self.any_session_prefix = (!prefix.is_empty()).then(|| prefix.to_string());
        self
    }

    /// Serves the login and logout pages (`devserver::login`), returning only to `app_origins`.
    pub fn with_login(mut self, app_origins: &[String]) -> Result<Standin, String> {
        self.login = Some(super::login::Pages::new(app_origins)?);
        Ok(self)
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body_len = body.len();
        if let Ok(mut r) = self.stats.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(Recorded {
                method: method.to_string(),
                path: path.clone(),
                headers,
                body_len,
            });
        }
        if path == "/_standin/stats" {
            let body = format!(
                "{{\"requests\":{},\"connections\":{}}}\n",
                self.stats.requests.load(Ordering::Relaxed),
                self.stats.connections.load(Ordering::Relaxed)
            );
            return response(200, &[("content-type", "application/json".into())], body);
        }
        if let Some(resp) = self.serve_tokens(&path, parts.uri.query()) {
            return resp;
        }
        if let Some(pages) = &self.login {
            let name = format!("{}session", self.directory.cookie_prefix);
            let cookie = cookie_value(&parts.headers, &name);
            if let Some(resp) = pages.handle(&parts, &body, cookie, &self.directory.users, &name) {
                return resp;
            }
        }
        if path != "/_resolver/resolve" && path != "/resolve" {
            return response(404, &[], "not found\n");
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return response(
                405,
                &[("allow", "GET, HEAD".into())],
                "method not allowed\n",
            );
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        match self.find(&parts.headers) {
            Found::Nothing | Found::Unknown { clear_session: false } => response(200, &[], ""),
            Found::Unknown { clear_session: true } => response(
                200,
                &[
                    ("x-authgear-session-valid", "false".into()),
                    (
                        "set-cookie",
                        format!(
                            "{}session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly",
                            self.directory.cookie_prefix
                        ),
                    ),
                ],
                "",
            ),
            Found::User(u) if self.is_disabled(u) => response(200, &[("x-authgear-session-valid", "false".into())], ""),
            Found::User(u) => response(200, &identity(u), ""),
            Found::Synthetic(u) => response(200, &identity(&u), ""),
        }
    }

    fn find(&self, headers: &http::HeaderMap) -> Found<'_> {
        let user = |i: Option<&usize>| i.map(|&i| &self.directory.users[i]);
        if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
            let auth = auth.as_bytes();
            if auth.len() > 7 && auth[..7].eq_ignore_ascii_case(b"bearer ") {
                let token = String::from_utf8_lossy(&auth[7..]);
                if let Some(found) = self.find_jwt(token.trim()) {
                    return found;
                }
                return match user(self.by_token.get(token.trim())) {
                    Some(u) => Found::User(u),
                    None => Found::Unknown {
                        clear_session: false,
                    },
                };
            }
        }
        let p = &self.directory.cookie_prefix;
        let cookie = |name: &str| cookie_value(headers, &format!("{p}{name}"));
        for name in ["app_session", "app_access_token"] {
            if let Some(v) = cookie(name) {
                return match user(self.by_token.get(&v)) {
                    Some(u) => Found::User(u),
                    None => Found::Unknown {
                        clear_session: false,
                    },
                };
            }
        }
        if let Some(v) = cookie("session") {
            let started = self.login.as_ref().and_then(|l| l.user_of(&v));
            return match user(self.by_session.get(&v).or(started.as_ref())) {
                Some(u) => Found::User(u),
                None => match self.synthetic(&v) {
                    Some(u) => Found::Synthetic(u),
                    None => Found::Unknown {
                        clear_session: true,
                    },
                },
            };
        }
        Found::Nothing
    }
}

impl Standin {
    /// A bearer JWT: the user of a token this stand-in issued and that is still valid;
    /// `None` when it is not a JWT (an opaque token).
    fn find_jwt(&self, token: &str) -> Option<Found<'_>> {
        let issuer = self.tokens.as_ref()?;
        if !token.starts_with("eyJ") {
            return None;
        }
        let ns = Namespace::new("x-authgear-");
        let user = issuer
            .checker
            .validate(token.as_bytes(), &ns, now())
            .ok()
            .and_then(|a| {
                let id = a.identity.user_id()?;
                self.directory.users.iter().find(|u| u.id == id)
            });
        Some(match user {
            Some(u) => Found::User(u),
            None => Found::Unknown {
                clear_session: false,
            },
        })
    }

    /// The made-up user of a session accepted by `any_session_prefix`: verified, one role,
    /// the same number of identity headers as a real signed-in user.
    fn synthetic(&self, session: &str) -> Option<User> {
        let rest = session.strip_prefix(self.any_session_prefix.as_deref()?)?;
        Some(User {
            id: format!("bench-user-{rest}"),
            anonymous: false,
            verified: true,
            can_reauthenticate: true,
            roles: vec!["staff".to_string()],
            amr: vec!["pwd".to_string()],
            authenticated_at: Some(1764300000),
            disabled: false,
            sessions: Vec::new(),
            tokens: Vec::new(),
        })
    }
}

fn identity(u: &User) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-authgear-session-valid", "true".to_string()),
        ("x-authgear-user-id", u.id.clone()),
        ("x-authgear-user-anonymous", u.anonymous.to_string()),
        ("x-authgear-user-verified", u.verified.to_string()),
        (
            "x-authgear-user-can-reauthenticate",
            u.can_reauthenticate.to_string(),
        ),
        ("x-authgear-session-amr", u.amr.join(" ")),
    ];
    if !u.roles.is_empty() {
        h.push(("x-authgear-user-roles", u.roles.join(",")));
    }
    if let Some(t) = u.authenticated_at {
        h.push(("x-authgear-session-authenticated-at", t.to_string()));
    }
    h
}

/// The first value of cookie `name` across all `Cookie` headers.
fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
