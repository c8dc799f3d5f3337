//! Request policy: what a route asks of the caller, decided from the route, the resolver's
//! answer and the request: forward (with the identity), a login redirect, 401 or 403.

use http::header::{HeaderValue, ACCEPT};
use pingora::http::RequestHeader;

use crate::forwarded::Forwarded;
use crate::identity::{Identity, SessionState};
use crate::outcome::Outcome;

/// What a route asks of the caller before the request reaches its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No resolver call; identity headers are still stripped.
    Public,
    /// Resolve and inject whatever the answer says; the backend decides.
    Identify,
    /// Only a valid session passes (and, with `roles`, one of those roles).
    Require,
}

/// What a route's policy says of a resolved caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// On to the backend, with the identity headers.
    Forward,
    /// `require` without a valid session, a browser and a login page: `302` there.
    Redirect(HeaderValue),
    /// `require` without a valid session: `401` for an API client.
    Unauthenticated,
    /// `require` with `roles`, and the session has none of them: `403`.
    Forbidden,
}

impl Verdict {
    pub fn outcome(&self, identity: &Identity) -> Outcome {
        match self {
            Verdict::Forward => Outcome::of_session(identity.session()),
            Verdict::Redirect(_) | Verdict::Unauthenticated => Outcome::LoginRequired,
            Verdict::Forbidden => Outcome::MissingRole,
        }
    }
}

/// The verdict for `identity` on a route with `policy` and `roles`. `login` gives the login
/// redirect for this request when there is one (a browser, `login` configured); it is only
/// asked for when a redirect is the answer.
pub fn decide(
    policy: Policy,
    roles: &[String],
    identity: &Identity,
    login: impl FnOnce() -> Option<HeaderValue>,
) -> Verdict {
    if policy != Policy::Require {
        return Verdict::Forward;
    }
    if identity.session() != SessionState::Valid {
        return match login() {
            Some(location) => Verdict::Redirect(location),
            None => Verdict::Unauthenticated,
        };
    }
    if !roles.is_empty() && !identity.roles().any(|r| roles.iter().any(|want| want == r)) {
        return Verdict::Forbidden;
    }
    Verdict::Forward
}

/// Where `auth: require` redirects a browser, and the parameter that carries the way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub url: String,
    pub return_to_param: String,
}

/// Whether the client reads HTML (a browser), which gets a login redirect instead of a 401.
pub fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
        })
}

/// `login.url` with the original URL as its return-to parameter.
pub fn login_location(login: &Login, fwd: &Forwarded, target: &str) -> Option<HeaderValue> {
    let host = fwd.host.as_ref().and_then(|h| h.to_str().ok())?;
    let proto = fwd.proto.to_str().ok()?;
    let original = format!("{proto}://{host}{target}");
    let sep = if login.url.contains('?') { '&' } else { '?' };
    let mut location = format!("{}{sep}{}=", login.url, login.return_to_param);
    for b in original.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            location.push(b as char);
        } else {
            location.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&location).ok()
}

#[cfg(test)]
#[path = "policy/tests.rs"]
mod tests;
