//! The canonical request: method, host, path and target settled once, before any decision.
//!
//! Routing, policy, the cache key and what the backend receives all read this, never the raw
//! request line again: a proxy and a backend that read one request two ways is how a request
//! reaches a backend through a route weaker than the one that guards it.
//!
//! - Method: upper case only (`delete` is refused, as nginx does): methods are case-sensitive
//!   (RFC 9110 9.1) but many frameworks fold them, so a lower-case spelling would be routed as
//!   one method and served as another.
//! - Target: origin-form (`/path?query`), absolute-form with an `http`/`https` scheme (its
//!   authority is the host, RFC 9112 3.2.2), or `*` for `OPTIONS` only; anything else is
//!   refused. The backend always gets the origin-form target built from the normalised path.
//! - Host: `Host`, else the target's or HTTP/2's authority; an HTTP/1.1 request without `Host`
//!   is refused (RFC 9112 3.2), even with an absolute-form target. Lower case, no trailing dot, port kept apart; the backend gets
//!   the canonical form.

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Version};
use percent_encoding::percent_decode_str;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

/// Why a request is refused before routing (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A method with a character other than `A-Z`, `-` or `_` (e.g. `delete`).
    Method,
    /// A target that is neither origin-form, absolute-form (`http`/`https`) nor `OPTIONS *`.
    Target,
    /// An HTTP/1.1 request without `Host`.
    MissingHost,
    /// A `Host` (or target authority) that is not a plain host name or IP literal with a port.
    Host,
    Path(PathError),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Method => f.write_str("method must be an upper-case token"),
            RequestError::Target => {
                f.write_str("request target must be origin-form or absolute-form")
            }
            RequestError::MissingHost => f.write_str("HTTP/1.1 request without Host"),
            RequestError::Host => f.write_str("malformed host"),
            RequestError::Path(e) => e.fmt(f),
        }
    }
}

/// The request as every later decision reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// Lower case, without port or trailing dot; empty when the request names no host.
    pub host: Cow<'a, str>,
    /// The normalised path (`*` for `OPTIONS *`).
    pub path: Cow<'a, str>,
    pub query: Option<&'a str>,
    /// The target for the backend when it differs from what Pingora would send.
    pub rewrite: Option<String>,
    /// The `Host` for the backend when it differs from the client's.
    pub set_host: Option<HeaderValue>,
}

impl Canonical<'_> {
    /// The path the route was chosen on; `*` routes as the root.
    pub fn route_path(&self) -> &str {
        if self.path == "*" {
            "/"
        } else {
            &self.path
        }
    }
}

/// Headers through which frameworks let a client replace the method (Rails, Express, Symfony,
/// Laravel).
static OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Every method a backend may act on instead of the request's own: the method-override
/// headers and a `_method` query parameter, upper-cased as frameworks read them. `Err` for a
/// value that is no method at all.
pub fn method_overrides<'a>(
    req: &'a RequestHeader,
    query: Option<&'a str>,
) -> impl Iterator<Item = Result<Method, RequestError>> + 'a {
    let headers = OVERRIDE_HEADERS
        .iter()
        .flat_map(move |name| req.headers.get_all(name).iter())
        .map(|v| v.as_bytes());
    // Most queries name no `_method`, even escaped: skip the decoding then.
    let query = query.filter(|q| {
        q.contains('%')
            || q.as_bytes()
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"_method"))
    });
    let params = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k: Cow<'_, [u8]> = percent_decode_str(k).into();
            k.trim_ascii()
                .eq_ignore_ascii_case(b"_method")
                .then(|| Cow::<[u8]>::from(percent_decode_str(v)))
        });
    headers.map(Cow::Borrowed).chain(params).map(|v| {
        // Form encoding writes a space as `+`; frameworks trim what surrounds the name.
        let upper: Vec<u8> = v
            .iter()
            .map(|&b| {
                if b == b'+' {
                    b' '
                } else {
                    b.to_ascii_uppercase()
                }
            })
            .collect();
        Method::from_bytes(upper.trim_ascii()).map_err(|_| RequestError::Method)
    })
}

