//! Which parts of a client request the resolver reads to find the session.

use http::header::{HeaderValue, AUTHORIZATION, COOKIE, USER_AGENT};
use pingora::http::RequestHeader;

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

    #[test]
    fn nothing_is_nothing() {
        assert_eq!(
            Credentials::from_request(&req(&[])).unwrap(),
            Credentials::default()
        );
    }
}
