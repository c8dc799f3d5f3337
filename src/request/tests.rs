//! Unit tests of `request`, with property tests of the parsers a client controls.

use super::*;

use proptest::prelude::*;

fn req(method: &str, target: &[u8], version: Version, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build(method, target, None).expect("request");
    r.set_version(version);
    for (n, v) in headers {
        r.append_header(n.to_string(), *v).expect("header");
    }
    r
}

fn h11(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    req(method, target.as_bytes(), Version::HTTP_11, headers)
}

fn settled(
    r: &RequestHeader,
) -> Result<(String, String, Option<String>, Option<String>), RequestError> {
    settle(r).map(|c| {
        (
            c.host.into_owned(),
            c.path.into_owned(),
            c.rewrite,
            c.set_host
                .map(|h| h.to_str().unwrap_or_default().to_string()),
        )
    })
}

#[test]
fn absolute_form_takes_its_host_from_the_target() {
    let r = req("GET", b"http://Secure.Example/x", Version::HTTP_10, &[]);
    assert_eq!(
        settled(&r),
        Ok((
            "secure.example".into(),
            "/x".into(),
            Some("/x".into()),
            Some("secure.example".into())
        ))
    );
    let r = h11(
        "GET",
        "https://secure.example:8443?q=1",
        &[("host", "secure.example:8443")],
    );
    let c = settle(&r).unwrap();
    assert_eq!((c.host.as_ref(), c.path.as_ref()), ("secure.example", "/"));
    assert_eq!(c.rewrite.as_deref(), Some("/?q=1"));
    assert_eq!(c.set_host, None, "the client's Host is already canonical");
}

#[test]
fn http11_without_host_is_refused() {
    assert_eq!(
        settled(&h11("GET", "/", &[])),
        Err(RequestError::MissingHost)
    );
    assert_eq!(
        settled(&h11("GET", "http://secure.example/x", &[])),
        Err(RequestError::MissingHost),
        "absolute-form names a host, but HTTP/1.1 requires Host all the same"
    );
    // HTTP/1.0 may omit Host: only host-less routes can match.
    let r = req("GET", b"/", Version::HTTP_10, &[]);
    assert_eq!(settled(&r), Ok((String::new(), "/".into(), None, None)));
}

#[test]
fn targets_that_are_not_origin_or_absolute_form_are_refused() {
    for t in [
        "private",
        "x:/private",
        "a/../private",
        "ftp://secure.example/x",
        "http:/secure.example/x",
        "http:///x",
        "*",
    ] {
        let r = h11("GET", t, &[("host", "a")]);
        assert_eq!(settled(&r).err(), Some(RequestError::Target), "{t}");
    }
    let r = h11("GET", "//private", &[("host", "a")]);
    assert_eq!(
        settle(&r).map(|c| c.path.into_owned()),
        Ok("/private".into())
    );
    let r = h11("OPTIONS", "*", &[("host", "a")]);
    let c = settle(&r).unwrap();
    assert_eq!((c.path.as_ref(), c.route_path()), ("*", "/"));
    // Pingora drops a fragment from the target it keeps and forwards; nothing routes on it.
    let r = h11("GET", "/a#frag", &[("host", "a")]);
    assert_eq!(r.raw_path(), b"/a");
    assert_eq!(settle(&r).map(|c| c.path.into_owned()), Ok("/a".into()));
}

#[test]
fn methods_must_be_upper_case() {
    for m in ["delete", "Delete", "gEt", "DELETE\u{0}"] {
        if let Ok(method) = Method::from_bytes(m.as_bytes()) {
            assert!(!canonical_method(&method), "{m}");
        }
    }
    for m in ["GET", "DELETE", "M-SEARCH", "PURGE"] {
        assert!(
            canonical_method(&Method::from_bytes(m.as_bytes()).unwrap()),
            "{m}"
        );
    }
    assert_eq!(
        settled(&h11("delete", "/items", &[("host", "a")])),
        Err(RequestError::Method)
    );
}

