//! Invalidation by unsafe methods (RFC 9111 §4.4): which stored URLs a backend's answer to a
//! request that may change state makes stale. URLs are in the key's form, `host/path?query`
//! with the canonical host (lower case, no port, no trailing dot) and the normalised path.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method};

use pingora::http::RequestHeader;

use crate::request::{method_overrides, normalize_path};

/// Whether a method is known to be safe (RFC 9110 §9.2.1); any other, known or not, may
/// change state.
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The canonical form of a host as the key holds it: lower case, without port or trailing
/// dot. `None` for a host the key could not hold.
pub fn canonical_host(host: &str) -> Option<String> {
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.bytes().any(|b| b == b'|' || b.is_ascii_whitespace()) {
        return None;
    }
    Some(host)
}

/// Whether the backend may have acted on an unsafe method: the request's own, or one a
/// method override names (`X-HTTP-Method-Override`, `_method`, ... which frameworks obey; a
/// value that is no method at all counts too, the cache does not guess).
pub fn may_change_state(req: &RequestHeader) -> bool {
    !is_safe(&req.method)
        || method_overrides(req, req.uri.query()).any(|m| m.map_or(true, |m| !is_safe(&m)))
}

/// The URLs an answer of `status` to `req` on `url` (the key's form, on `host`) invalidates:
/// none for a safe method or an error answer (only 2xx and 3xx count); otherwise the target,
/// and the `Location` and `Content-Location` URLs on the same host.
pub fn invalidated(
    req: &RequestHeader,
    status: u16,
    host: &str,
    url: &str,
    headers: &HeaderMap,
) -> Vec<String> {
    if !(200..400).contains(&status) || !may_change_state(req) {
        return Vec::new();
    }
    let mut urls = vec![url.to_string()];
    for name in [LOCATION, CONTENT_LOCATION] {
        for value in headers.get_all(name) {
            let named = value
                .to_str()
                .ok()
                .and_then(|v| resolve(v.trim(), host, url));
            if let Some(named) = named {
                if !urls.contains(&named) {
                    urls.push(named);
                }
            }
        }
    }
    urls
}

