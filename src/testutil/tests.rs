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

/// The smallest good configuration file: one listener, the resolver, one pool, one route.
pub const CONFIG: &str = r#"
listen:
  - addr: 127.0.0.1:8080
resolver:
  url: http://127.0.0.1:3001/_resolver/resolve
  timeout: 2s
upstreams:
  app:
    backends: [127.0.0.1:3000]
routes:
  - path: /
    upstream: app
"#;
