//! Unit tests of `credentials`.

use super::*;

use crate::testutil::request as req;

#[test]
fn split_cookies_are_joined() {
    let c = Credentials::from_request(&req(&[
        ("cookie", "a=1"),
        ("cookie", "session=s"),
        ("cookie", "b=2"),
    ]))
    .unwrap();
    assert_eq!(c.cookie.unwrap(), "a=1; session=s; b=2");
}

#[test]
fn two_authorization_headers_are_refused() {
    let r = req(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
    assert_eq!(
        Credentials::from_request(&r),
        Err(CredentialsError::AmbiguousAuthorization)
    );
}

fn rules() -> KeyRules {
    let names: Vec<String> = ["session", "app_session", "app_access_token"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    KeyRules::new(b"myapp.authgearapps.com", "", &names)
}

fn key(pairs: &[(&str, &str)]) -> CacheKey {
    rules().key(&Credentials::from_request(&req(pairs)).unwrap())
}

#[test]
fn every_credential_cookie_is_in_the_key() {
    // The seed's key ($cookie_session|$http_authorization) gives these two one entry.
    assert_ne!(
        key(&[("cookie", "app_session=alice")]),
        key(&[("cookie", "app_session=bob")])
    );
    assert_ne!(
        key(&[("cookie", "app_access_token=a")]),
        key(&[("cookie", "app_access_token=b")])
    );
    assert_ne!(
        key(&[("cookie", "session=a")]),
        key(&[("cookie", "app_session=a")])
    );
    assert_ne!(
        key(&[("cookie", "session=a; session=b")]),
        key(&[("cookie", "session=a")])
    );
    assert_ne!(key(&[("authorization", "Bearer a")]), key(&[]));
    assert_ne!(
        key(&[("cookie", "session")]),
        key(&[]),
        "a bare name is an empty cookie to Go"
    );
}

#[test]
fn other_cookies_and_headers_do_not_change_the_key() {
    let base = key(&[("cookie", "session=s1")]);
    assert_eq!(
        key(&[("cookie", "_ga=GA1.2.3; session=s1; theme=dark")]),
        base
    );
    assert_eq!(
        key(&[("cookie", " session=s1 "), ("user-agent", "x")]),
        base
    );
    assert_eq!(key(&[("cookie", "a=1"), ("cookie", "session=s1")]), base);
    assert!(base.has_credentials);
    assert!(!key(&[("cookie", "_ga=1")]).has_credentials);
    assert_eq!(key(&[("cookie", "_ga=1")]), key(&[]));
}

#[test]
fn resolver_host_and_prefix_are_in_the_key() {
    let creds =
        Credentials::from_request(&req(&[("cookie", "session=s1; pfx_session=s1")])).unwrap();
    let names = vec!["session".to_string()];
    let a = KeyRules::new(b"a.example", "", &names).key(&creds);
    let b = KeyRules::new(b"b.example", "", &names).key(&creds);
    let p = KeyRules::new(b"a.example", "pfx_", &names).key(&creds);
    assert_ne!(a, b);
    assert_ne!(a, p);
}

#[test]
fn field_boundaries_cannot_be_shifted() {
    // Same bytes overall, split differently between fields.
    assert_ne!(
        key(&[("authorization", "ab"), ("cookie", "session=c")]),
        key(&[("authorization", "a"), ("cookie", "session=bc")])
    );
}

#[test]
fn nothing_is_nothing() {
    assert_eq!(
        Credentials::from_request(&req(&[])).unwrap(),
        Credentials::default()
    );
}
