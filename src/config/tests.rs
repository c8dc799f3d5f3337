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

/// The configuration matrix, in process: each broken file names its field and says why.
fn assert_error(yaml: &str, field: &str, reason: &str) {
    assert!(!reason.is_empty(), "every case names its reason");
    let e = match parse("t.yaml", yaml, None) {
        Ok(_) => panic!("expected `{field}: {reason}` for\n{yaml}"),
        Err(e) => e,
    };
    assert_eq!(e.field, field, "{e}");
    assert!(e.reason.contains(reason), "want `{reason}` in {e}");
    assert_eq!(e.file, "t.yaml");
}

#[test]
fn matrix_unknown_keys() {
    assert_error(
        &GOOD.replace("  timeout: 2s\n", "  timeout: 2s\n  retries: 3\n"),
        "resolver.retries",
        "unknown field `retries`",
    );
    assert_error(
        &format!("pingora:\n  thread: 4\n{GOOD}"),
        "pingora.thread",
        "unknown Pingora server setting",
    );
    assert_error(
        &format!("{GOOD}caches: {{}}\n"),
        "caches",
        "unknown field `caches`",
    );
}

#[test]
fn matrix_bad_durations() {
    assert_error(
        &GOOD.replace("timeout: 2s", "timeout: two seconds"),
        "resolver.timeout",
        "expected a duration",
    );
    assert_error(
        &GOOD.replace("timeout: 2s", "timeout: 0s"),
        "resolver.timeout",
        "greater than zero",
    );
}

#[test]
fn matrix_field_errors() {
    assert_error(
        &GOOD.replace("127.0.0.1:8080", "localhost"),
        "listen[0].addr",
        "not an IP:port",
    );
    assert_error(
        &GOOD.replace("http://127.0.0.1:3001", "gopher://127.0.0.1:2"),
        "resolver.url",
        "http:// or https://",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3000]", "[]"),
        "upstreams.app.backends",
        "at least one backend",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3000]", "[no-port]"),
        "upstreams.app.backends[0]",
        "cannot resolve",
    );
    assert_error(
        &format!("{GOOD}trusted_proxies: [10.0.0.0/99]\n"),
        "trusted_proxies[0]",
        "neither an IP",
    );
    assert_error(
        &GOOD.replace(
            "  timeout: 2s\n",
            "  timeout: 2s\n  header_prefix: \"bad prefix\"\n",
        ),
        "resolver.header_prefix",
        "not a valid",
    );
}

