use super::*;

fn policy(credentials: bool) -> CorsPolicy {
    CorsPolicy::new(CorsSpec {
        origins: &[
            "https://App.example.com:443".into(),
            "http://localhost:5173".into(),
        ],
        methods: &["GET".into(), "POST".into(), "DELETE".into()],
        headers: &["Content-Type".into(), "x-requested-with".into()],
        expose: &[],
        credentials,
        max_age: Duration::from_secs(600),
    })
    .unwrap()
}

fn req(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

#[test]
fn origins_are_normalised_and_checked() {
    assert_eq!(
        parse_origin("HTTPS://App.Example.com:443/").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(
        parse_origin("http://localhost:80").unwrap(),
        "http://localhost"
    );
    assert_eq!(
        parse_origin("http://[::1]:8080").unwrap(),
        "http://[::1]:8080"
    );
    assert_eq!(parse_origin("http://[::1]").unwrap(), "http://[::1]");
    for bad in [
        "*",
        "null",
        "https://*.example.com",
        "app.example.com",
        "ftp://app.example.com",
        "https://app.example.com/path",
        "https://user@app.example.com",
        "https://app.example.com?x",
        "https://app.example.com:x",
        "https://app.example.com:99999",
        "https://",
        "https://:80",
        "https://app\\example.com",
    ] {
        assert!(parse_origin(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_bad_setting_names_its_field() {
    let err = |origins: &[String], methods: &[String], headers: &[String]| {
        CorsPolicy::new(CorsSpec {
            origins,
            methods,
            headers,
            expose: &[],
            credentials: true,
            max_age: Duration::ZERO,
        })
        .unwrap_err()
        .0
    };
    let ok = ["https://a.example".to_string()];
    assert_eq!(err(&[], &[], &[]), "allow_origins");
    assert_eq!(
        err(&["https://a.example".into(), "*".into()], &[], &[]),
        "allow_origins[1]"
    );
    assert_eq!(err(&ok, &["get".into()], &[]), "allow_methods[0]");
    assert_eq!(err(&ok, &["GET".into()], &["*".into()]), "allow_headers[0]");
    assert_eq!(
        err(&ok, &["GET".into()], &["a b".into()]),
        "allow_headers[0]"
    );
}

#[test]
fn an_allowed_preflight_is_answered_with_the_grant() {
    let d = policy(true).decide(
        &Method::OPTIONS,
        &req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "DELETE"),
            (
                "access-control-request-headers",
                "content-type, X-Requested-With",
            ),
        ]),
    );
    let Decision::Preflight { status, headers } = d else {
        panic!("{d:?}")
    };
    assert_eq!(status, 204);
    assert_eq!(
        get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("https://app.example.com")
    );
    assert_eq!(
        get(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        Some("true")
    );
    assert_eq!(
        get(&headers, &ACCESS_CONTROL_ALLOW_METHODS),
        Some("GET, POST, DELETE")
    );
    assert_eq!(
        get(&headers, &ACCESS_CONTROL_ALLOW_HEADERS),
        Some("content-type, x-requested-with")
    );
    assert_eq!(get(&headers, &ACCESS_CONTROL_MAX_AGE), Some("600"));
    assert!(headers
        .iter()
        .any(|(n, v)| n == VARY && v.to_str().unwrap().starts_with("Origin")));
}

#[test]
fn a_preflight_asking_for_more_than_allowed_is_refused_without_cors_headers() {
    for asked in [
        req(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ]),
        // Exact match: not a suffix, not another scheme or port, not another case.
        req(&[
            ("origin", "https://app.example.com.evil.example"),
            ("access-control-request-method", "GET"),
        ]),
        req(&[
            ("origin", "http://app.example.com"),
            ("access-control-request-method", "GET"),
        ]),
        req(&[
            ("origin", "http://localhost:5174"),
            ("access-control-request-method", "GET"),
        ]),
        req(&[("origin", "null"), ("access-control-request-method", "GET")]),
        req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ]),
        req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            (
                "access-control-request-headers",
                "content-type, authorization",
            ),
        ]),
    ] {
        let d = policy(true).decide(&Method::OPTIONS, &asked);
        let Decision::Preflight { status, headers } = d else {
            panic!("{asked:?}: {d:?}")
        };
        assert_eq!(status, 403, "{asked:?}");
        assert!(
            headers
                .iter()
                .all(|(n, _)| !n.as_str().starts_with("access-control-")),
            "{asked:?}: {headers:?}"
        );
    }
}

#[test]
fn an_options_without_the_preflight_headers_is_no_preflight() {
    let p = policy(true);
    // Two origins are no origin: the route's policy judges the request.
    let d = p.decide(
        &Method::OPTIONS,
        &req(&[
            ("origin", "https://app.example.com"),
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ]),
    );
    assert_eq!(d, Decision::Nothing);
    // No Access-Control-Request-Method: an ordinary OPTIONS, judged by the route's policy.
    let d = p.decide(
        &Method::OPTIONS,
        &req(&[("origin", "https://app.example.com")]),
    );
    assert!(matches!(d, Decision::Headers(_)), "{d:?}");
    let d = p.decide(
        &Method::OPTIONS,
        &req(&[("access-control-request-method", "GET")]),
    );
    assert_eq!(d, Decision::Nothing);
    // A GET carrying the header is not a preflight either.
    let d = p.decide(
        &Method::GET,
        &req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ]),
    );
    assert!(matches!(d, Decision::Headers(_)), "{d:?}");
}

#[test]
fn answers_to_an_allowed_origin_carry_the_grant_and_vary() {
    let d = policy(true).decide(&Method::GET, &req(&[("origin", "http://localhost:5173")]));
    let Decision::Headers(h) = d else { panic!() };
    assert_eq!(
        get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("http://localhost:5173")
    );
    assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
    assert_eq!(get(&h, &VARY), Some("Origin"));
    // Without credentials the browser is not told it may send them.
    let Decision::Headers(h) =
        policy(false).decide(&Method::GET, &req(&[("origin", "http://localhost:5173")]))
    else {
        panic!()
    };
    assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    assert_eq!(
        get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("http://localhost:5173")
    );
}

#[test]
fn answers_to_another_origin_carry_no_cors_headers() {
    let d = policy(true).decide(&Method::GET, &req(&[("origin", "https://evil.example")]));
    assert_eq!(
        d,
        Decision::Headers(vec![(VARY, HeaderValue::from_static("Origin"))])
    );
    assert_eq!(
        policy(true).decide(&Method::GET, &req(&[])),
        Decision::Nothing
    );
}
