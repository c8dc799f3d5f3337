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

#[test]
fn cookie_names_are_read_as_loosely_as_any_resolver_could() {
    // `Bearer undefined` is what every broken client sends: mallory's session cookie,
    // spelled in a case Go ignores, must not make her answer the one they all share.
    let undefined = key(&[("authorization", "Bearer undefined")]);
    for cookie in [
        "Session=valid-mallory",
        "SESSION=valid-mallory",
        "a=1, session=valid-mallory",
        "%73ession=valid-mallory",
        "\"session\"=valid-mallory",
        "app.session=valid-mallory",
        "__Host-session=valid-mallory",
        "\tsession=valid-mallory",
    ] {
        let k = key(&[("authorization", "Bearer undefined"), ("cookie", cookie)]);
        assert_ne!(k, undefined, "{cookie}");
        assert!(k.has_credentials, "{cookie}");
    }
    // The separator before a credential is part of the key: `,` and `;` split differently.
    assert_ne!(
        key(&[("cookie", "x=1, session=s")]),
        key(&[("cookie", "x=1; session=s")])
    );
    // Quotes make quote-aware readers see other cookies: the whole header counts then.
    assert_ne!(
        key(&[("cookie", "x=\"a; session=s\"")]),
        key(&[("cookie", "x=a; session=s\"")])
    );
}

/// Cookie readers a resolver might use: which (name, value) pairs it takes for credentials.
type Reader = fn(&str) -> Vec<(String, String)>;

fn read_with(header: &str, seps: &[char], fold: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let names = ["session", "app_session", "app_access_token"];
    header
        .split(seps)
        .filter_map(|part| {
            let part = part.trim_matches(|c| c == ' ' || c == '\t');
            let (n, v) = part.split_once('=').unwrap_or((part, ""));
            let n = fold(n);
            names.contains(&n.as_str()).then(|| (n, v.to_string()))
        })
        .collect()
}

const READERS: [Reader; 4] = [
    // Go's net/http.
    |h| read_with(h, &[';'], |n| n.to_string()),
    // nginx's $cookie_: `;` and `,`, any case.
    |h| read_with(h, &[';', ','], |n| n.to_ascii_lowercase()),
    // PHP: names URL-decoded, `.` and ` ` read as `_`.
    |h| {
        read_with(h, &[';'], |n| {
            let d: String = percent_encoding::percent_decode_str(n)
                .decode_utf8_lossy()
                .into_owned();
            d.replace(['.', ' '], "_")
        })
    },
    // A reader that takes the first of `;`-split names in any case.
    |h| read_with(h, &[';'], |n| n.trim().to_ascii_lowercase()),
];

fn cookie_header() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let name = prop_oneof![
        Just("session"),
        Just("Session"),
        Just("app_session"),
        Just("app.session"),
        Just("%73ession"),
        Just("_ga"),
    ];
    let value = prop_oneof![Just("a"), Just("b")];
    let sep = prop_oneof![Just("; "), Just(";"), Just(", "), Just(","), Just(";\t")];
    proptest::collection::vec((sep, name, value), 0..3).prop_map(|parts| {
        let mut h = String::new();
        for (i, (sep, n, v)) in parts.into_iter().enumerate() {
            if i > 0 {
                h.push_str(sep);
            }
            h.push_str(n);
            h.push('=');
            h.push_str(v);
        }
        h
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

    /// Two requests that any of the readers above reads differently never share a key.
    #[test]
    fn requests_read_differently_never_share_a_key(a in cookie_header(), b in cookie_header()) {
        let k = |h: &str| {
            if h.is_empty() { key(&[]) } else { key(&[("cookie", h)]) }
        };
        if k(&a) == k(&b) {
            for (i, read) in READERS.iter().enumerate() {
                proptest::prop_assert_eq!(read(&a), read(&b), "reader {} on {:?} / {:?}", i, a, b);
            }
        }
    }
}

#[test]
fn the_key_layout_is_the_one_fleet_instances_share() {
    // Instances of a fleet (possibly of different versions during an upgrade) find each
    // other's entries by key: the hashed bytes are spelled out here, byte for byte.
    let len = |b: &[u8]| (b.len() as u32).to_le_bytes();
    let host = b"myapp.authgearapps.com";
    let token = b"Bearer t0k3n";
    let mut h = Sha256::new();
    h.update(b"authgate-cache-key-v2\0");
    h.update(len(host));
    h.update(host);
    h.update([1]);
    h.update(len(token));
    h.update(token);
    // `session`, after a `;` (0), covered up to the next `;`, spaces trimmed.
    h.update([0]);
    h.update(len(b"session=s1"));
    h.update(b"session=s1");
    let expected: [u8; 32] = h.finalize().into();
    let k = key(&[
        ("authorization", "Bearer t0k3n"),
        ("cookie", "a=1; session=s1; b=2"),
    ]);
    assert_eq!(k.digest, expected);
    assert!(k.has_credentials);
}