#[test]
fn matrix_cache_and_admin_errors() {
    assert_error(
        &format!("{GOOD}cache:\n  ttl: forever\n"),
        "cache.ttl",
        "expected a duration",
    );
    assert_error(
        &format!("{GOOD}cache:\n  lock_timeout: 0s\n"),
        "cache.lock_timeout",
        "greater than zero",
    );
    assert_error(
        &format!("{GOOD}cache:\n  capacity: -1\n"),
        "cache.capacity",
        "integer `-1`, expected usize",
    );
    assert_error(
        &GOOD.replace(
            "  timeout: 2s\n",
            "  timeout: 2s\n  credential_cookies: []\n",
        ),
        "resolver.credential_cookies",
        "at least one",
    );
    assert_error(
        &GOOD.replace(
            "  timeout: 2s\n",
            "  timeout: 2s\n  credential_cookies: [\"a b\"]\n",
        ),
        "resolver.credential_cookies[0]",
        "not a valid cookie name",
    );
    assert_error(
        &format!("{GOOD}admin:\n  listen: 127.0.0.1:9\n"),
        "admin.token_file",
        "needs a token",
    );
    assert_error(
        &format!("{GOOD}admin:\n  listen: 127.0.0.1:9\n  token_env: AUTHGATE_TEST_SURELY_UNSET\n"),
        "admin.token_env",
        "is not set",
    );
    assert_error(
        &format!("{GOOD}admin:\n  listen: 127.0.0.1:9\n  token: secret\n"),
        "admin.token",
        "unknown field",
    );
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    assert_error(
        &format!(
            "{GOOD}admin:\n  listen: 127.0.0.1:9\n  token_file: {}\n",
            short.display()
        ),
        "admin.token_file",
        "at least 16",
    );
    assert_error(
        &format!("{GOOD}cache:\n  ttl: 1m\n  refresh_after: 1m\n"),
        "cache.refresh_after",
        "not below cache.ttl",
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n").unwrap();
    let admin = |webhook: &str| {
        format!(
            "{GOOD}admin:\n  listen: 127.0.0.1:9\n  token_file: {}\n  webhook:\n{webhook}",
            token.display()
        )
    };
    assert_error(
        &admin("    max_age: 5m\n"),
        "admin.webhook.secret_file",
        "needs Authgear's secret",
    );
    assert_error(
        &admin("    secret_env: AUTHGATE_TEST_SURELY_UNSET\n"),
        "admin.webhook.secret_env",
        "is not set",
    );
    assert_error(
        &admin(&format!("    secret_file: {}\n", empty.display())),
        "admin.webhook.secret_file",
        "empty",
    );
    assert_error(
        &admin(&format!(
            "    secret_file: {}\n    secret_env: HOME\n",
            token.display()
        )),
        "admin.webhook.secret_file",
        "not both",
    );
    assert_error(
        &admin(&format!(
            "    secret_file: {}\n    max_age: 0s\n",
            token.display()
        )),
        "admin.webhook.max_age",
        "greater than zero",
    );
    assert_error(
        &admin(&format!(
            "    secret_file: {}\n    secret: x\n",
            token.display()
        )),
        "admin.webhook.secret",
        "unknown field",
    );
}

#[test]
fn matrix_route_and_upstream_errors() {
    let route = |extra: &str| {
        GOOD.replace(
            "    upstream: app\n",
            &format!("    upstream: app\n{extra}"),
        )
    };
    assert_error(
        &route("    host: \"a.*.com\"\n"),
        "routes[0].host",
        "wildcard",
    );
    assert_error(&route("    roles: [admin]\n"), "routes[0].roles", "require");
    assert_error(
        &route("    methods: [\"GE T\"]\n"),
        "routes[0].methods",
        "not an HTTP method",
    );
    assert_error(
        &route("    auth: maybe\n"),
        "routes[0].auth",
        "unknown variant",
    );
    assert_error(
        &GOOD.replace("path: /\n", "path: /a%2Fb\n"),
        "routes[0].path",
        "encoded slash",
    );
    let up = |extra: &str| {
        GOOD.replace(
            "    backends: [127.0.0.1:3000]\n",
            &format!("    backends: [127.0.0.1:3000]\n{extra}"),
        )
    };
    assert_error(
        &up("    lb: consistent\n"),
        "upstreams.app.hash_key",
        "needs a hash_key",
    );
    assert_error(
        &up("    hash_key: client_ip\n"),
        "upstreams.app.hash_key",
        "only applies",
    );
    assert_error(
        &up("    lb: consistent\n    hash_key: ip\n"),
        "upstreams.app.hash_key",
        "expected client_ip",
    );
    assert_error(
        &up("    tls:\n      sni: \"\"\n"),
        "upstreams.app.tls.sni",
        "server name",
    );
    assert_error(
        &up("    tls:\n      sni: x\n      ca_file: /nonexistent.pem\n"),
        "upstreams.app.tls.ca_file",
        "cannot read",
    );
    assert_error(
        &up("    health_check:\n      path: nope\n"),
        "upstreams.app.health_check.path",
        "not a request path",
    );
    assert_error(
        &up("    health_check:\n      interval: 0s\n"),
        "upstreams.app.health_check.interval",
        "greater than zero",
    );
    assert_error(
        &up("    read_timeout: 0s\n"),
        "upstreams.app.read_timeout",
        "greater than zero",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3000]", "[{addr: 127.0.0.1:3000, weight: 0}]"),
        "upstreams.app.backends[0].weight",
        "at least 1",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3000]", "[127.0.0.1:3000, 127.0.0.1:3000]"),
        "upstreams.app.backends[1]",
        "twice",
    );
    assert_error(
        &format!("{GOOD}login:\n  url: \"not a url\"\n"),
        "login.url",
        "is not a URL",
    );
    assert_error(
        &GOOD.replace(
            "  timeout: 2s\n",
            "  timeout: 2s\n  backends: [127.0.0.1:5, 127.0.0.1:5]\n",
        ),
        "resolver.backends[1]",
        "twice",
    );
}

