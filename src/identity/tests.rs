//! Unit tests of `identity`.

use super::*;

fn ns() -> Namespace {
    Namespace::new("x-authgear-")
}

#[test]
fn covers_every_spelling_a_backend_folds() {
    let ns = ns();
    for name in [
        "x-authgear-user-id",
        "X-Authgear-User-Id",
        "x_authgear_user_id",
        "X.Authgear.User.Id",
        "x-authgear_user.roles",
        "x-authgear-",
    ] {
        assert!(ns.covers(name), "{name} must be covered");
    }
    for name in [
        "x-authgea",
        "x-authgearuser",
        "authorization",
        "x-forwarded-for",
        "xx-authgear-user-id",
    ] {
        assert!(!ns.covers(name), "{name} must not be covered");
    }
}

#[test]
fn prefix_is_folded() {
    assert_eq!(Namespace::new("X_Auth.").prefix(), "x-auth-");
}

#[test]
fn strip_removes_all_values_of_all_spellings() {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.append_header("x-authgear-user-id", "a").unwrap();
    req.append_header("x-authgear-user-id", "b").unwrap();
    req.append_header("x_authgear_user_roles", "admin").unwrap();
    req.append_header("X.Authgear.Session.Valid", "true")
        .unwrap();
    req.append_header("cookie", "session=x").unwrap();
    assert_eq!(ns().strip(&mut req), 3);
    assert_eq!(req.headers.len(), 1);
    assert!(req.headers.contains_key("cookie"));
}