#[test]
fn hosts_are_canonical() {
    let host = |h: &str| settled(&h11("GET", "/", &[("host", h)]));
    assert_eq!(
        host("API.Example.com:8443").map(|c| (c.0, c.3)),
        Ok((
            "api.example.com".into(),
            Some("api.example.com:8443".into())
        ))
    );
    assert_eq!(
        host("example.com.").map(|c| (c.0, c.3)),
        Ok(("example.com".into(), Some("example.com".into())))
    );
    assert_eq!(host("[::1]:8080").map(|c| c.0), Ok("[::1]".into()));
    assert_eq!(host("a.example").map(|c| c.3), Ok(None));
    for bad in [
        "a b",
        "a%2eexample",
        "user@a.example",
        "a..example",
        ".a.example",
        "a.example:99999",
        "a.example:x",
        "[zz]",
        "a.example:80:80",
        "a,b",
    ] {
        assert_eq!(host(bad).err(), Some(RequestError::Host), "{bad}");
    }
}

#[test]
fn method_overrides_are_read_as_frameworks_read_them() {
    let r = h11(
        "POST",
        "/items?x=1&_method=delete",
        &[("host", "a"), ("x-http-method-override", " put ")],
    );
    let got: Vec<_> = method_overrides(&r, r.uri.query()).collect();
    assert_eq!(got, vec![Ok(Method::PUT), Ok(Method::DELETE)]);
    let r = h11("POST", "/items?%5Fmethod=DEL%45TE", &[("host", "a")]);
    let got: Vec<_> = method_overrides(&r, r.uri.query()).collect();
    assert_eq!(got, vec![Ok(Method::DELETE)]);
    let r = h11("POST", "/items", &[("host", "a")]);
    assert_eq!(method_overrides(&r, None).count(), 0);
}

/// Bytes a client could put in a path, biased towards the ones that matter to normalisation.
fn path_bytes() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%25".to_string()),
        Just(";".to_string()),
        Just("%3b".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("%".to_string()),
        "[a-zA-Z0-9_~-]{1,4}",
        "[ -~]",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A normalised path has no dot segments, no empty segments, no encoded separators, and
    /// is its own normalisation (so routing on it equals routing on its re-normalisation).
    #[test]
    fn normalised_paths_are_fixed_points(p in path_bytes()) {
        if let Ok(n) = normalize_path(&p) {
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.contains("//"), "{}", n);
            for seg in n.split('/').skip(1) {
                let name = seg.split(';').next().unwrap_or(seg);
                prop_assert!(name != "." && name != "..", "{}", n);
            }
            let lower = n.to_ascii_lowercase();
            prop_assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e"), "{}", n);
            prop_assert!(!n.contains('\\'));
            let again = normalize_path(&n).map(|c| c.into_owned());
            prop_assert_eq!(again.as_deref(), Ok(n.as_ref()));
        }
    }

    /// Whatever the target, the request either is refused or settles on a normalised path
    /// that the backend receives as it is (the rewrite, or the untouched origin-form target).
    #[test]
    fn settled_targets_are_what_the_backend_gets(p in path_bytes(), q in proptest::option::of("[a-z=&_%0-9]{0,8}"), absolute in any::<bool>()) {
        let mut target = if absolute { format!("http://a.example{p}") } else { p.clone() };
        if let Some(q) = &q {
            target.push('?');
            target.push_str(q);
        }
        let Ok(r) = RequestHeader::build("GET", target.as_bytes(), None) else { return Ok(()) };
        let mut r = r;
        r.insert_header("host", "a.example").unwrap();
        if let Ok(c) = settle(&r) {
            let sent = c.rewrite.clone().unwrap_or_else(|| String::from_utf8_lossy(r.raw_path()).into_owned());
            let sent_path = sent.split('?').next().unwrap_or_default();
            prop_assert_eq!(sent_path, c.path.as_ref());
            prop_assert_eq!(normalize_path(sent_path).map(|c| c.into_owned()), Ok(c.path.to_string()));
            prop_assert_eq!(c.host.as_ref(), "a.example");
        }
    }

    /// A host is canonical: lower case, no trailing dot, and parsing it again changes nothing.
    #[test]
    fn hosts_are_fixed_points(h in "[a-zA-Z0-9.\\-_%@:\\[\\] ]{0,20}") {
        if let Some((host, port)) = parse_authority(h.as_bytes()) {
            prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase()));
            prop_assert!(!host.ends_with('.'));
            prop_assert!(!host.contains('%') && !host.contains('@') && !host.contains(' '));
            let again = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            let (h2, p2) = parse_authority(again.as_bytes()).expect("canonical host parses");
            prop_assert_eq!(h2, host);
            prop_assert_eq!(p2, port);
        }
    }
}

