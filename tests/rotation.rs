//! Certificates and secrets rotated under a running proxy: a TLS pair replaced and reloaded
//! reaches new handshakes while open connections keep theirs; a pair that does not fit, or is
//! missing, fails the whole reload; and with `reload.watch` the proxy follows a Kubernetes
//! volume's `..data` swap of its configuration, of its admin token, of its TLS pair.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio_rustls::rustls;

const NAME: &str = "authgate.test";
/// The leaves' notAfter: 2031-01-01T00:00:00Z (A) and 2032-01-01T00:00:00Z (B).
const Y2031: f64 = 1_924_992_000.0;
const Y2032: f64 = 1_956_528_000.0;

/// A listener's `tls:` keys for `cert` and `key`.
fn tls_keys(cert: &Path, key: &Path) -> String {
    format!(
        "tls:\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    )
}

/// The DER of the first certificate in `pem`.
fn der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` for `authgate.test`, trusting `ca` only; no ALPN (HTTP/1.1).
async fn connect(addr: SocketAddr, ca: &str) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca).into()).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(NAME).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// The leaf certificate `conn` was opened with.
fn leaf_of(conn: &Tls) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// The leaf a new handshake gets.
async fn served_leaf(addr: SocketAddr, ca: &str) -> Vec<u8> {
    leaf_of(&connect(addr, ca).await)
}

/// `GET /` as bob on an open HTTP/1.1 connection; the response.
async fn get_on(conn: &mut Tls) -> String {
    let request = format!("GET / HTTP/1.1\r\nHost: {NAME}\r\nCookie: session=sess-bob\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("write");
    read_response(conn).await
}

/// An HTTPS client trusting `ca` that reaches `authgate.test` at `addr` and reports the peer
/// certificate of each response's connection; HTTP/2 by ALPN.
fn https(addr: SocketAddr, ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .resolve(NAME, addr)
        .tls_info(true)
        .build()
        .expect("client")
}

/// `GET /` as bob through `c`: the HTTP version, the leaf of the connection it went over, and
/// the backend that served it.
async fn get_over(c: &reqwest::Client, addr: SocketAddr) -> (reqwest::Version, Vec<u8>, String) {
    let r = c
        .get(format!("https://{NAME}:{}/", addr.port()))
        .header("cookie", "session=sess-bob")
        .send()
        .await
        .expect("request");
    let leaf = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the connection's certificate")
        .to_vec();
    let version = r.version();
    let e = echoed(r).await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-bob"]);
    (version, leaf, e.served_by)
}

/// Polls `check` until it holds (at most 10 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn expiry_series(listener: SocketAddr) -> String {
    format!("authgate_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_handshakes_get_the_rotated_pair_and_open_connections_keep_theirs() {
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.leaf(&[NAME], 2031);
    let (b_cert, b_key) = ca.leaf(&[NAME], 2032);
    let builder = Stack::builder().admin();
    let (cert, key) = (
        builder.file("tls.crt", &a_cert),
        builder.file("tls.key", &a_key),
    );
    let s = builder.listener_keys(&tls_keys(&cert, &key)).start().await;
    let (addr, admin, ca) = (s.proxy.addr, s.admin(), ca.pem());
    assert_eq!(served_leaf(addr, &ca).await, der(&a_cert));
    assert_eq!(metric(&scrape(admin).await, &expiry_series(addr)), Y2031);

    // Opened before the rotation: an HTTP/1.1 keep-alive connection and an HTTP/2 one.
    let mut h1 = connect(addr, &ca).await;
    let first = get_on(&mut h1).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let h2 = https(addr, &ca);
    let (version, leaf, _) = get_over(&h2, addr).await;
    assert_eq!((version, leaf), (reqwest::Version::HTTP_2, der(&a_cert)));

    std::fs::write(&cert, &b_cert).unwrap();
    std::fs::write(&key, &b_key).unwrap();
    s.proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;

    assert_eq!(
        served_leaf(addr, &ca).await,
        der(&b_cert),
        "a new handshake"
    );
    let (version, leaf, _) = get_over(&https(addr, &ca), addr).await;
    assert_eq!(
        (version, leaf),
        (reqwest::Version::HTTP_2, der(&b_cert)),
        "a new client"
    );
    assert_eq!(metric(&scrape(admin).await, &expiry_series(addr)), Y2032);

    // The connections opened before serve on, with the certificate they were opened with.
    let again = get_on(&mut h1).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert_eq!(leaf_of(&h1), der(&a_cert));
    let (version, leaf, _) = get_over(&h2, addr).await;
    assert_eq!(
        (version, leaf),
        (reqwest::Version::HTTP_2, der(&a_cert)),
        "the HTTP/2 connection opened before (a new one would present B)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_that_does_not_fit_or_is_missing_fails_the_reload_and_the_old_one_serves() {
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.leaf(&[NAME], 2031);
    let (b_cert, b_key) = ca.leaf(&[NAME], 2032);
    let builder = Stack::builder()
        .pool("a", Pool::echoes(1))
        .pool("b", Pool::echoes(1))
        .routes(&all_to("a"))
        .admin();
    let (cert, key) = (
        builder.file("tls.crt", &a_cert),
        builder.file("tls.key", &a_key),
    );
    let s = builder.listener_keys(&tls_keys(&cert, &key)).start().await;
    let (proxy, admin, ca) = (&s.proxy, s.admin(), ca.pem());
    let (addr, a, b) = (
        proxy.addr,
        s.backends[0].to_string(),
        s.backends[1].to_string(),
    );
    let (cert_name, key_name) = (cert.display().to_string(), key.display().to_string());
    let failed = "authgate_reloads_total{result=\"failed\"}";

    // B's certificate with A's key, and a route change in the same reload.
    s.rewrite(&s.config.with_routes(&all_to("b")));
    std::fs::write(&cert, &b_cert).unwrap();
    proxy.signal("HUP");
    metric_reaches(admin, failed, 1.0).await;
    proxy.log_line(&[
        "reload failed",
        &format!("listener {addr}"),
        &cert_name,
        &key_name,
        "the private key does not belong to the certificate",
    ]);
    assert_eq!(served_leaf(addr, &ca).await, der(&a_cert));
    assert_eq!(
        get_over(&https(addr, &ca), addr).await.2,
        a,
        "nothing of the reload applied: the route is the old one"
    );

    // A's certificate back, the key file gone.
    std::fs::write(&cert, &a_cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    proxy.signal("HUP");
    metric_reaches(admin, failed, 2.0).await;
    proxy.log_line(&[
        "reload failed",
        &format!("listener {addr}"),
        "cannot read",
        &key_name,
    ]);
    assert_eq!(served_leaf(addr, &ca).await, der(&a_cert));
    assert_eq!(get_over(&https(addr, &ca), addr).await.2, a);
    assert_eq!(metric(&scrape(admin).await, &expiry_series(addr)), Y2031);

    // B whole: the reload applies, certificate and route together.
    std::fs::write(&cert, &b_cert).unwrap();
    std::fs::write(&key, &b_key).unwrap();
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_leaf(addr, &ca).await, der(&b_cert));
    assert_eq!(get_over(&https(addr, &ca), addr).await.2, b);
}

/// Status of `GET /upstreams` on the admin listener with `token`.
async fn admin_status(admin: SocketAddr, token: &str) -> u16 {
    client()
        .get(format!("http://{admin}/upstreams"))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin request")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_follows_a_kubernetes_volume_swap() {
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.leaf(&[NAME], 2031);
    let (b_cert, b_key) = ca.leaf(&[NAME], 2032);
    // Of one length: the swapped token file keeps its size (and, by `swap`, its mtime).
    let (one, two) = ("token-one-0123456789", "token-two-0123456789");
    let builder = Stack::builder()
        .pool("a", Pool::echoes(1))
        .pool("b", Pool::echoes(1))
        .routes(&all_to("a"));
    // The configuration itself is written into the volume by the stack at start.
    let volume = Volume::new(
        builder.path("config"),
        &[
            ("authgate.yaml", ""),
            ("admin-token", one),
            ("tls.crt", &a_cert),
            ("tls.key", &a_key),
        ],
    );
    let admin = closed_port();
    let s = builder
        .listener_keys(&tls_keys(
            &volume.path("tls.crt"),
            &volume.path("tls.key"),
        ))
        .yaml(&format!(
            "admin:\n  listen: {admin}\n  token_file: {}\nreload:\n  watch: true\n  interval: 100ms\n",
            volume.path("admin-token").display()
        ))
        .conf_at(volume.path("authgate.yaml"))
        .start()
        .await;
    wait_for(admin);
    let (addr, ca, b) = (s.proxy.addr, ca.pem(), s.backends[1].to_string());
    assert_eq!(s.proxy.conf(), volume.path("authgate.yaml"));
    let ok = "authgate_reloads_total{result=\"ok\"}";
    let to_b = fill(
        &s.config.with_routes(&all_to("b")).render(),
        s.proxy.dir.path(),
    );
    let files = |token: &'static str, cert: &str, key: &str| {
        [
            ("authgate.yaml", to_b.clone()),
            ("admin-token", token.to_string()),
            ("tls.crt", cert.to_string()),
            ("tls.key", key.to_string()),
        ]
    };
    let swap = |files: [(&str, String); 4]| {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        volume.swap(&files);
    };

    // The configuration changes: the route goes to b.
    swap(files(one, &a_cert, &a_key));
    eventually("the route follows the swap", || async {
        get_over(&https(addr, &ca), addr).await.2 == b
    })
    .await;
    metric_reaches(admin, ok, 1.0).await;

    // Only the admin token changes: the same configuration text.
    assert_eq!(admin_status(admin, one).await, 200);
    swap(files(two, &a_cert, &a_key));
    eventually("the new admin token is taken", || async {
        admin_status(admin, two).await == 200
    })
    .await;
    assert_eq!(
        admin_status(admin, one).await,
        401,
        "the old token is refused"
    );
    metric_reaches(admin, ok, 2.0).await;

    // Only the TLS pair changes.
    swap(files(two, &b_cert, &b_key));
    eventually("new handshakes get B", || async {
        served_leaf(addr, &ca).await == der(&b_cert)
    })
    .await;
    metric_reaches(admin, ok, 3.0).await;
    assert_eq!(metric(&scrape(admin).await, &expiry_series(addr)), Y2032);
    assert_eq!(get_over(&https(addr, &ca), addr).await.2, b);
    assert_eq!(
        metric(
            &scrape(admin).await,
            "authgate_reloads_total{result=\"failed\"}"
        ),
        0.0
    );
}
