//! Unit tests of `forwarded`.

use super::*;

use crate::testutil::request as req;

const CLIENT: &str = "203.0.113.7";

#[test]
fn untrusted_client_copies_are_ignored() {
    let r = req(&[
        ("host", "app.example"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ]);
    let f = TrustedProxies::default().derive(&r, own_host(&r), CLIENT.parse().ok(), false);
    assert_eq!(f.for_.unwrap(), CLIENT);
    assert_eq!(f.proto, "http");
    assert_eq!(f.host.unwrap(), "app.example");
}

#[test]
fn trusted_proxy_chain_is_extended() {
    let r = req(&[
        ("host", "app.example"),
        ("x-forwarded-for", "1.2.3.4, 5.6.7.8"),
        ("x-forwarded-for", "9.9.9.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
    ]);
    let t = TrustedProxies::new(vec!["203.0.113.0/24".parse().unwrap()]);
    let f = t.derive(&r, own_host(&r), CLIENT.parse().ok(), false);
    assert_eq!(f.for_.unwrap(), "1.2.3.4, 5.6.7.8, 9.9.9.9, 203.0.113.7");
    assert_eq!(f.proto, "https");
    assert_eq!(f.host.unwrap(), "public.example");
}

#[test]
fn trusted_proxy_cannot_set_a_strange_proto() {
    let r = req(&[("x-forwarded-proto", "javascript")]);
    let t = TrustedProxies::new(vec!["0.0.0.0/0".parse().unwrap()]);
    assert_eq!(
        t.derive(&r, own_host(&r), CLIENT.parse().ok(), true).proto,
        "https"
    );
}

#[test]
fn mapped_ipv4_is_matched_and_shown_as_ipv4() {
    let t = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap()]);
    let f = t.derive(&req(&[]), None, "::ffff:127.0.0.1".parse().ok(), false);
    assert_eq!(f.for_.unwrap(), "127.0.0.1");
}

#[test]
fn apply_replaces_client_copies() {
    let mut r = req(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "5.6.7.8"),
    ]);
    let f = TrustedProxies::default().derive(&r, own_host(&r), CLIENT.parse().ok(), false);
    f.apply(&mut r).unwrap();
    let all: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, [CLIENT]);
}

fn own_host(r: &RequestHeader) -> Option<HeaderValue> {
    r.headers.get(http::header::HOST).cloned()
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    let edges = [0u8, 1, 9, 10, 11, 99, 100, 101, 199, 200, 249, 250, 255];
    for a in edges {
        for b in edges {
            let ip = std::net::Ipv4Addr::new(a, b, b, a);
            assert_eq!(ip_value(IpAddr::V4(ip)), ip.to_string().as_str());
        }
    }
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(ip_value(v6), "2001:db8::1");
}
