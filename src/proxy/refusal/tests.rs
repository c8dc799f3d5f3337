//! Unit tests of `refusal`: every verdict, resolver failure and proxy error maps to one answer.

use super::*;

#[test]
fn verdicts_map_to_their_answers() {
    assert!(Refusal::of_verdict(Verdict::Forward, Outcome::Valid).is_none());
    let to = HeaderValue::from_static("https://login.example/?return_to=x");
    let r = Refusal::of_verdict(Verdict::Redirect(to.clone()), Outcome::LoginRequired).unwrap();
    assert_eq!((r.status, r.outcome), (302, Outcome::LoginRequired));
    assert_eq!(r.headers, [(LOCATION, to)]);
    let r = Refusal::of_verdict(Verdict::Unauthenticated, Outcome::LoginRequired).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.body, RefusalBody::Json("authentication_required"));
    assert_eq!(r.headers[0].0, WWW_AUTHENTICATE);
    let r = Refusal::of_verdict(Verdict::Forbidden, Outcome::MissingRole).unwrap();
    assert_eq!((r.status, r.body), (403, RefusalBody::Json("forbidden")));
}

#[test]
fn a_resolver_failure_is_never_a_401() {
    for (e, status) in [
        (ResolveError::Timeout("t".into()), 504),
        (
            ResolveError::Unreachable(Error::explain(ErrorType::ConnectRefused, "x")),
            503,
        ),
        (
            ResolveError::Broken(Error::explain(ErrorType::ConnectionClosed, "x")),
            502,
        ),
    ] {
        let r = Refusal::of_resolve_error(&e);
        assert_eq!(r.status, status, "{e}");
        assert_eq!(r.outcome, Outcome::of_error(&e));
    }
    assert_eq!(resolve_failure_level(Lookup::Miss), log::Level::Warn);
    assert_eq!(resolve_failure_level(Lookup::Coalesced), log::Level::Debug);
}

#[test]
fn a_denial_keeps_the_resolvers_status_and_headers() {
    let cookie = (
        http::header::SET_COOKIE,
        HeaderValue::from_static("session=; Max-Age=0"),
    );
    let r = Refusal::of_denial(Answer::Denied {
        status: 403,
        headers: vec![cookie.clone()],
    })
    .unwrap();
    assert_eq!((r.status, r.outcome), (403, Outcome::Denied));
    assert_eq!(r.headers, [cookie]);
}

#[test]
fn proxy_errors_map_to_a_status_by_side() {
    let status = |e: Box<Error>| Refusal::of_proxy_error(&e, Outcome::Public).map(|r| r.status);
    let mut e = Error::explain(ErrorType::ReadTimedout, "slow");
    e.as_up();
    assert_eq!(status(e), Some(504));
    let mut e = Error::explain(ErrorType::ConnectionClosed, "closed");
    e.as_up();
    assert_eq!(status(e), Some(502));
    let mut e = Error::explain(ErrorType::InvalidHTTPHeader, "bad");
    e.as_down();
    assert_eq!(status(e), Some(400));
    let e = Error::explain(
        ErrorType::HTTPStatus(502),
        "no healthy backend in upstream `app`",
    );
    let r = Refusal::of_proxy_error(&e, Outcome::Public).unwrap();
    assert_eq!(
        r.body,
        RefusalBody::Text("no healthy backend in upstream `app`".into())
    );
    let mut e = Error::explain(ErrorType::InternalError, "x");
    e.as_down();
    assert_eq!(status(e), Some(400));
}
