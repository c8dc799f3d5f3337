//! Unit tests of `reload`.

use super::*;

use crate::testutil::CONFIG;

/// The shared configuration with Pingora settings and no access log.
fn base() -> String {
    format!(
        "pingora:\n  threads: 2\n  work_stealing: false\naccess_log:\n  enabled: false\n{CONFIG}"
    )
}

/// A reloader over `text`, with its file.
fn reloader(text: &str) -> (Reloader, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    std::fs::write(&path, text).unwrap();
    let settings = config::load(&path).unwrap();
    let fixed = Fixed::of(&settings);
    let runtime = Arc::new(ArcSwap::from_pointee(
        Runtime::build(&settings, None).unwrap(),
    ));
    (Reloader::new(path, runtime, fixed, None), dir)
}

#[test]
fn settings_read_once_at_start_are_reported_not_applied() {
    let base = base();
    let (r, dir) = reloader(&base);
    assert_eq!(r.reload().unwrap(), Vec::<String>::new(), "nothing changed");
    let changed = base
        .replace("work_stealing: false", "work_stealing: true")
        .replace("threads: 2", "threads: 4")
        .replace("127.0.0.1:8080", "127.0.0.1:8081")
        .replace("path: /\n", "path: /api\n");
    std::fs::write(dir.path().join("authgate.yaml"), changed).unwrap();
    let mut pending = r.reload().unwrap();
    pending.sort();
    assert_eq!(
        pending,
        ["listen", "pingora.threads", "pingora.work_stealing"],
        "every setting Pingora reads once is named"
    );
    // The rest was applied: the route changed.
    assert!(r
        .runtime
        .load()
        .routes
        .find("x", "/", &http::Method::GET)
        .is_none());
}

#[test]
fn client_settings_read_at_start_are_reported_the_rest_applied() {
    let base = base();
    let (r, dir) = reloader(&base);
    let changed = format!(
        "{base}client:\n  max_requests_per_connection: 5\n  keepalive_timeout: 5s\n  max_connections: 7\n"
    );
    std::fs::write(dir.path().join("authgate.yaml"), changed).unwrap();
    let mut pending = r.reload().unwrap();
    pending.sort();
    assert_eq!(
        pending,
        [
            "client.keepalive_timeout (for HTTP/2)",
            "client.max_requests_per_connection"
        ]
    );
    // Read per connection: applied.
    assert_eq!(r.runtime.load().client.max_connections, 7);
}

#[test]
fn the_fleet_is_kept_while_its_section_and_namespace_stay() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "f".repeat(40)).unwrap();
    let fleet = format!(
        "fleet:\n  redis:\n    url: redis://127.0.0.1:1/0\n  secret_file: {}\n",
        secret.display()
    );
    let base = base();
    let (r, dir) = reloader(&format!("{base}{fleet}"));
    let write = |text: String| std::fs::write(dir.path().join("authgate.yaml"), text).unwrap();
    let first = r.runtime.load().fleet.clone().expect("a fleet");

    write(format!("{base}{fleet}cache:\n  ttl: 30s\n"));
    r.reload().unwrap();
    let kept = r.runtime.load().fleet.clone().expect("a fleet");
    assert!(Arc::ptr_eq(&first, &kept), "an unrelated change keeps it");

    write(format!("{base}{fleet}  prefix: \"other:\"\n"));
    r.reload().unwrap();
    let other = r.runtime.load().fleet.clone().expect("a fleet");
    assert!(!Arc::ptr_eq(&first, &other), "a new prefix: a new fleet");
    assert_eq!(other.settings().prefix, "other:");

    write(format!("{base}{fleet}  prefix: \"other:\"\n").replace(
        "  timeout: 2s\n",
        "  timeout: 2s\n  header_prefix: x-auth-\n",
    ));
    r.reload().unwrap();
    let renamed = r.runtime.load().fleet.clone().expect("a fleet");
    assert!(
        !Arc::ptr_eq(&other, &renamed),
        "a new namespace: a new fleet"
    );

    write(base.clone());
    r.reload().unwrap();
    assert!(r.runtime.load().fleet.is_none(), "removed");
}