#[test]
fn fleet_section() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", "s".repeat(32))).unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "s".repeat(31)).unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["redis.test".into()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let fleet = |redis: &str, rest: &str| {
        format!(
            "{GOOD}fleet:\n  redis:\n{redis}  secret_file: {}\n{rest}",
            secret.display()
        )
    };
    let url = "    url: redis://127.0.0.1:6379/0\n";
    let s = parse("t.yaml", &fleet(url, ""), None).unwrap();
    let f = s.fleet.expect("fleet settings");
    assert_eq!(f.secret, "s".repeat(32).into_bytes(), "trimmed");
    assert_eq!(
        (f.prefix.as_str(), f.timeout, f.shared_cache),
        ("authgate:", Duration::from_millis(20), true)
    );
    assert!(parse("t.yaml", GOOD, None).unwrap().fleet.is_none());
    assert!(
        !format!("{f:?}").contains("ssss"),
        "the secret is never printed"
    );

    assert_error(
        &fleet("    url: redis://:hunter2@127.0.0.1:6379/0\n", ""),
        "fleet.redis.url",
        "password_file or password_env",
    );
    assert_error(
        &fleet("    url: http://127.0.0.1:6379/\n", ""),
        "fleet.redis.url",
        "not a redis:// or rediss:// URL",
    );
    assert_error(
        &fleet(&format!("{url}    ca_file: {}\n", ca.display()), ""),
        "fleet.redis.ca_file",
        "rediss://",
    );
    assert!(parse(
        "t.yaml",
        &fleet(
            &format!(
                "    url: rediss://127.0.0.1:6380/0\n    ca_file: {}\n",
                ca.display()
            ),
            ""
        ),
        None
    )
    .is_ok());
    assert_error(
        &fleet(
            &format!("{url}    password_env: AUTHGATE_TEST_SURELY_UNSET\n"),
            "",
        ),
        "fleet.redis.password_env",
        "is not set",
    );
    assert_error(
        &format!("{GOOD}fleet:\n  redis:\n{url}"),
        "fleet.secret_file",
        "needs a shared secret",
    );
    assert_error(
        &format!(
            "{GOOD}fleet:\n  redis:\n{url}  secret_file: {}\n",
            short.display()
        ),
        "fleet.secret_file",
        "at least 32 bytes",
    );
    assert_error(
        &fleet(url, "  timeout: 0s\n"),
        "fleet.timeout",
        "greater than zero",
    );
    assert_error(
        &fleet(url, "  timeout: 1m\n"),
        "fleet.timeout",
        "out of range",
    );
    assert_error(&fleet(url, "  prefix: \"a*\"\n"), "fleet.prefix", "glob");
    assert_error(&fleet(url, "  prefix: \"a b\"\n"), "fleet.prefix", "spaces");
    assert_error(&fleet(url, "  shard: 1\n"), "fleet.shard", "unknown field");
}

#[test]
fn matrix_response_cache() {
    let route = "  - path: /\n    upstream: app\n";
    let cached = |cache: &str| GOOD.replace(route, &format!("{route}    cache:\n{cache}"));
    let s = parse("t.yaml", &cached("      ttl: 30s\n"), None).unwrap();
    let c = s.routes[0].cache.expect("cache settings");
    assert_eq!(c.ttl, Duration::from_secs(30));
    assert_eq!(c.max_ttl, Duration::from_secs(86_400));
    assert_eq!(s.response_cache.max_bytes, 64 << 20);
    assert!(parse("t.yaml", GOOD, None).unwrap().routes[0]
        .cache
        .is_none());
    assert_error(
        &cached("      ttl: 2h\n      max_ttl: 1h\n"),
        "routes[0].cache.ttl",
        "longer than cache.max_ttl",
    );
    assert_error(
        &cached("      max_ttl: 0s\n"),
        "routes[0].cache.max_ttl",
        "greater than zero",
    );
    assert_error(
        &cached("      tll: 1s\n"),
        "routes[0].cache.tll",
        "unknown field `tll`",
    );
    assert_error(
        &format!("{GOOD}response_cache:\n  max_bytes: 1024\n"),
        "response_cache.max_bytes",
        "out of range",
    );
    assert_error(
        &format!("{GOOD}response_cache:\n  max_bytes: 65536\n  max_object_bytes: 1048576\n"),
        "response_cache.max_object_bytes",
        "larger than response_cache.max_bytes",
    );
    assert_error(
        &format!("{GOOD}response_cache:\n  lock_timeout: 0s\n"),
        "response_cache.lock_timeout",
        "greater than zero",
    );
}

