//! The identity header namespace: name folding, stripping client copies, and the resolver's `Answer`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{PreparedHeaderName, RequestHeader};

/// The identity namespace, e.g. `x-authgear-`, stored folded (lower case, `-` for `_` and `.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// `prefix` must already be validated as a header-name token; it is folded here.
    pub fn new(prefix: &str) -> Self {
        Namespace {
            prefix: prefix.bytes().map(|b| fold(b) as char).collect(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when a backend could read `name` as a header of the namespace: CGI, WSGI and PHP
    /// fold `_` and `.` into `-` and ignore case, so every such spelling counts.
    pub fn covers(&self, name: &str) -> bool {
        let p = self.prefix.as_bytes();
        let n = name.as_bytes();
        n.len() >= p.len() && n.iter().zip(p).all(|(&a, &b)| fold(a) == b)
    }

    /// Removes every header of the namespace, in any spelling, from a request.
    /// Returns how many distinct names were removed.
    pub fn strip(&self, req: &mut RequestHeader) -> usize {
        let doomed: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| self.covers(n.as_str()))
            .cloned()
            .collect();
        for name in &doomed {
            req.remove_header(name);
        }
        doomed.len()
    }
}

fn fold(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        _ => b.to_ascii_lowercase(),
    }
}

/// Whether the resolver found a valid session (`x-authgear-session-valid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// `true`: a valid session.
    Valid,
    /// `false`: credentials that are invalid, or a disabled user.
    Invalid,
    /// The header is absent: no credentials.
    Anonymous,
}

/// What the resolver said about one set of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 200 answer: who is calling (possibly nobody).
    Identity(Arc<Identity>),
    /// A 401 or 403 answer, passed back to the client like nginx `auth_request` does.
    Denied {
        status: u16,
        /// `WWW-Authenticate`, `Location` and `Set-Cookie`, in the order received.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// Why a resolver answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// A status other than 200, 401 or 403.
    Status(u16),
    /// A 200 whose identity headers do not make sense.
    Malformed(String),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Status(s) => write!(f, "resolver answered status {s}"),
            AnswerError::Malformed(why) => write!(f, "malformed resolver answer: {why}"),
        }
    }
}

/// The identity headers Authgear sends today, under the default prefix. Answers that use
/// them need no per-entry copy of the name, and injecting them allocates nothing.
const KNOWN_NAMES: [&str; 9] = [
    "x-authgear-session-valid",
    "x-authgear-user-id",
    "x-authgear-user-anonymous",
    "x-authgear-user-verified",
    "x-authgear-user-can-reauthenticate",
    "x-authgear-user-roles",
    "x-authgear-session-amr",
    "x-authgear-session-authenticated-at",
    "x-authgear-session-acr",
];
/// The same names, ready-made as Pingora takes them: injecting one neither parses nor copies
/// the name (any other form is parsed and copied twice for every request).
static KNOWN: [PreparedHeaderName; 9] = [
    PreparedHeaderName::from_static(KNOWN_NAMES[0]),
    PreparedHeaderName::from_static(KNOWN_NAMES[1]),
    PreparedHeaderName::from_static(KNOWN_NAMES[2]),
    PreparedHeaderName::from_static(KNOWN_NAMES[3]),
    PreparedHeaderName::from_static(KNOWN_NAMES[4]),
    PreparedHeaderName::from_static(KNOWN_NAMES[5]),
    PreparedHeaderName::from_static(KNOWN_NAMES[6]),
    PreparedHeaderName::from_static(KNOWN_NAMES[7]),
    PreparedHeaderName::from_static(KNOWN_NAMES[8]),
];
const USER_ID: u8 = 1;
/// Flags (after the prefix) whose values are `true` or `false`, forwarded in lower case.
const BOOLEANS: [&str; 4] = [
    "session-valid",
    "user-anonymous",
    "user-verified",
    "user-can-reauthenticate",
];
const ROLES: u8 = 5;

/// Bytes of one index record in `Identity::buf`: name tag, name span, value span.
const RECORD: usize = 9;
/// Name tag of a name stored in the buffer rather than in `KNOWN`.
const NAME_IN_BUF: u8 = u8::MAX;
/// More identity headers than this in one answer is not an answer authgate will keep.
const MAX_HEADERS: usize = 64;

