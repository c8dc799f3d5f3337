//! Unit tests of `reload`.

use super::*;

const BASE: &str = "pingora:
  threads: 2
  work_stealing: false
listen:
  - addr: 127.0.0.1:18081
resolver:
  url: http://127.0.0.1:3001/_resolver/resolve
upstreams:
  app:
    backends: [127.0.0.1:3000]
routes:
  - path: /
    upstream: app
access_log:
  enabled: false
";

/// A reloader over `text`, with its file.
fn reloader(text: &str) -> (Reloader, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    std::fs::write(&path, text).unwrap();
    let settings = config::load(&path).unwrap();
    let fixed = Fixed::of(&settings);
    let runtime = Arc::new(ArcSwap::from_pointee(settings.runtime));
    (Reloader::new(path, runtime, fixed, None), dir)
}

#[test]
fn settings_read_once_at_start_are_reported_not_applied() {
    let (r, dir) = reloader(BASE);
    assert_eq!(r.reload().unwrap(), Vec::<String>::new(), "nothing changed");
    let changed = BASE
        .replace("work_stealing: false", "work_stealing: true")
        .replace("threads: 2", "threads: 4")
        .replace("127.0.0.1:18081", "127.0.0.1:18082")
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
