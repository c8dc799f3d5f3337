//! Unit tests of `config`.

use super::*;

use crate::testutil::CONFIG as GOOD;

fn error(text: &str) -> ConfigError {
    match parse("t.yaml", text, None) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn good_config_parses_with_defaults() {
    let s = parse("t.yaml", GOOD, None).unwrap();
    assert_eq!(s.listen.len(), 1);
    assert_eq!(s.listen[0].addr, "127.0.0.1:8080".parse().unwrap());
    assert!(s.listen[0].tls.is_none() && s.listen[0].h2 && !s.listen[0].h2c);
    assert_eq!(s.server.pid_file, DEFAULT_PID_FILE);
    assert_eq!(s.namespace.prefix(), "x-authgear-");
}

#[test]
fn unknown_key_names_its_path() {
    let e = error(&GOOD.replace("  timeout: 2s", "  timeout: 2s\n  timout: 3s"));
    assert_eq!(e.field, "resolver.timout");
    assert!(e.reason.contains("unknown field `timout`"), "{e}");
}

#[test]
fn bad_duration_names_its_path() {
    let e = error(&GOOD.replace("timeout: 2s", "timeout: soon"));
    assert_eq!(e.field, "resolver.timeout");
}

#[test]
fn unknown_pingora_key() {
    let e = error(&format!("pingora:\n  threds: 2\n{GOOD}"));
    assert_eq!(e.field, "pingora.threds");
}

#[test]
fn undefined_upstream() {
    let e = error(&GOOD.replace("upstream: app", "upstream: api"));
    assert_eq!(e.field, "routes[0].upstream");
    assert!(e.reason.contains("`api`"), "{e}");
}

#[test]
fn bad_bind_address_is_caught_before_pingora_unwraps_it() {
    let e = error(&format!("pingora:\n  client_bind_to_ipv4: [nope]\n{GOOD}"));
    assert_eq!(e.field, "pingora.client_bind_to_ipv4[0]");
}

#[test]
fn resolver_url_checks() {
    assert_eq!(
        error(&GOOD.replace("http://127.0.0.1:3001", "ftp://127.0.0.1:3001")).field,
        "resolver.url"
    );
    let e = error(&GOOD.replace("timeout: 2s", "timeout: 2s\n  ca_file: /nonexistent"));
    assert_eq!(e.field, "resolver.ca_file");
}

#[test]
fn serde_messages_name_the_path_once_and_no_rust_types() {
    assert_eq!(
        tidy_serde_message("upstreams.app2", "upstreams.app2: invalid type: integer `3`, expected struct UpstreamFile at line 7 column 9"),
        "invalid type: integer `3`, expected a mapping at line 7 column 9"
    );
    assert_eq!(
        tidy_serde_message("", "missing field `listen`"),
        "missing field `listen`"
    );
}

#[test]
fn bad_yaml_is_reported() {
    let e = error("listen: [\n");
    assert!(e.to_string().starts_with("t.yaml: "), "{e}");
}

#[test]
fn refresh_after_defaults_below_the_ttl() {
    let refresh = |cache: &str| {
        let text = format!("{GOOD}cache:\n{cache}");
        let s = parse("t.yaml", &text, None).unwrap();
        s.cache.refresh_after
    };
    assert_eq!(refresh("  capacity: 10\n"), Duration::from_secs(60));
    assert_eq!(refresh("  ttl: 30s\n"), Duration::from_secs(15));
    assert_eq!(refresh("  ttl: 0s\n"), Duration::ZERO);
    assert_eq!(refresh("  refresh_after: 0s\n"), Duration::ZERO);
    assert_eq!(
        refresh("  ttl: 10m\n  refresh_after: 5m\n"),
        Duration::from_secs(300)
    );
}

#[test]
fn numbers_beyond_their_bounds_name_the_field() {
    for (yaml, field) in [
        (
            format!("{GOOD}cache:\n  capacity: 18446744073709551615\n"),
            "cache.capacity",
        ),
        (
            format!("pingora:\n  threads: 100000000\n{GOOD}"),
            "pingora.threads",
        ),
        (
            GOOD.replace(
                "backends: [127.0.0.1:3000]",
                "backends: [{ addr: 127.0.0.1:3000, weight: 30000000 }]",
            ),
            "upstreams.app.backends[0].weight",
        ),
        (
            format!("{GOOD}cache:\n  ttl: 100000000years\n"),
            "cache.ttl",
        ),
        (
            GOOD.replace("timeout: 2s", "timeout: 1000000h"),
            "resolver.timeout",
        ),
        (
            format!("{GOOD}client:\n  max_connections: 0\n"),
            "client.max_connections",
        ),
        (
            format!("{GOOD}client:\n  max_header_bytes: 2000000\n"),
            "client.max_header_bytes",
        ),
        (
            format!("{GOOD}client:\n  header_timeout: 10ms\n"),
            "client.header_timeout",
        ),
        (
            format!("pingora:\n  upstream_keepalive_pool_size: 100000000\n{GOOD}"),
            "pingora.upstream_keepalive_pool_size",
        ),
    ] {
        let e = error(&yaml);
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains("out of range"), "{e}");
    }
}

#[test]
fn client_limits_have_defaults_and_can_be_set() {
    let s = parse("t.yaml", GOOD, None).unwrap();
    assert_eq!(s.client, ClientLimits::default());
    let s = parse(
        "t.yaml",
        &format!("{GOOD}client:\n  max_connections: 5\n  header_timeout: 2s\n  keepalive_timeout: 0s\n  max_requests_per_connection: 0\n"),
        None,
    )
    .unwrap();
    assert_eq!(s.client.max_connections, 5);
    assert_eq!(s.client.header_timeout, Duration::from_secs(2));
    assert_eq!(s.client.keepalive_secs(), None);
    assert_eq!(s.client.max_requests, None);
}

#[test]
fn an_upstream_cannot_take_the_resolver_pool_name() {
    let e = error(
        &GOOD
            .replace("  app:\n", "  resolver:\n")
            .replace("upstream: app", "upstream: resolver"),
    );
    assert_eq!(e.field, "upstreams.resolver");
    assert!(e.reason.contains("resolver's pool"), "{e}");
}

#[test]
fn checking_builds_nothing_live() {
    // The access log's folder must exist, but checking opens no file in it.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let text = format!("{GOOD}access_log:\n  path: {}\n", log.display());
    parse("t.yaml", &text, None).unwrap();
    assert!(!log.exists(), "checking opened the access log");
    let e = error(&format!(
        "{GOOD}access_log:\n  path: /nonexistent-dir/access.log\n"
    ));
    assert_eq!(e.field, "access_log.path");
}
