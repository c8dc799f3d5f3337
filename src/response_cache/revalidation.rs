//! What a `304 Not Modified` does to a stored response (RFC 9111 §4.3.4, §3.2): its header
//! fields replace the stored ones, except those the stored body depends on. Pingora's own
//! merge copies five fields only (`Cache-Control`, `Expires`, `ETag`, and two of its own).

use http::header::{
    HeaderName, AGE, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, SET_COOKIE,
    TRANSFER_ENCODING, VARY,
};
use pingora::http::ResponseHeader;

/// Fields a `304` never changes in the stored response: the framing and coding of the stored
/// body (`Content-Length`, `Transfer-Encoding`, `Content-Encoding`, `Content-Range`), `Vary`
/// (the stored variance was computed from it), and `Set-Cookie` (never stored, §3.1's
/// exclusions and authgate's identity rule). Hop-by-hop fields never get this far.
const KEPT: [HeaderName; 6] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    CONTENT_ENCODING,
    CONTENT_RANGE,
    VARY,
    SET_COOKIE,
];

/// The stored response `stored`, updated with the header fields of the `304` `fresh`; the
/// status stays the stored one. `Age` is the 304's own (it dates the validation).
pub fn updated_by_304(stored: &ResponseHeader, fresh: &ResponseHeader) -> ResponseHeader {
    let mut updated = stored.clone();
    updated.remove_header(&AGE);
    for name in fresh.headers.keys() {
        if KEPT.contains(name) {
            continue;
        }
        updated.remove_header(name);
        for value in fresh.headers.get_all(name) {
            // Cannot fail: the name and value come from a parsed header.
            if updated.append_header(name.clone(), value.clone()).is_err() {
                log::debug!("a 304's {name} could not be stored");
            }
        }
    }
    updated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, pairs: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in pairs {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn values<'a>(r: &'a ResponseHeader, name: &str) -> Vec<&'a str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn a_304_replaces_every_field_but_the_bodys_own() {
        let stored = resp(
            200,
            &[
                ("content-length", "5"),
                ("content-encoding", "gzip"),
                ("vary", "accept"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
                ("x-multi", "a"),
                ("x-multi", "b"),
                ("x-kept", "yes"),
                ("age", "30"),
            ],
        );
        let fresh = resp(
            304,
            &[
                ("content-length", "0"),
                ("content-encoding", "br"),
                ("vary", "*"),
                ("set-cookie", "sid=1"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
                ("x-multi", "c"),
                ("x-new", "1"),
                ("x-new", "2"),
            ],
        );
        let u = updated_by_304(&stored, &fresh);
        assert_eq!(u.status.as_u16(), 200);
        assert_eq!(values(&u, "content-length"), ["5"]);
        assert_eq!(values(&u, "content-encoding"), ["gzip"]);
        assert_eq!(values(&u, "vary"), ["accept"]);
        assert!(values(&u, "set-cookie").is_empty());
        assert_eq!(values(&u, "x-version"), ["2"]);
        assert_eq!(values(&u, "x-multi"), ["c"]);
        assert_eq!(values(&u, "x-new"), ["1", "2"]);
        assert_eq!(values(&u, "x-kept"), ["yes"]);
        assert!(
            values(&u, "age").is_empty(),
            "the stored Age outlived its validation"
        );
        let aged = updated_by_304(&stored, &resp(304, &[("age", "7")]));
        assert_eq!(values(&aged, "age"), ["7"]);
    }
}
