//! Which parts of a client request the resolver reads to find the session.

use http::header::{HeaderValue, AUTHORIZATION, COOKIE, USER_AGENT};
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

/// The credential-bearing headers of one request, as the resolver will see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub authorization: Option<HeaderValue>,
    /// All `Cookie` headers joined with `; ` (HTTP/2 clients may split cookies).
    pub cookie: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

/// A request whose credentials cannot be read one way only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    /// Two `Authorization` headers: the resolver would read the first, a backend maybe the other.
    AmbiguousAuthorization,
}

impl std::fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialsError::AmbiguousAuthorization => {
                f.write_str("more than one Authorization header")
            }
        }
    }
}

impl Credentials {
    pub fn from_request(req: &RequestHeader) -> Result<Credentials, CredentialsError> {
        let mut auth = req.headers.get_all(AUTHORIZATION).iter();
        let authorization = auth.next().cloned();
        if auth.next().is_some() {
            return Err(CredentialsError::AmbiguousAuthorization);
        }
        let mut cookies = req.headers.get_all(COOKIE).iter();
        let cookie = match (cookies.next(), cookies.next()) {
            (None, _) => None,
            (Some(one), None) => Some(one.clone()),
            (Some(first), Some(second)) => {
                let mut joined = Vec::with_capacity(first.len() + second.len() + 2);
                joined.extend_from_slice(first.as_bytes());
                for v in std::iter::once(second).chain(cookies) {
                    joined.extend_from_slice(b"; ");
                    joined.extend_from_slice(v.as_bytes());
                }
                // Joining valid header values with "; " yields a valid header value.
                HeaderValue::from_bytes(&joined).ok()
            }
        };
        Ok(Credentials {
            authorization,
            cookie,
            user_agent: req.headers.get(USER_AGENT).cloned(),
        })
    }
}

/// The cache key of a set of credentials: a SHA-256 digest, never the tokens themselves.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub digest: [u8; 32],
    /// Whether the request carried any credential the key covers.
    pub has_credentials: bool,
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short prefix is enough to correlate log lines and says nothing about the token.
        write!(f, "key:{}", hex::encode(&self.digest[..6]))
    }
}

/// What goes into a cache key: everything the resolver reads to pick the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRules {
    /// The `Host` sent to the resolver: it selects the Authgear project.
    resolver_host: Vec<u8>,
    /// Full credential cookie names, prefix included, folded (see `fold_name`).
    cookies: Vec<Vec<u8>>,
}

impl KeyRules {
    pub fn new(resolver_host: &[u8], cookie_prefix: &str, cookies: &[String]) -> KeyRules {
        KeyRules {
            resolver_host: resolver_host.to_vec(),
            cookies: cookies
                .iter()
                .map(|c| fold_name(format!("{cookie_prefix}{c}").as_bytes()).to_vec())
                .collect(),
        }
    }

    /// The key never reads less than a resolver could: every cookie part whose name any
    /// reader might take for a credential cookie (any case, percent-escaped, quoted, `.` or
    /// `-` for `_`, a `__Host-`/`__Secure-` prefix), split on `;` and on `,` (nginx's
    /// `$cookie_` splits on both), is covered with the separator before it and its bytes up to
    /// the next `;`, where a reader that does not split on `,` ends its value; a header with quotes (which
    /// quote-aware readers parse differently) is covered whole.
    /// Two requests a resolver could read differently never share a key; other cookies
    /// (analytics, CSRF) still do not split it.
    pub fn key(&self, creds: &Credentials) -> CacheKey {
        let mut h = Sha256::new();
        h.update(b"authgate-cache-key-v2\0");
        field(&mut h, &self.resolver_host);
        let mut has_credentials = false;
        match &creds.authorization {
            Some(v) => {
                has_credentials = true;
                h.update([1]);
                field(&mut h, v.as_bytes());
            }
            None => h.update([0]),
        }
        if let Some(cookie) = &creds.cookie {
            let header = cookie.as_bytes();
            let mut matched = false;
            for (comma, start, part) in cookie_parts(header) {
                let name = part.split(|&b| b == b'=').next().unwrap_or(part);
                if self.is_credential(name) {
                    matched = true;
                    h.update([u8::from(comma)]);
                    // A reader splitting on `;` only reads the value up to the next `;`
                    // (readers that also split on `,` read less of it).
                    let end = header[start..]
                        .iter()
                        .position(|&b| b == b';')
                        .map_or(header.len(), |i| start + i);
                    let span = &header[start..end];
                    // Only spaces are trimmed: every reader trims the one after `; `, not
                    // every reader trims a tab.
                    let from = span.iter().position(|&b| b != b' ').unwrap_or(span.len());
                    let to = span
                        .iter()
                        .rposition(|&b| b != b' ')
                        .map_or(from, |e| e + 1);
                    field(&mut h, &span[from..to]);
                }
            }
            if matched && header.contains(&b'"') {
                h.update([2]);
                field(&mut h, header);
            }
            has_credentials |= matched;
        }
        CacheKey {
            digest: h.finalize().into(),
            has_credentials,
        }
    }

    fn is_credential(&self, name: &[u8]) -> bool {
        let folded = fold_name(name);
        let bare = ["__host_", "__secure_"]
            .iter()
            .find_map(|p| folded.strip_prefix(p.as_bytes()))
            .unwrap_or(&folded);
        self.cookies
            .iter()
            .any(|c| c.as_slice() == folded.as_slice() || c.as_slice() == bare)
    }
}

/// The parts of a `Cookie` header split on `;` and `,`: whether a `,` preceded each, where it
/// starts, and its bytes.
fn cookie_parts(header: &[u8]) -> impl Iterator<Item = (bool, usize, &[u8])> {
    header
        .split(|&b| b == b';' || b == b',')
        .scan(0usize, move |at, part| {
            let start = *at;
            *at += part.len() + 1;
            let comma = start > 0 && header[start - 1] == b',';
            Some((comma, start, part))
        })
}

/// A cookie name as the loosest reader would compare it: white space and quotes around it
/// dropped, percent-escapes decoded, lower case, and `.`, `-`, ` `, `[` read as `_` (PHP
/// rewrites `.`, ` ` and `[` in names).
pub fn fold_name(name: &[u8]) -> SmallVec<[u8; 48]> {
    let name = name.trim_ascii();
    let name = name.strip_prefix(b"\"").unwrap_or(name);
    let name = name.strip_suffix(b"\"").unwrap_or(name).trim_ascii();
    let mut out = SmallVec::new();
    let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
    let mut i = 0;
    while i < name.len() {
        let mut b = name[i];
        i += 1;
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (hex(name.get(i)), hex(name.get(i + 1))) {
                b = (hi * 16 + lo) as u8;
                i += 2;
            }
        }
        out.push(match b {
            b'.' | b'-' | b' ' | b'[' => b'_',
            _ => b.to_ascii_lowercase(),
        });
    }
    out
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u32).to_le_bytes());
    h.update(bytes);
}

/// All values of cookie `name` in a `Cookie` header, parsed as Go's net/http splits it:
/// `;`-separated parts, trimmed; a part without `=` is a cookie with an empty value.
pub fn cookie_values<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    header.split(|&b| b == b';').filter_map(move |part| {
        let part = part.trim_ascii();
        let (n, v) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &part[part.len()..]),
        };
        (n.trim_ascii() == name).then_some(v)
    })
}

#[cfg(test)]
#[path = "credentials/tests.rs"]
mod tests;
