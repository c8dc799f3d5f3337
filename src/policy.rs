//! Request policy: what a route asks of the caller, decided from the route, the resolver's
//! answer and the request: forward (with the identity), a login redirect, 401 or 403.

use http::header::{HeaderValue, ACCEPT};
use pingora::http::RequestHeader;

use crate::forwarded::Forwarded;

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
