//! Which parts of a client request the resolver reads to find the session.

use http::header::{HeaderValue, AUTHORIZATION, COOKIE, USER_AGENT};
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

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
    /// Full credential cookie names, prefix included.
    cookies: Vec<String>,
}

impl KeyRules {
    pub fn new(resolver_host: &[u8], cookie_prefix: &str, cookies: &[String]) -> KeyRules {
        KeyRules {
            resolver_host: resolver_host.to_vec(),
            cookies: cookies
                .iter()
                .map(|c| format!("{cookie_prefix}{c}"))
                .collect(),
        }
    }

    /// Every occurrence of every credential cookie is covered, in order: Go's cookie reader
    /// skips values it finds invalid and takes a later one, so a key over the first value
    /// alone could differ from what the resolver reads.
    pub fn key(&self, creds: &Credentials) -> CacheKey {
        let mut h = Sha256::new();
        h.update(b"authgate-cache-key-v1\0");
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
            for name in &self.cookies {
                for value in cookie_values(cookie.as_bytes(), name.as_bytes()) {
                    has_credentials = true;
                    field(&mut h, name.as_bytes());
                    field(&mut h, value);
                }
            }
        }
        CacheKey {
            digest: h.finalize().into(),
            has_credentials,
        }
    }
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