/// A `Location`-style reference resolved against the target `url` (RFC 3986 §5.2, for the
/// forms a backend sends), in the key's form; `None` when it names another host, another
/// scheme than HTTP, or a path the key could not hold.
fn resolve(reference: &str, host: &str, url: &str) -> Option<String> {
    let reference = reference.split('#').next()?;
    let target_path = url.strip_prefix(host)?.split('?').next()?;
    let (ref_host, rest) = if let Some(after) = reference
        .strip_prefix("http://")
        .or_else(|| reference.strip_prefix("https://"))
        .or_else(|| reference.strip_prefix("//"))
    {
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        // Credentials in the authority are no host of ours.
        if authority.contains('@') {
            return None;
        }
        // An absolute URL's empty path is `/`.
        let rest = &after[end..];
        let rest = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        (canonical_host(authority)?, rest)
    } else if reference.contains(':') && !reference.starts_with(['/', '?', '.']) {
        // Another scheme (or a colon in a first segment, which RFC 3986 forbids unprefixed).
        return None;
    } else {
        (host.to_string(), reference.to_string())
    };
    if ref_host != host {
        return None;
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest.as_str(), None),
    };
    let joined;
    let path = if path.starts_with('/') {
        path
    } else if path.is_empty() {
        // A bare `?query` keeps the target's path; an empty reference names nothing.
        query?;
        target_path
    } else {
        // Relative to the target's directory.
        let dir = target_path.rsplit_once('/').map_or("", |(d, _)| d);
        joined = format!("{dir}/{path}");
        &joined
    };
    let path = normalize_path(path).ok()?;
    Some(match query {
        Some(q) => format!("{host}{path}?{q}"),
        None => format!("{host}{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, pairs: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        for (n, v) in pairs {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        crate::testutil::request(pairs).headers.clone()
    }

    #[test]
    fn which_methods_and_answers_invalidate() {
        let url = "h.test/a/b?x=1";
        let none = HeaderMap::new();
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            let m = req(m, "/a/b?x=1", &[]);
            assert!(
                invalidated(&m, 200, "h.test", url, &none).is_empty(),
                "{}",
                m.method
            );
        }
        for m in ["POST", "PUT", "DELETE", "PATCH", "FROB"] {
            let m = &req(m, "/a/b?x=1", &[]);
            for status in [200, 201, 204, 301, 303, 399] {
                assert_eq!(
                    invalidated(m, status, "h.test", url, &none),
                    [url],
                    "{} {status}",
                    m.method
                );
            }
            for status in [100, 400, 404, 500, 503] {
                assert!(
                    invalidated(m, status, "h.test", url, &none).is_empty(),
                    "{} {status}",
                    m.method
                );
            }
        }
        // A method override a framework obeys: what the backend did, whatever the method.
        for (uri, pairs) in [
            ("/a/b?x=1", &[("x-http-method-override", "DELETE")][..]),
            ("/a/b?x=1", &[("x-http-method", "put")][..]),
            ("/a/b?x=1&_method=PATCH", &[][..]),
            ("/a/b?x=1&%5Fmethod=post", &[][..]),
            ("/a/b?x=1", &[("x-method-override", "not a method")][..]),
        ] {
            let m = &req("GET", uri, pairs);
            assert_eq!(
                invalidated(m, 200, "h.test", url, &none),
                [url],
                "{uri} {pairs:?}"
            );
        }
        let safe = &req("POST", "/a/b?x=1", &[("x-http-method-override", "GET")]);
        assert_eq!(
            invalidated(safe, 200, "h.test", url, &none),
            [url],
            "POST is unsafe itself"
        );
        let get = &req("GET", "/a/b?x=1&_method=HEAD", &[]);
        assert!(invalidated(get, 200, "h.test", url, &none).is_empty());
    }

    #[test]
    fn location_and_content_location_on_the_same_host_only() {
        let url = "h.test/a/b?x=1";
        let got = |pairs: &[(&str, &str)]| {
            invalidated(
                &req("POST", "/a/b?x=1", &[]),
                201,
                "h.test",
                url,
                &with(pairs),
            )
        };
        assert_eq!(
            got(&[
                ("location", "/c/d?y=2"),
                ("content-location", "http://H.test:8080/e")
            ]),
            [url, "h.test/c/d?y=2", "h.test/e"]
        );
        assert_eq!(got(&[("location", "c")]), [url, "h.test/a/c"]);
        assert_eq!(got(&[("location", "../c#frag")]), [url, "h.test/c"]);
        assert_eq!(got(&[("location", "?y=2")]), [url, "h.test/a/b?y=2"]);
        assert_eq!(got(&[("location", "//h.test./z")]), [url, "h.test/z"]);
        assert_eq!(got(&[("location", "https://h.test")]), [url, "h.test/"]);
        // The target itself, named again: once.
        assert_eq!(got(&[("location", "/a/b?x=1")]), [url]);
        for other in [
            "http://other.test/a/b",
            "//other.test/a",
            "https://user@h.test/a",
            "mailto:someone@h.test",
            "javascript:alert(1)",
            "/a/%2F/b",
            "",
            "http://h.test|x/a",
        ] {
            assert_eq!(got(&[("location", other)]), [url], "{other:?}");
        }
    }

    #[test]
    fn hosts_in_the_keys_form() {
        assert_eq!(canonical_host("H.Test.:443").as_deref(), Some("h.test"));
        assert_eq!(canonical_host("h.test:x").as_deref(), Some("h.test:x"));
        assert_eq!(canonical_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(canonical_host(""), None);
        assert_eq!(canonical_host(":80"), None);
        assert_eq!(canonical_host("a b"), None);
    }
}
