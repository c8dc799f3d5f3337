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