fn reply(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn valid_answer_copies_by_prefix() {
    let h = reply(&[
        ("X-Authgear-Session-Valid", "true"),
        ("X-Authgear-User-Id", "u1"),
        ("X-Authgear-Brand-New", "yes"),
        ("x_authgear_user_roles", "admin"),
        ("Content-Type", "text/plain"),
    ]);
    match Answer::from_reply(200, &h, &ns()).unwrap() {
        Answer::Identity(i) => {
            assert_eq!(i.session(), SessionState::Valid);
            assert_eq!(i.user_id(), Some("u1"));
            let got: Vec<_> = i
                .wire_headers()
                .map(|(n, v)| format!("{}: {}", String::from_utf8_lossy(&n), v.to_str().unwrap()))
                .collect();
            assert_eq!(
                got,
                [
                    "x-authgear-session-valid: true",
                    "x-authgear-user-id: u1",
                    "x-authgear-brand-new: yes"
                ]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn oversized_identity_is_malformed() {
    let big = "a".repeat(70_000);
    let h = reply(&[("x-authgear-user-id", big.as_str())]);
    assert!(matches!(
        Answer::from_reply(200, &h, &ns()),
        Err(AnswerError::Malformed(_))
    ));
}

#[test]
fn session_states() {
    let a = Answer::from_reply(200, &reply(&[]), &ns()).unwrap();
    assert_eq!(a.session(), Some(SessionState::Anonymous));
    let a =
        Answer::from_reply(200, &reply(&[("x-authgear-session-valid", "FALSE")]), &ns()).unwrap();
    assert_eq!(a.session(), Some(SessionState::Invalid));
}

#[test]
fn hostile_answers_are_malformed() {
    let twice = reply(&[
        ("x-authgear-session-valid", "false"),
        ("x-authgear-session-valid", "true"),
    ]);
    assert!(matches!(
        Answer::from_reply(200, &twice, &ns()),
        Err(AnswerError::Malformed(_))
    ));
    let odd = reply(&[("x-authgear-session-valid", "yes")]);
    assert!(matches!(
        Answer::from_reply(200, &odd, &ns()),
        Err(AnswerError::Malformed(_))
    ));
    assert_eq!(
        Answer::from_reply(500, &reply(&[]), &ns()),
        Err(AnswerError::Status(500))
    );
    assert_eq!(
        Answer::from_reply(302, &reply(&[]), &ns()),
        Err(AnswerError::Status(302))
    );
}

#[test]
fn denial_keeps_only_challenge_headers() {
    let h = reply(&[
        ("WWW-Authenticate", "Bearer error=\"invalid_token\""),
        ("X-Authgear-User-Id", "u1"),
        ("Location", "/login"),
        ("Set-Cookie", "session=; Max-Age=0"),
        ("Cache-Control", "max-age=600"),
        ("Content-Type", "text/html"),
    ]);
    match Answer::from_reply(401, &h, &ns()).unwrap() {
        Answer::Denied { status, headers } => {
            assert_eq!(status, 401);
            let kept: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect();
            assert_eq!(
                kept,
                [
                    ("www-authenticate", "Bearer error=\"invalid_token\""),
                    ("location", "/login"),
                    ("set-cookie", "session=; Max-Age=0"),
                ]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn answer(pairs: &[(&str, &str)]) -> Result<Identity, AnswerError> {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    Identity::from_headers(&h, &ns())
}

#[test]
fn two_values_for_one_identity_header_are_a_bad_answer() {
    let e = answer(&[
        ("x-authgear-session-valid", "true"),
        ("x-authgear-user-id", "alice"),
        ("x-authgear-user-id", "admin"),
    ]);
    assert!(matches!(e, Err(AnswerError::Malformed(_))), "{e:?}");
    let e = answer(&[
        ("x-authgear-session-valid", "true"),
        ("x-authgear-session-valid", "false"),
    ]);
    assert!(matches!(e, Err(AnswerError::Malformed(_))), "{e:?}");
    let e = answer(&[("x-authgear-custom", "a"), ("x-authgear-custom", "b")]);
    assert!(matches!(e, Err(AnswerError::Malformed(_))), "{e:?}");
    // The same value twice is one header.
    let i = answer(&[
        ("x-authgear-session-valid", "true"),
        ("x-authgear-user-id", "alice"),
        ("x-authgear-user-id", "alice"),
    ])
    .unwrap();
    let sent: Vec<_> = i.wire_headers().map(|(n, _)| n).collect();
    assert_eq!(sent.len(), 2);
}

#[test]
fn flags_are_forwarded_in_one_spelling() {
    let i = answer(&[
        ("x-authgear-session-valid", "TRUE"),
        ("x-authgear-user-anonymous", "False"),
        ("x-authgear-user-id", "alice"),
    ])
    .unwrap();
    assert_eq!(i.session(), SessionState::Valid);
    let sent: Vec<(String, String)> = i
        .wire_headers()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                v.to_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("x-authgear-session-valid".to_string(), "true".to_string()),
            ("x-authgear-user-anonymous".to_string(), "false".to_string()),
            ("x-authgear-user-id".to_string(), "alice".to_string()),
        ]
    );
    assert!(matches!(
        answer(&[("x-authgear-user-verified", "yes")]),
        Err(AnswerError::Malformed(_))
    ));
}

#[test]
fn a_flood_of_identity_headers_is_refused_early() {
    let names: Vec<String> = (0..5000).map(|i| format!("x-authgear-h{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert!(matches!(answer(&pairs), Err(AnswerError::Malformed(_))));
}

proptest::proptest! {
    /// Any name that folds (case, `_` and `.` for `-`) onto a name of the namespace is
    /// covered, so stripping removes every spelling a CGI/WSGI/PHP backend would read.
    #[test]
    fn every_folded_spelling_is_covered(
        suffix in "[a-z-]{0,12}",
        flips in proptest::collection::vec(0u8..4, 0..32),
    ) {
        let canonical = format!("x-authgear-{suffix}");
        let spelled: String = canonical
            .chars()
            .enumerate()
            .map(|(i, c)| match (c, flips.get(i).copied().unwrap_or(0)) {
                ('-', 1) => '_',
                ('-', 2) => '.',
                (c, 3) => c.to_ascii_uppercase(),
                (c, _) => c,
            })
            .collect();
        proptest::prop_assert!(ns().covers(&spelled), "{}", spelled);
    }
}

#[test]
fn authgears_names_are_injected_ready_made() {
    let i = answer(&[
        ("x-authgear-session-valid", "true"),
        ("x-authgear-user-id", "alice"),
        ("x-authgear-brand-new", "yes"),
    ])
    .unwrap();
    let names: Vec<_> = i.wire_headers().map(|(n, _)| n).collect();
    assert!(matches!(names[0], WireName::Known(_)));
    assert!(matches!(names[1], WireName::Known(_)));
    // A name authgate does not know travels in the answer's buffer.
    assert!(matches!(&names[2], WireName::Other(b) if &b[..] == b"x-authgear-brand-new"));
    let mut req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
    for (name, value) in i.wire_headers() {
        name.append_to(&mut req, value).unwrap();
    }
    let mut wire = Vec::new();
    req.header_to_h1_wire(&mut wire);
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "x-authgear-session-valid: true\r\nx-authgear-user-id: alice\r\nx-authgear-brand-new: yes\r\n"
    );
    assert_eq!(i.header_count(), 3);
}
