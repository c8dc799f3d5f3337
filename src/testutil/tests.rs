//! Helpers shared by the unit tests.

use pingora::http::RequestHeader;

/// A `GET /` request with these headers, in this order (repeats kept).
pub fn request(pairs: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/", None).expect("request");
    for (n, v) in pairs {
        r.append_header(n.to_string(), *v).expect("header");
    }
    r
}
