//! Unit tests of `policy`.

use super::*;

use http::header::HeaderMap;

use crate::identity::{Answer, Namespace};

fn identity(pairs: &[(&str, &str)]) -> Identity {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match Answer::from_reply(200, &h, &Namespace::new("x-authgear-")).unwrap() {
        Answer::Identity(i) => (*i).clone(),
        other => panic!("{other:?}"),
    }
}

fn alice() -> Identity {
    identity(&[
        ("x-authgear-session-valid", "true"),
        ("x-authgear-user-id", "alice"),
        ("x-authgear-user-roles", "staff, admin"),
    ])
}

fn nobody() -> Identity {
    identity(&[])
}

fn invalid() -> Identity {
    identity(&[("x-authgear-session-valid", "false")])
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

#[test]
fn identify_and_public_always_forward() {
    for p in [Policy::Public, Policy::Identify] {
        for i in [alice(), nobody(), invalid()] {
            assert_eq!(decide(p, &[], &i, || unreachable!()), Verdict::Forward);
        }
    }
}

#[test]
fn require_wants_a_valid_session() {
    assert_eq!(
        decide(Policy::Require, &[], &alice(), || None),
        Verdict::Forward
    );
    for i in [nobody(), invalid()] {
        assert_eq!(
            decide(Policy::Require, &[], &i, || None),
            Verdict::Unauthenticated
        );
        let to = HeaderValue::from_static("/login");
        assert_eq!(
            decide(Policy::Require, &[], &i, || Some(to.clone())),
            Verdict::Redirect(to)
        );
    }
}

#[test]
fn roles_need_one_of_them() {
    assert_eq!(
        decide(Policy::Require, &roles(&["admin"]), &alice(), || None),
        Verdict::Forward
    );
    assert_eq!(
        decide(
            Policy::Require,
            &roles(&["owner", "staff"]),
            &alice(),
            || None
        ),
        Verdict::Forward
    );
    assert_eq!(
        decide(Policy::Require, &roles(&["owner"]), &alice(), || None),
        Verdict::Forbidden
    );
    // No role is not a role: "admin" is not found in "superadmin".
    let sub = identity(&[
        ("x-authgear-session-valid", "true"),
        ("x-authgear-user-roles", "superadmin"),
    ]);
    assert_eq!(
        decide(Policy::Require, &roles(&["admin"]), &sub, || None),
        Verdict::Forbidden
    );
}

#[test]
fn a_browser_is_told_apart_by_its_accept_header() {
    let req = |accept: &str| crate::testutil::request(&[("accept", accept)]);
    assert!(wants_html(&req("text/html,application/xhtml+xml;q=0.9")));
    assert!(wants_html(&req("TEXT/HTML; q=0.5")));
    assert!(!wants_html(&req("application/json")));
    assert!(!wants_html(&req("text/htmlx")));
}

#[test]
fn the_login_redirect_carries_the_original_url_encoded() {
    let login = Login {
        url: "https://auth.example/login?app=1".into(),
        return_to_param: "return_to".into(),
    };
    let fwd = Forwarded {
        for_: None,
        proto: HeaderValue::from_static("https"),
        host: Some(HeaderValue::from_static("app.example")),
    };
    let at = login_location(&login, &fwd, "/a b/c?x=1&y=\"2\"").unwrap();
    assert_eq!(
        at,
        "https://auth.example/login?app=1&return_to=https%3A%2F%2Fapp.example%2Fa%20b%2Fc%3Fx%3D1%26y%3D%222%22"
    );
    let plain = Login {
        url: "/login".into(),
        return_to_param: "next".into(),
    };
    assert_eq!(
        login_location(&plain, &fwd, "/").unwrap(),
        "/login?next=https%3A%2F%2Fapp.example%2F"
    );
    // A forwarded host that is not text cannot be put in a URL: no redirect, a 401.
    let odd = Forwarded {
        host: Some(HeaderValue::from_bytes(b"\xff").unwrap()),
        ..fwd
    };
    assert_eq!(login_location(&plain, &odd, "/"), None);
}
