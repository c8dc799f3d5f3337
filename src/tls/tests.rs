//! Unit tests of `tls`.

use super::*;

/// A self-signed certificate for `name` valid until the first of January of `year`, as
/// (cert_pem, key_pem).
fn pair(name: &str, year: i32) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// 2031-01-01T00:00:00Z.
const Y2031: i64 = 1_924_992_000;

#[test]
fn a_fitting_pair_is_read_with_its_expiry() {
    let (cert, key) = pair("a.test", 2031);
    let p = Pair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(p.not_after, Y2031);
    assert_eq!(p.key.cert.len(), 1);
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let (cert, _) = pair("a.test", 2031);
    let (_, other_key) = pair("b.test", 2031);
    let e = Pair::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(e.contains("does not belong to the certificate"), "{e}");
}

#[test]
fn pem_without_what_it_should_hold_is_refused() {
    let (cert, key) = pair("a.test", 2031);
    let e = Pair::from_pem(key.as_bytes(), key.as_bytes()).unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
    let e = Pair::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
    assert!(e.contains("no private key"), "{e}");
    let e = Pair::from_pem(b"", b"").unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
}

#[test]
fn reading_names_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (cert_pem, _) = pair("a.test", 2031);
    std::fs::write(&cert, cert_pem).unwrap();
    let e = Pair::read(&cert, &key).unwrap_err();
    assert!(
        e.contains("cannot read key") && e.contains("tls.key"),
        "{e}"
    );
    let (_, other_key) = pair("b.test", 2031);
    std::fs::write(&key, other_key).unwrap();
    let e = Pair::read(&cert, &key).unwrap_err();
    assert!(
        e.contains("tls.crt") && e.contains("tls.key") && e.contains("does not belong"),
        "{e}"
    );
}

#[test]
fn a_rotation_is_served_only_once_installed_and_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let write = |n: &str, text: &str| std::fs::write(path(n), text).unwrap();
    let (a_cert, a_key) = pair("a.test", 2031);
    let (b_cert, b_key) = pair("b.test", 2032);
    write("one.crt", &a_cert);
    write("one.key", &a_key);
    write("two.crt", &a_cert);
    write("two.key", &a_key);
    let mut store = CertStore::default();
    let one = store
        .add("127.0.0.1:1", &path("one.crt"), &path("one.key"))
        .unwrap();
    let two = store
        .add("127.0.0.1:2", &path("two.crt"), &path("two.key"))
        .unwrap();
    let leaf = |r: &CertResolver| r.current().cert[0].to_vec();
    let a_leaf = leaf(&one);

    // The first listener's pair is good, the second's does not fit: neither changes.
    write("one.crt", &b_cert);
    write("one.key", &b_key);
    write("two.crt", &b_cert);
    let e = store
        .read_all()
        .err()
        .expect("a bad pair fails the rotation");
    assert!(
        e.contains("listener 127.0.0.1:2") && e.contains("two.key"),
        "{e}"
    );
    assert_eq!(leaf(&one), a_leaf);
    assert_eq!(leaf(&two), a_leaf);

    write("two.key", &b_key);
    let rotation = store.read_all().unwrap();
    assert_eq!(leaf(&one), a_leaf, "read, not served yet");
    store.install(rotation);
    assert_ne!(leaf(&one), a_leaf);
    assert_eq!(leaf(&one), leaf(&two));
    let gauge = METRICS
        .tls_certificate_expiry
        .with_label_values(&["127.0.0.1:1"])
        .get();
    assert_eq!(gauge, Y2031 + 365 * 86_400, "B's notAfter, 2032-01-01");
}

#[test]
fn a_server_config_from_a_bad_pair_is_refused() {
    let (cert, _) = pair("a.test", 2031);
    let (_, other_key) = pair("b.test", 2031);
    assert!(server_config(cert.as_bytes(), other_key.as_bytes()).is_err());
}
