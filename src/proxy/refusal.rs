//! The answers authgate gives itself instead of a backend's: one place maps a route's verdict,
//! a resolver failure or a proxy error to a status, a body and the outcome the log records.
//! Everything here but `send` is plain data, unit-tested without a socket.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
    WWW_AUTHENTICATE,
};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::cache::Lookup;
use crate::identity::Answer;
use crate::outcome::Outcome;
use crate::policy::Verdict;
use crate::request::RequestError;
use crate::resolver::ResolveError;

/// An answer authgate gives itself instead of the backend's.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: RefusalBody,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub outcome: Outcome,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RefusalBody {
    /// `authgate: <reason>`, for people and logs.
    Text(Cow<'static, str>),
    /// `{"error":"<code>"}`, for API clients refused by a route's policy.
    Json(&'static str),
    /// No body (a preflight's grant).
    Empty,
}

impl Refusal {
    pub fn text(status: u16, reason: impl Into<Cow<'static, str>>, outcome: Outcome) -> Refusal {
        Refusal {
            status,
            body: RefusalBody::Text(reason.into()),
            headers: Vec::new(),
            outcome,
        }
    }

    fn json(status: u16, error: &'static str, outcome: Outcome) -> Refusal {
        Refusal {
            status,
            body: RefusalBody::Json(error),
            headers: Vec::new(),
            outcome,
        }
    }

    fn with(mut self, name: HeaderName, value: HeaderValue) -> Refusal {
        self.headers.push((name, value));
        self
    }

    /// authgate's answer to a CORS preflight (`cors::Decision::Preflight`).
    pub fn preflight(status: u16, headers: Vec<(HeaderName, HeaderValue)>) -> Refusal {
        let body = if status == 204 {
            RefusalBody::Empty
        } else {
            RefusalBody::Text("CORS preflight not allowed".into())
        };
        Refusal {
            status,
            body,
            headers,
            outcome: Outcome::Preflight,
        }
    }

    /// A request header beyond the client limits.
    pub fn too_large(why: &'static str) -> Refusal {
        Refusal::text(431, why, Outcome::BadRequest)
    }

    /// A request that has no canonical reading.
    pub fn of_request_error(e: &RequestError) -> Refusal {
        let outcome = match e {
            RequestError::Path(_) => Outcome::BadPath,
            _ => Outcome::BadRequest,
        };
        Refusal::text(400, e.to_string(), outcome)
    }

    /// What a route's policy refuses, as the client gets it.
    pub fn of_verdict(verdict: Verdict, outcome: Outcome) -> Option<Refusal> {
        match verdict {
            Verdict::Forward => None,
            Verdict::Redirect(location) => {
                Some(Refusal::text(302, "login required", outcome).with(LOCATION, location))
            }
            Verdict::Unauthenticated => {
                Some(Refusal::json(401, "authentication_required", outcome).with(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate\""),
                ))
            }
            Verdict::Forbidden => Some(Refusal::json(403, "forbidden", outcome)),
        }
    }

    /// The resolver's own refusal (401/403), with its headers, as the client gets it.
    pub fn of_denial(answer: Answer) -> Option<Refusal> {
        let Answer::Denied { status, headers } = answer else {
            return None;
        };
        let reason = if status == 401 {
            "not authenticated"
        } else {
            "forbidden"
        };
        let mut refusal = Refusal::text(status, reason, Outcome::Denied);
        refusal.headers = headers;
        Some(refusal)
    }

    /// A resolver that failed: never a 401 (see `ResolveError::status`).
    pub fn of_resolve_error(e: &ResolveError) -> Refusal {
        Refusal::text(e.status(), e.client_reason(), Outcome::of_error(e))
    }

    /// A proxy error (backend or client side) as the status the client gets and a reason;
    /// `None`: the client went away, nothing is sent.
    pub fn of_proxy_error(e: &Error, outcome: Outcome) -> Option<Refusal> {
        let timeout = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        let (code, reason): (u16, Cow<'static, str>) = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => (
                *code,
                e.context.as_ref().map_or(Cow::Borrowed("error"), |c| {
                    Cow::Owned(c.as_str().to_string())
                }),
            ),
            (_, ErrorSource::Upstream) if timeout => (504, "backend timed out".into()),
            (_, ErrorSource::Upstream) => (502, "backend failed".into()),
            (_, ErrorSource::Downstream) => (400, "bad request".into()),
            _ => (500, "internal error".into()),
        };
        (code > 0).then(|| Refusal::text(code, reason, outcome))
    }

    pub async fn send(self, session: &mut Session) -> pingora::Result<bool> {
        let (content_type, body) = match self.body {
            RefusalBody::Text(reason) => (
                Some("text/plain; charset=utf-8"),
                Bytes::from(format!("authgate: {reason}\n")),
            ),
            RefusalBody::Json(error) => (
                Some("application/json"),
                Bytes::from(format!("{{\"error\":\"{error}\"}}\n")),
            ),
            RefusalBody::Empty => (None, Bytes::new()),
        };
        let mut resp = ResponseHeader::build(self.status, Some(4 + self.headers.len()))?;
        if let Some(content_type) = content_type {
            resp.insert_header(CONTENT_TYPE, content_type)?;
        }
        // A 204 has no body and must not announce one (RFC 9110 8.6).
        if self.status != 204 {
            resp.insert_header(CONTENT_LENGTH, body.len())?;
        }
        resp.insert_header(CACHE_CONTROL, "no-store")?;
        for (n, v) in self.headers {
            resp.append_header(n, v)?;
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }
}

/// The level a resolver failure is logged at: the request that called the resolver warns;
/// the waiters that shared its failure say so at debug (one warning per call, not per waiter).
pub fn resolve_failure_level(lookup: Lookup) -> log::Level {
    if lookup == Lookup::Miss {
        log::Level::Warn
    } else {
        log::Level::Debug
    }
}

#[cfg(test)]
#[path = "refusal/tests.rs"]
mod tests;