/// The identity of a 200 answer, packed for a long life in the cache: one buffer holds an
/// index (`RECORD` bytes a header) followed by the names authgate does not know and every
/// value, so an answer costs one allocation besides its own. Every value span holds valid
/// header-value bytes, which `wire_headers` relies on: keep `from_headers` the only constructor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    session: SessionState,
    count: u8,
    buf: Bytes,
    /// Usually none; `None` costs no allocation.
    set_cookie: Option<Box<[HeaderValue]>>,
}

/// The name of an identity header as it is injected: one of Authgear's, ready-made, or
/// another name of the namespace, carried in the answer's buffer. Derefs to the name's bytes.
#[derive(Debug, Clone)]
pub enum WireName {
    Known(&'static PreparedHeaderName),
    Other(Bytes),
}

impl WireName {
    /// Adds the header to a request (after any of the same name).
    pub fn append_to(self, req: &mut RequestHeader, value: HeaderValue) -> pingora::Result<bool> {
        match self {
            WireName::Known(name) => req.append_header(name, value),
            WireName::Other(name) => req.append_header(name, value),
        }
    }
}

impl std::ops::Deref for WireName {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            WireName::Known(name) => name.name().as_str().as_bytes(),
            WireName::Other(name) => name,
        }
    }
}

/// One header of an answer: name tag, name span, value span (spans are byte ranges).
type Record = (u8, (usize, usize), (usize, usize));

/// One index record's fields: name tag, name span, value span.
fn record(r: &[u8; RECORD]) -> Record {
    let n = |i: usize| u16::from_le_bytes([r[i], r[i + 1]]) as usize;
    (r[0], (n(1), n(3)), (n(5), n(7)))
}

impl Identity {
    /// Reads the identity headers of a 200 answer: names that start with the namespace prefix
    /// exactly (in lower case); folded spellings from the resolver are not copied.
    pub fn from_headers(headers: &HeaderMap, ns: &Namespace) -> Result<Identity, AnswerError> {
        let mut session = SessionState::Anonymous;
        let mut index: Vec<Record> = Vec::new();
        let mut data = Vec::new();
        for (name, value) in headers {
            if !name.as_str().starts_with(ns.prefix()) {
                continue;
            }
            let suffix = &name.as_str()[ns.prefix().len()..];
            // One canonical spelling of each flag: a backend comparing with `== "true"` must
            // read what authgate decided on.
            let value = if BOOLEANS.contains(&suffix) {
                let state = parse_valid(value).ok_or_else(|| {
                    AnswerError::Malformed(format!("{name} is neither true nor false"))
                })?;
                if suffix == "session-valid" {
                    session = state;
                }
                HeaderValue::from_static(if state == SessionState::Valid {
                    "true"
                } else {
                    "false"
                })
            } else {
                value.clone()
            };
            let tag = KNOWN.iter().position(|k| k.name() == name).map(|i| i as u8);
            // A name sent twice: the same value is kept once; two values (two user ids)
            // leave no way to tell which one the backend would read.
            if let Some(&(_, _, (vs, ve))) = index.iter().find(|(t, (ns_, ne), _)| match tag {
                Some(k) => *t == k,
                None => *t == NAME_IN_BUF && &data[*ns_..*ne] == name.as_str().as_bytes(),
            }) {
                if data[vs..ve] == *value.as_bytes() {
                    continue;
                }
                return Err(AnswerError::Malformed(format!(
                    "{name} sent twice with different values"
                )));
            }
            let (tag, name_span) = match tag {
                Some(i) => (i, (0, 0)),
                None => {
                    let start = data.len();
                    data.extend_from_slice(name.as_str().as_bytes());
                    (NAME_IN_BUF, (start, data.len()))
                }
            };
            if index.len() == MAX_HEADERS {
                return Err(AnswerError::Malformed(format!(
                    "more than {MAX_HEADERS} identity headers"
                )));
            }
            let start = data.len();
            data.extend_from_slice(value.as_bytes());
            index.push((tag, name_span, (start, data.len())));
        }
        let base = index.len() * RECORD;
        if base + data.len() > u16::MAX as usize {
            return Err(AnswerError::Malformed(
                "identity headers larger than 64 KiB".into(),
            ));
        }
        let mut buf = Vec::with_capacity(base + data.len());
        for (tag, (ns_, ne), (vs, ve)) in &index {
            buf.push(*tag);
            for n in [ns_ + base, ne + base, vs + base, ve + base] {
                buf.extend_from_slice(&(n as u16).to_le_bytes());
            }
        }
        buf.extend_from_slice(&data);
        let set_cookie: Box<[HeaderValue]> = headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        Ok(Identity {
            session,
            count: index.len() as u8,
            buf: Bytes::from(buf),
            set_cookie: (!set_cookie.is_empty()).then_some(set_cookie),
        })
    }

