//! The binary's configuration checks: every error names the file, the field and the reason,
//! and authgate exits non-zero before it listens.

mod common;

use std::process::Command;

use common::*;

struct Outcome {
    code: Option<i32>,
    stderr: String,
    stdout: String,
}

fn run(args: &[&str]) -> Outcome {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run authgate");
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

const GOOD: &str = "listen:\n  - addr: 127.0.0.1:1\nresolver:\n  url: http://127.0.0.1:2/_resolver/resolve\n  timeout: 2s\n\
upstreams:\n  app:\n    backends: [127.0.0.1:3]\nroutes:\n  - path: /\n    upstream: app\n";

/// Writes `yaml`, checks it with `-t`, and returns the outcome.
fn check(yaml: &str) -> (Outcome, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.display().to_string();
    (run(&["-t", "-c", &p]), p)
}

fn assert_error(yaml: &str, field: &str, reason: &str) {
    let (o, file) = check(yaml);
    assert_eq!(o.code, Some(2), "{yaml}\nstderr: {}", o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("configuration error"))
        .unwrap_or_else(|| panic!("no error line in {}", o.stderr));
    assert!(
        line.contains(&format!("{file}: {field}: ")),
        "want `{file}: {field}:` in {line}"
    );
    assert!(line.contains(reason), "want `{reason}` in {line}");
}

#[test]
fn good_file_checks_ok() {
    let (o, file) = check(GOOD);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains(&file) && o.stdout.contains("ok"),
        "{}",
        o.stdout
    );
}

#[test]
fn shipped_default_config_is_valid() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/authgate.yaml");
    let o = run(&["-t", "-c", conf]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn missing_file() {
    let o = run(&["-t", "-c", "/nonexistent/authgate.yaml"]);
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr
            .contains("/nonexistent/authgate.yaml: cannot read file"),
        "{}",
        o.stderr
    );
}

#[test]
fn bad_yaml() {
    let (o, file) = check("listen: [\n  - addr: 1\nresolver: {");
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr.contains(&file) && o.stderr.contains("line"),
        "{}",
        o.stderr
    );
}

#[test]
fn unknown_key() {
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
fn bad_duration() {
    assert_error(
        &GOOD.replace("timeout: 2s", "timeout: two seconds"),
        "resolver.timeout",
        "",
    );
    assert_error(
        &GOOD.replace("timeout: 2s", "timeout: 0s"),
        "resolver.timeout",
        "greater than zero",
    );
}

#[test]
fn undefined_upstream() {
    assert_error(
        &GOOD.replace("upstream: app", "upstream: api"),
        "routes[0].upstream",
        "no upstream named `api`",
    );
}

#[test]
fn other_field_errors() {
    assert_error(
        &GOOD.replace("127.0.0.1:1", "localhost"),
        "listen[0].addr",
        "not an IP:port",
    );
    assert_error(
        &GOOD.replace("http://127.0.0.1:2", "gopher://127.0.0.1:2"),
        "resolver.url",
        "http:// or https://",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3]", "[]"),
        "upstreams.app.backends",
        "at least one backend",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3]", "[no-port]"),
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
fn cache_and_admin_errors() {
    assert_error(&format!("{GOOD}cache:\n  ttl: forever\n"), "cache.ttl", "");
    assert_error(
        &format!("{GOOD}cache:\n  lock_timeout: 0s\n"),
        "cache.lock_timeout",
        "greater than zero",
    );
    assert_error(
        &format!("{GOOD}cache:\n  capacity: -1\n"),
        "cache.capacity",
        "",
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
fn route_and_upstream_errors() {
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
            "    backends: [127.0.0.1:3]\n",
            &format!("    backends: [127.0.0.1:3]\n{extra}"),
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
        &GOOD.replace("[127.0.0.1:3]", "[{addr: 127.0.0.1:3, weight: 0}]"),
        "upstreams.app.backends[0].weight",
        "at least 1",
    );
    assert_error(
        &GOOD.replace("[127.0.0.1:3]", "[127.0.0.1:3, 127.0.0.1:3]"),
        "upstreams.app.backends[1]",
        "twice",
    );
    assert_error(
        &format!("{GOOD}login:\n  url: \"not a url\"\n"),
        "login.url",
        "",
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
fn shipped_example_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let o = run(&["-t", "-c", &path.display().to_string()]);
            assert_eq!(o.code, Some(0), "{}: {}", path.display(), o.stderr);
            checked += 1;
        }
    }
    assert!(checked > 0, "no example in {dir}");
}

#[test]
fn a_bad_file_stops_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    let port = closed_port();
    std::fs::write(
        &path,
        GOOD.replace("127.0.0.1:1", &port.to_string())
            .replace("upstream: app", "upstream: nope"),
    )
    .unwrap();
    let o = run(&["-c", &path.display().to_string()]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        std::net::TcpStream::connect(port).is_err(),
        "something listens on {port}"
    );
}