#[test]
fn normalisation_defeats_traversal_tricks() {
    let n = |p: &str| normalize_path(p).map(|c| c.into_owned());
    assert_eq!(n("/public/../private").unwrap(), "/private");
    assert_eq!(n("/public/%2e%2e/private").unwrap(), "/private");
    assert_eq!(n("/public/%2E%2E/private").unwrap(), "/private");
    assert_eq!(n("/public/.%2e/private").unwrap(), "/private");
    assert_eq!(n("//private").unwrap(), "/private");
    assert_eq!(n("/public//..//private/").unwrap(), "/private/");
    assert_eq!(n("/./private/./x").unwrap(), "/private/x");
    assert_eq!(n("/../../private").unwrap(), "/private");
    assert_eq!(n("/public/..;x/private").unwrap(), "/private");
    assert_eq!(n("/%70rivate").unwrap(), "/private");
    assert_eq!(n("/a%20b/").unwrap(), "/a%20b/");
    assert_eq!(n("/").unwrap(), "/");
    assert_eq!(n("/..").unwrap(), "/");
    assert_eq!(
        n("/public%2F..%2Fprivate"),
        Err(PathError::EncodedSeparator)
    );
    assert_eq!(
        n("/public%5c..%5cprivate"),
        Err(PathError::EncodedSeparator)
    );
    assert_eq!(n("/public\\..\\private"), Err(PathError::Backslash));
    assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(n("/a%2"), Err(PathError::BadEscape));
    assert_eq!(n("/a%00b"), Err(PathError::Control));
}

#[test]
fn the_fast_path_agrees_with_the_full_normalisation() {
    for p in [
        "/",
        "/a",
        "/a/",
        "/a/b;c=d/e",
        "/api/v1/orders",
        "//a",
        "/a//b",
        "/a/./b",
        "/a/..",
        "/..;x/a",
        "/a%20b",
        "/a b",
        "/~user/x.y",
        "/a/b/",
        "/.hidden",
        "/a..b",
        "/.../x",
    ] {
        let fast = normalize_path(p);
        let slow = normalize_slow(p);
        assert_eq!(fast.as_deref().ok(), slow.as_deref().ok(), "{p}");
        if is_normal(p.as_bytes()) {
            assert!(matches!(fast, Ok(Cow::Borrowed(_))), "{p}");
        }
    }
    assert!(is_normal(b"/api/v1/orders"));
    assert!(!is_normal(b"/a//b") && !is_normal(b"/a/./b") && !is_normal(b"/a%2e"));
}

/// `parse_authority` as it was written before it went byte by byte: the reference.
fn parse_authority_reference(raw: &[u8]) -> Option<(String, Option<String>)> {
    let raw = std::str::from_utf8(raw).ok()?;
    if raw.is_empty() || raw.starts_with('[') {
        return parse_authority(raw.as_bytes()).map(|(h, p)| (h.into_owned(), p.map(String::from)));
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (raw, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || host.split('.').any(str::is_empty)
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return None;
    }
    let port = match port {
        Some("") | None => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            if p.parse::<u32>().ok()? > 65535 {
                return None;
            }
            Some(p.to_string())
        }
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

#[test]
fn authorities_parse_as_the_reference_does() {
    // Every string of up to 5 characters over an alphabet with every class that matters.
    let alphabet = ["a", "Z", "7", ".", ":", "-", "_", "%", "@", " ", "\u{e9}"];
    let mut cases = vec![String::new()];
    for _ in 0..5 {
        let last: Vec<String> = cases
            .iter()
            .filter(|c| c.chars().count() == cases.last().map_or(0, |l| l.chars().count()))
            .cloned()
            .collect();
        for c in last {
            for a in alphabet {
                cases.push(format!("{c}{a}"));
            }
        }
    }
    assert!(cases.len() > 170_000);
    for c in cases.iter().chain(&[
        "a.b:80".to_string(),
        "x..y".to_string(),
        "h.:99999".to_string(),
    ]) {
        let got = parse_authority(c.as_bytes()).map(|(h, p)| (h.into_owned(), p.map(String::from)));
        assert_eq!(got, parse_authority_reference(c.as_bytes()), "{c:?}");
    }
}