    pub fn session(&self) -> SessionState {
        self.session
    }

    /// (name tag, name span, value span) of each header, in the order the resolver sent them.
    fn records(&self) -> impl Iterator<Item = Record> + '_ {
        // The index is the buffer's first `count` records (`from_headers`).
        let index = self
            .buf
            .get(..self.count as usize * RECORD)
            .unwrap_or_default();
        index
            .chunks_exact(RECORD)
            .filter_map(|r| r.try_into().ok().map(record))
    }

    /// The identity headers, in the order the resolver sent them.
    pub fn wire_headers(&self) -> impl Iterator<Item = (WireName, HeaderValue)> + '_ {
        self.records().map(|(tag, (ns_, ne), (vs, ve))| {
            let name = match KNOWN.get(tag as usize) {
                Some(known) => WireName::Known(known),
                None => WireName::Other(self.buf.slice(ns_..ne)),
            };
            // SAFETY: every value span holds the bytes of a `HeaderValue`, or `true`/`false`,
            // as `from_headers` (the only constructor) stored them, and `buf` never changes:
            // valid field-value bytes, so checking them again on every request is skipped.
            // (Debug builds, the tests, still check: `from_maybe_shared_unchecked` asserts.)
            let value = unsafe { HeaderValue::from_maybe_shared_unchecked(self.buf.slice(vs..ve)) };
            (name, value)
        })
    }

    /// How many identity headers `wire_headers` yields at most.
    pub fn header_count(&self) -> usize {
        self.count as usize
    }

    /// The user id of a valid session.
    pub fn user_id(&self) -> Option<&str> {
        self.records()
            .find(|(tag, _, _)| *tag == USER_ID)
            .and_then(|(_, _, (vs, ve))| std::str::from_utf8(&self.buf[vs..ve]).ok())
    }

    /// The roles of a valid session (`x-authgear-user-roles`, comma-separated).
    pub fn roles(&self) -> impl Iterator<Item = &str> + '_ {
        self.records()
            .filter(|(tag, _, _)| *tag == ROLES)
            .filter_map(|(_, _, (vs, ve))| std::str::from_utf8(&self.buf[vs..ve]).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    pub fn set_cookie(&self) -> &[HeaderValue] {
        self.set_cookie.as_deref().unwrap_or_default()
    }
}

impl Answer {
    /// Reads a resolver reply.
    pub fn from_reply(
        status: u16,
        headers: &HeaderMap,
        ns: &Namespace,
    ) -> Result<Answer, AnswerError> {
        match status {
            200 => Identity::from_headers(headers, ns).map(|i| Answer::Identity(Arc::new(i))),
            401 | 403 => {
                let headers = headers
                    .iter()
                    .filter(|(n, _)| {
                        *n == http::header::WWW_AUTHENTICATE
                            || *n == http::header::LOCATION
                            || *n == http::header::SET_COOKIE
                    })
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                Ok(Answer::Denied { status, headers })
            }
            other => Err(AnswerError::Status(other)),
        }
    }

    pub fn session(&self) -> Option<SessionState> {
        match self {
            Answer::Identity(i) => Some(i.session()),
            Answer::Denied { .. } => None,
        }
    }
}

fn parse_valid(v: &HeaderValue) -> Option<SessionState> {
    let v = v.as_bytes();
    if v.eq_ignore_ascii_case(b"true") {
        Some(SessionState::Valid)
    } else if v.eq_ignore_ascii_case(b"false") {
        Some(SessionState::Invalid)
    } else {
        None
    }
}

#[cfg(test)]
#[path = "identity/tests.rs"]
mod tests;
