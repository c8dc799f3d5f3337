//! Unit tests of `reload`.

use super::*;

use std::path::Path;

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
    (reloader_in(dir.path(), text, CertStore::default()), dir)
}

/// A reloader over `text`, written to `authgate.yaml` in `dir`, serving `certs`.
fn reloader_in(dir: &Path, text: &str, certs: CertStore) -> Reloader {
    let path = dir.join("authgate.yaml");
    std::fs::write(&path, text).unwrap();
    let settings = config::load(&path).unwrap();
    let runtime = Arc::new(ArcSwap::from_pointee(
        Runtime::build(&settings, None).unwrap(),
    ));
    Reloader::new(path, &settings, runtime, Arc::new(certs))
}

/// Whether the running configuration routes `GET /`.
fn routes_root(r: &Reloader) -> bool {
    r.runtime
        .load()
        .routes
        .find("x", "/", &http::Method::GET)
        .is_some()
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
    assert!(!routes_root(&r));
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

#[test]
fn a_pair_that_cannot_be_served_fails_the_whole_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let pair = || {
        let k = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        (k.cert.pem(), k.key_pair.serialize_pem())
    };
    let ((a_cert, a_key), (b_cert, b_key)) = (pair(), pair());
    std::fs::write(path("tls.crt"), &a_cert).unwrap();
    std::fs::write(path("tls.key"), &a_key).unwrap();
    let text = base().replace(
        "  - addr: 127.0.0.1:8080\n",
        "  - addr: 127.0.0.1:8080\n    tls: {cert: tls.crt, key: tls.key}\n",
    );
    let mut certs = CertStore::default();
    let resolver = certs
        .add("127.0.0.1:8080", &path("tls.crt"), &path("tls.key"))
        .unwrap();
    let r = reloader_in(dir.path(), &text, certs);
    let leaf = || resolver.current().cert[0].to_vec();
    let a_leaf = leaf();

    // A route change with a certificate whose key is A's: refused whole.
    std::fs::write(
        path("authgate.yaml"),
        text.replace("path: /\n", "path: /api\n"),
    )
    .unwrap();
    std::fs::write(path("tls.crt"), &b_cert).unwrap();
    let e = r.reload().unwrap_err();
    assert!(e.to_string().contains("does not belong"), "{e}");
    assert!(routes_root(&r), "the old routes serve");
    assert_eq!(leaf(), a_leaf);

    std::fs::write(path("tls.key"), &b_key).unwrap();
    r.reload().unwrap();
    assert!(!routes_root(&r));
    assert_ne!(leaf(), a_leaf, "B is served");
}

/// A folder laid out as kubelet lays out a ConfigMap or Secret volume: `..<stamp>/NAME`,
/// `..data -> ..<stamp>`, `NAME -> ..data/NAME`; its `swap` is kubelet's update.
struct Volume(PathBuf);

impl Volume {
    fn new(dir: &Path, files: &[(&str, &str)]) -> Volume {
        let v = Volume(dir.to_path_buf());
        let stamp = v.stage("..2026_12_06_10_00_00.1", files);
        std::os::unix::fs::symlink(stamp, dir.join("..data")).unwrap();
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    fn stage(&self, stamp: &str, files: &[(&str, &str)]) -> String {
        std::fs::create_dir(self.0.join(stamp)).unwrap();
        for (name, text) in files {
            std::fs::write(self.0.join(stamp).join(name), text).unwrap();
        }
        stamp.to_string()
    }

    /// A new timestamped folder, `..data_tmp` renamed over `..data`, the old folder removed;
    /// the new files get the old ones' mtimes.
    fn swap(&self, stamp: &str, files: &[(&str, &str)]) {
        let old = std::fs::read_link(self.0.join("..data")).unwrap();
        self.stage(stamp, files);
        for (name, _) in files {
            let mtime = std::fs::metadata(self.0.join(&old).join(name))
                .unwrap()
                .modified()
                .unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(self.0.join(stamp).join(name))
                .unwrap();
            f.set_modified(mtime).unwrap();
        }
        std::os::unix::fs::symlink(stamp, self.0.join("..data_tmp")).unwrap();
        std::fs::rename(self.0.join("..data_tmp"), self.0.join("..data")).unwrap();
        std::fs::remove_dir_all(self.0.join(old)).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

#[test]
fn a_kubelet_swap_changes_the_fingerprint_even_with_equal_mtimes_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let v = Volume::new(dir.path(), &[("token", "token-one"), ("cfg", "x")]);
    let files = [v.path("token"), v.path("cfg")];
    let before = Fingerprint::of(&files);
    assert_eq!(before, Fingerprint::of(&files), "nothing changed");
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.modified().unwrap(), m.len())
    };
    let was = stat(&v.path("token"));
    v.swap(
        "..2026_12_06_10_05_00.2",
        &[("token", "token-two"), ("cfg", "x")],
    );
    assert_eq!(stat(&v.path("token")), was, "same mtime, same size");
    let after = Fingerprint::of(&files);
    assert_ne!(before, after, "the token's content changed");
    // The same contents in yet another folder: nothing to reload.
    v.swap(
        "..2026_12_06_10_10_00.3",
        &[("token", "token-two"), ("cfg", "x")],
    );
    assert_eq!(after, Fingerprint::of(&files));
}

#[test]
fn an_in_place_rewrite_with_the_old_mtime_changes_the_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, "aaaa").unwrap();
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    let before = Fingerprint::of(std::slice::from_ref(&p));
    std::fs::write(&p, "bbbb").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_ne!(before, Fingerprint::of(std::slice::from_ref(&p)));
}

#[test]
fn a_missing_file_differs_from_an_empty_one_and_follow_reads_new_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let missing = Fingerprint::of(std::slice::from_ref(&a));
    std::fs::write(&a, "").unwrap();
    let empty = Fingerprint::of(std::slice::from_ref(&a));
    assert_ne!(missing, empty);

    // After a reload that names `b` instead of nothing: `a` keeps the digest seen before
    // the reload (a change during it is still seen next time), `b` is read now.
    let mut seen = missing.clone();
    std::fs::write(&b, "b").unwrap();
    seen.follow(&[a.clone(), b.clone()]);
    assert_eq!(seen.0.get(&a), missing.0.get(&a));
    assert_ne!(seen, Fingerprint::of(&[a.clone(), b.clone()]), "a changed");
    seen.follow(std::slice::from_ref(&b));
    assert_eq!(seen, Fingerprint::of(&[b]));
}

/// A `SIGHUP` before the reloader's watch runs is caught (its default action would end this
/// test process) and remembered for the watch.
#[test]
fn a_hangup_before_the_watch_is_caught_and_kept() {
    let early = EarlyHangup::catch();
    assert!(!early.take());
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    assert!(early.take(), "the signal was not seen");
    assert!(!early.take(), "seen once");
}