/// Whether a method is spelled as authgate routes it: `A-Z`, `-` and `_` (nginx's rule).
pub fn canonical_method(m: &Method) -> bool {
    let s = m.as_str().as_bytes();
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Settles the canonical request, or says why it is refused.
pub fn settle(req: &RequestHeader) -> Result<Canonical<'_>, RequestError> {
    if !canonical_method(&req.method) {
        return Err(RequestError::Method);
    }
    let raw = req.raw_path();
    // A fragment is never part of a target; bytes that are not UTF-8 reach the backend
    // verbatim while the URI holds a lossy rendering of them.
    if raw.contains(&b'#') || !req.raw_path_is_utf8() {
        return Err(RequestError::Target);
    }
    let (authority, path, query, origin) = match raw.first() {
        Some(b'/') => {
            // Origin-form round-trips through the URI, which Pingora parsed from these bytes.
            (None, req.uri.path(), req.uri.query(), true)
        }
        Some(b'*') if raw == b"*" => {
            if req.method != Method::OPTIONS {
                return Err(RequestError::Target);
            }
            (None, "*", None, true)
        }
        _ => {
            let (authority, rest) = absolute_form(raw).ok_or(RequestError::Target)?;
            let rest = std::str::from_utf8(rest).map_err(|_| RequestError::Target)?;
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            (Some(authority), path, query, false)
        }
    };
    let path = match path {
        "*" => Cow::Borrowed("*"),
        "" => Cow::Borrowed("/"),
        p => normalize_path(p).map_err(RequestError::Path)?,
    };
    let rewrite = if !origin || path != req.uri.path() {
        Some(match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        })
    } else {
        None
    };

    let host_header = {
        let mut hosts = req.headers.get_all(HOST).iter();
        let first = hosts.next();
        if hosts.next().is_some() {
            // Pingora refuses these for HTTP/1; HTTP/2 may still carry two.
            return Err(RequestError::Host);
        }
        first
    };
    if host_header.is_none() && req.version == Version::HTTP_11 {
        // Even with an absolute-form target (RFC 9112 3.2): such a request comes from no
        // real client, and a backend may read its host from either place.
        return Err(RequestError::MissingHost);
    }
    let sent: Option<&[u8]> = host_header
        .map(HeaderValue::as_bytes)
        .or(authority)
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
    let Some(sent) = sent else {
        return Ok(Canonical {
            host: Cow::Borrowed(""),
            path,
            query,
            rewrite,
            set_host: None,
        });
    };
    if let (Some(h), Some(a)) = (host_header, authority) {
        // Pingora refuses a Host that differs from the target's authority; never trust that.
        if h.as_bytes() != a {
            return Err(RequestError::Host);
        }
    }
    let (host, port) = parse_authority(sent).ok_or(RequestError::Host)?;
    let canonical_len = host.len() + port.map_or(0, |p| p.len() + 1);
    let same =
        host_header.is_some() && canonical_len == sent.len() && sent.starts_with(host.as_bytes());
    let set_host = if same {
        None
    } else {
        let value = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Some(HeaderValue::from_str(&value).map_err(|_| RequestError::Host)?)
    };
    Ok(Canonical {
        host,
        path,
        query,
        rewrite,
        set_host,
    })
}

/// `http://authority/rest` or `https://...` (scheme in any case): the authority and the rest
/// (empty, or starting with `/` or `?`). Other schemes and shapes are refused.
fn absolute_form(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = raw.iter().position(|&b| b == b':')?;
    let scheme = &raw[..colon];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return None;
    }
    let after = raw[colon + 1..].strip_prefix(b"//")?;
    let end = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.is_empty() {
        return None;
    }
    // `?` right after the authority means the path is empty: the root.
    Some((authority, rest))
}