#[test]
fn every_file_the_configuration_reads_is_named_once_and_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let self_signed = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
    let (cert, key) = (self_signed.cert.pem(), self_signed.key_pair.serialize_pem());
    for (name, text) in [
        ("tls.crt", cert.as_str()),
        ("tls.key", key.as_str()),
        ("ca.pem", cert.as_str()),
        ("token", "a-token-of-sixteen-or-more"),
        ("hook", "webhook-secret"),
        ("fleet", &"f".repeat(40)),
        ("redis-password", "pw"),
    ] {
        write(name, text);
    }
    let abs = dir.path().join("ca.pem");
    let text = GOOD
        .replace(
            "  - addr: 127.0.0.1:8080\n",
            "  - addr: 127.0.0.1:8080\n    tls: {cert: tls.crt, key: tls.key}\n  - addr: 127.0.0.1:8081\n    tls: {cert: tls.crt, key: tls.key}\n",
        )
        .replace("http://127.0.0.1:3001", "https://127.0.0.1:3001")
        .replace("  timeout: 2s\n", "  timeout: 2s\n  ca_file: ca.pem\n")
        .replace(
            "    backends: [127.0.0.1:3000]\n",
            &format!("    backends: [127.0.0.1:3000]\n    tls: {{ca_file: {}}}\n", abs.display()),
        )
        + "admin:\n  listen: 127.0.0.1:9000\n  token_file: token\n  webhook:\n    secret_file: hook\n"
        + "fleet:\n  redis:\n    url: rediss://127.0.0.1:6380/0\n    password_file: redis-password\n    ca_file: ca.pem\n  secret_file: fleet\n"
        + "access_log:\n  path: access.log\n";
    let s = parse("t.yaml", &text, Some(dir.path())).unwrap();
    let names: Vec<_> = s
        .named_files
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["tls.crt", "tls.key", "ca.pem", "token", "hook", "fleet", "redis-password"],
        "each once, relative ones anchored at the file's folder, the access log (written) not among them"
    );
}

#[test]
fn a_listener_pair_that_is_missing_or_does_not_fit_names_the_listener_and_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let pem = || {
        let k = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
        (k.cert.pem(), k.key_pair.serialize_pem())
    };
    let ((cert, _), (_, other_key)) = (pem(), pem());
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    let text = GOOD.replace(
        "  - addr: 127.0.0.1:8080\n",
        "  - addr: 127.0.0.1:8080\n    tls: {cert: tls.crt, key: tls.key}\n",
    );
    let e = parse("t.yaml", &text, Some(dir.path())).expect_err("no key");
    assert_eq!(e.field, "listen[0].tls");
    assert!(
        e.reason
            .starts_with("listener 127.0.0.1:8080: cannot read key `")
            && e.reason.contains("tls.key"),
        "{e}"
    );
    std::fs::write(dir.path().join("tls.key"), other_key).unwrap();
    let e = parse("t.yaml", &text, Some(dir.path())).expect_err("a key of another");
    assert!(
        e.reason.contains("tls.crt")
            && e.reason.contains("tls.key")
            && e.reason
                .ends_with("the private key does not belong to the certificate"),
        "{e}"
    );
}

