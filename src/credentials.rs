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
mod tests {
    use super::*;

    use crate::testutil::request as req;

    #[test]
    fn split_cookies_are_joined() {
        let c = Credentials::from_request(&req(&[
            ("cookie", "a=1"),
            ("cookie", "session=s"),
            ("cookie", "b=2"),
        ]))
        .unwrap();
        assert_eq!(c.cookie.unwrap(), "a=1; session=s; b=2");
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let r = req(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            Credentials::from_request(&r),
            Err(CredentialsError::AmbiguousAuthorization)
        );
    }

    fn rules() -> KeyRules {
        let names: Vec<String> = ["session", "app_session", "app_access_token"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        KeyRules::new(b"myapp.authgearapps.com", "", &names)
    }

    fn key(pairs: &[(&str, &str)]) -> CacheKey {
        rules().key(&Credentials::from_request(&req(pairs)).unwrap())
    }

    #[test]
    fn every_credential_cookie_is_in_the_key() {
        // The seed's key ($cookie_session|$http_authorization) gives these two one entry.
        assert_ne!(
            key(&[("cookie", "app_session=alice")]),
            key(&[("cookie", "app_session=bob")])
        );
        assert_ne!(
            key(&[("cookie", "app_access_token=a")]),
            key(&[("cookie", "app_access_token=b")])
        );
        assert_ne!(
            key(&[("cookie", "session=a")]),
            key(&[("cookie", "app_session=a")])
        );
        assert_ne!(
            key(&[("cookie", "session=a; session=b")]),
            key(&[("cookie", "session=a")])
        );
        assert_ne!(key(&[("authorization", "Bearer a")]), key(&[]));
        assert_ne!(
            key(&[("cookie", "session")]),
            key(&[]),
            "a bare name is an empty cookie to Go"
        );
    }

    #[test]
    fn other_cookies_and_headers_do_not_change_the_key() {
        let base = key(&[("cookie", "session=s1")]);
        assert_eq!(
            key(&[("cookie", "_ga=GA1.2.3; session=s1; theme=dark")]),
            base
        );
        assert_eq!(
            key(&[("cookie", " session=s1 "), ("user-agent", "x")]),
            base
        );
        assert_eq!(key(&[("cookie", "a=1"), ("cookie", "session=s1")]), base);
        assert!(base.has_credentials);
        assert!(!key(&[("cookie", "_ga=1")]).has_credentials);
        assert_eq!(key(&[("cookie", "_ga=1")]), key(&[]));
    }

    #[test]
    fn resolver_host_and_prefix_are_in_the_key() {
        let creds =
            Credentials::from_request(&req(&[("cookie", "session=s1; pfx_session=s1")])).unwrap();
        let names = vec!["session".to_string()];
        let a = KeyRules::new(b"a.example", "", &names).key(&creds);
        let b = KeyRules::new(b"b.example", "", &names).key(&creds);
        let p = KeyRules::new(b"a.example", "pfx_", &names).key(&creds);
        assert_ne!(a, b);
        assert_ne!(a, p);
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        // Same bytes overall, split differently between fields.
        assert_ne!(
            key(&[("authorization", "ab"), ("cookie", "session=c")]),
            key(&[("authorization", "a"), ("cookie", "session=bc")])
        );
    }

    #[test]
    fn nothing_is_nothing() {
        assert_eq!(
            Credentials::from_request(&req(&[])).unwrap(),
            Credentials::default()
        );
    }
}