/// `host[:port]` from an authority: the host in lower case without a trailing dot, and the
/// port when one is given. `None` for anything else (userinfo, percent-escapes, spaces, an
/// empty label, a port that is not a number up to 65535).
pub fn parse_authority(raw: &[u8]) -> Option<(Cow<'_, str>, Option<&str>)> {
    let raw = std::str::from_utf8(raw).ok()?;
    if raw.is_empty() {
        return Some((Cow::Borrowed(""), None));
    }
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let literal = &raw[1..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let rest = &raw[end + 1..];
        let port = match rest {
            "" => None,
            r => Some(r.strip_prefix(':')?),
        };
        (&raw[..=end], port)
    } else {
        // Byte by byte (`:` and `.` are ASCII, so the slices are on char boundaries): on
        // every request, `str`'s pattern searchers cost more than the rest of the parse.
        let (host, port) = match raw.bytes().rposition(|b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        // Labels of letters, digits, `-` and `_`, none empty (no leading, doubled or
        // trailing dot; an empty host has one empty label).
        let mut label_empty = true;
        for b in host.bytes() {
            match b {
                b'.' if label_empty => return None,
                b'.' => label_empty = true,
                b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => label_empty = false,
                _ => return None,
            }
        }
        if label_empty {
            return None;
        }
        (host, port)
    };
    let port = match port {
        // An empty port is allowed (RFC 3986 3.2.3) and means the default.
        Some("") | None => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            if p.parse::<u32>().ok()? > 65535 {
                return None;
            }
            Some(p)
        }
        Some(_) => return None,
    };
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((host, port))
}

/// Identical `Content-Length` values, repeated or comma-joined (Pingora accepts both and has
/// checked they agree), go to the backend as one plain number.
pub fn single_content_length(req: &mut RequestHeader) -> pingora::Result<()> {
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return Ok(());
    }
    let number = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let number = HeaderValue::from_bytes(number)
        .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad Content-Length"))?;
    req.insert_header(CONTENT_LENGTH, number)
}

/// Why a request path is refused outright (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    BadEscape,
    /// `%2F` or `%5C`: a backend might decode it into a separator after routing.
    EncodedSeparator,
    /// A raw `\`, which some servers read as `/`.
    Backslash,
    /// `%00`, or a control character.
    Control,
    NotAbsolute,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "malformed percent-escape in path",
            PathError::EncodedSeparator => "encoded slash or backslash in path",
            PathError::Backslash => "backslash in path",
            PathError::Control => "control character in path",
            PathError::NotAbsolute => "path must start with /",
        })
    }
}

/// Decodes percent-escapes, removes `.` and `..` segments and merges repeated slashes: the
/// path a backend will act on, which is what routing must decide on. The result is
/// percent-encoded again where a URI path needs it, so it can be forwarded as it is.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(raw.as_bytes()) {
        // The usual case, checked without allocating: nothing to decode, merge or resolve.
        return Ok(Cow::Borrowed(raw));
    }
    normalize_slow(raw).map(Cow::Owned)
}

/// Whether `normalize_slow` would return `raw` unchanged.
fn is_normal(raw: &[u8]) -> bool {
    raw.first() == Some(&b'/')
        && raw.iter().all(|&b| b == b'/' || keeps(b))
        && !raw.windows(2).any(|w| w == b"//")
        && raw.split(|&b| b == b'/').all(|seg| {
            let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
            name != b"." && name != b".."
        })
}

fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

fn normalize_slow(raw: &str) -> Result<String, PathError> {
    let raw = raw.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).and_then(|&c| hex(c)),
                    raw.get(i + 2).and_then(|&c| hex(c)),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = (h * 16 + l) as u8;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    _ => decoded.push(v),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        // A segment's `;params` do not make it a dot segment to us, but some servers strip
        // them: `..;x` is treated as `..` too.
        let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
        match name {
            b"" if seg.is_empty() => {}
            b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let trailing = decoded.len() > 1
        && (decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/.."));
    let mut out = String::with_capacity(decoded.len() + 8);
    for seg in &segments {
        out.push('/');
        encode_segment(seg, &mut out);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

fn encode_segment(seg: &[u8], out: &mut String) {
    for &b in seg {
        if keeps(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789ABCDEF"[(b & 15) as usize]));
        }
    }
}

#[cfg(test)]
#[path = "request/tests.rs"]
mod tests;