#[test]
fn cors_errors_name_the_field_under_the_route() {
    let route = |cors: &str| {
        GOOD.replace(
            "    upstream: app\n",
            &format!("    upstream: app\n    cors:\n{cors}"),
        )
    };
    assert_error(
        &route("      allow_origins: [\"https://app.example.com\", \"*\"]\n"),
        "routes[0].cors.allow_origins[1]",
        "not an origin",
    );
    assert_error(
        &route("      allow_origins: [\"https://app.example.com/path\"]\n"),
        "routes[0].cors.allow_origins[0]",
        "path",
    );
    assert_error(
        &route("      allow_origins: []\n"),
        "routes[0].cors.allow_origins",
        "at least one",
    );
    assert_error(
        &route("      allow_origins: [\"https://a.example\"]\n      allow_methods: [get]\n"),
        "routes[0].cors.allow_methods[0]",
        "upper case",
    );
    assert_error(
        &route("      allow_origins: [\"https://a.example\"]\n      max_age: 2d\n"),
        "routes[0].cors.max_age",
        "1d",
    );
    assert_error(
        &route("      allow_origins: [\"https://a.example\"]\n      allow_origin: x\n"),
        "routes[0].cors.allow_origin",
        "unknown field",
    );
    let good = route(
        "      allow_origins: [\"https://App.example.com:443\"]\n      allow_credentials: true\n",
    );
    assert!(parse("t.yaml", &good, None).is_ok());
}

const JWT: &str = "jwt:\n  jwks_url: https://127.0.0.1:8443/oauth2/jwks\n  issuer: https://project.authgear.test\n  audience: https://project.authgear.test\n";

fn jwt_with(keys: &str) -> String {
    format!("{GOOD}{JWT}{keys}")
}

#[test]
fn jwt_is_off_when_absent_and_has_documented_defaults() {
    let s = parse("t.yaml", GOOD, None).unwrap();
    assert!(s.jwt.is_none());
    let j = parse("t.yaml", &jwt_with(""), None).unwrap().jwt.unwrap();
    assert_eq!(j.jwks.path, "/oauth2/jwks");
    assert!(j.jwks.tls);
    assert_eq!(j.jwks.sni, "127.0.0.1");
    assert_eq!(
        j.audience,
        vec!["https://project.authgear.test".to_string()]
    );
    assert_eq!(j.leeway, Duration::from_secs(30));
    assert_eq!(j.refresh, Duration::from_secs(300));
    assert_eq!(j.unknown_kid_cooldown, Duration::from_secs(30));
    assert_eq!(j.max_token_bytes, 8192);
    let listed =
        jwt_with("  audience: [a, b]\n").replace("  audience: https://project.authgear.test\n", "");
    let j = parse("t.yaml", &listed, None).unwrap().jwt.unwrap();
    assert_eq!(j.audience, vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn jwt_errors_name_the_field() {
    let cases = [
        (
            jwt_with("").replace("https://127.0.0.1:8443/oauth2/jwks", "ftp://x/jwks"),
            "jwt.jwks_url",
            "must start with http:// or https://",
        ),
        (
            jwt_with("").replace("https://127.0.0.1:8443/", "https://u:p@h:1/"),
            "jwt.jwks_url",
            "user info",
        ),
        (
            jwt_with("").replace(
                "  issuer: https://project.authgear.test\n",
                "  issuer: \"\"\n",
            ),
            "jwt.issuer",
            "must not be empty",
        ),
        (
            jwt_with("").replace(
                "  audience: https://project.authgear.test\n",
                "  audience: []\n",
            ),
            "jwt.audience",
            "at least one",
        ),
        (
            jwt_with("").replace(
                "  audience: https://project.authgear.test\n",
                "  audience: [a, \"\"]\n",
            ),
            "jwt.audience[1]",
            "must not be empty",
        ),
        (jwt_with("  leeway: 1h\n"), "jwt.leeway", "out of range"),
        (
            jwt_with("  refresh_interval: 1s\n"),
            "jwt.refresh_interval",
            "out of range",
        ),
        (
            jwt_with("  unknown_kid_cooldown: 0s\n"),
            "jwt.unknown_kid_cooldown",
            "greater than zero",
        ),
        (
            jwt_with("  max_token_bytes: 100000000\n"),
            "jwt.max_token_bytes",
            "out of range",
        ),
        (jwt_with("  jku: https://x/\n"), "jwt.jku", "unknown field"),
        (
            jwt_with("  ca_file: /nonexistent/ca.pem\n"),
            "jwt.ca_file",
            "cannot read",
        ),
        (
            jwt_with("  ca_file: /nonexistent/ca.pem\n")
                .replace("https://127.0.0.1:8443", "http://127.0.0.1:1"),
            "jwt.ca_file",
            "only applies to an https://",
        ),
    ];
    for (yaml, field, reason) in cases {
        assert_error(&yaml, field, reason);
    }
}
