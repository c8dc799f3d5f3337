//! Test harness: real peers on loopback sockets and the real authgate binary in front of them.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::devserver::{self, echo, standin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

pub const USERS: &str = r#"
users:
  - id: user-alice
    roles: [admin]
    amr: [pwd]
    sessions: [sess-alice]
    tokens: [tok-alice]
  - id: user-bob
    sessions: [sess-bob]
    tokens: [tok-bob]
  - id: user-carol
    disabled: true
    sessions: [sess-carol]
"#;

pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let a = l.local_addr().expect("local addr");
    (l, a)
}

/// The resolver stand-in, in this process, so tests can count what it received.
pub async fn start_standin(latency: Duration) -> (Arc<standin::Standin>, SocketAddr) {
    let (l, addr) = listener().await;
    (start_standin_on(l, latency, None), addr)
}

pub fn start_standin_on(
    l: TcpListener,
    latency: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Arc<standin::Standin> {
    let dir = standin::Directory::from_yaml(USERS).expect("users yaml");
    let s = Arc::new(standin::Standin::new(dir, latency));
    let handler = s.clone();
    tokio::spawn(devserver::serve(
        l,
        tls,
        s.stats.connections.clone(),
        move |req| handler.clone().handle(req),
    ));
    s
}

/// The echo backend, in this process.
pub async fn start_echo() -> SocketAddr {
    let (l, addr) = listener().await;
    tokio::spawn(devserver::serve(
        l,
        None,
        Arc::default(),
        echo::handler(&addr.to_string()),
    ));
    addr
}

/// A hostile or broken resolver: answers every request with `reply` after `delay`, keeping
/// the connection open. Counts the requests it read.
pub async fn start_canned(reply: &'static [u8], delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    start_canned_with(reply, delay, true).await
}

/// Like `start_canned`; with `keep_open` false each connection answers one request and then
/// closes when the next one arrives, unanswered, as a server does whose idle close races with
/// the client's reuse (no `Connection: close` warned of it).
pub async fn start_canned_with(
    reply: &'static [u8],
    delay: Duration,
    keep_open: bool,
) -> (SocketAddr, Arc<AtomicU64>) {
    let canned = serve_canned(reply, delay, keep_open).await;
    (canned.addr, canned.calls)
}

/// A canned resolver whose answer the test can change while it runs.
pub async fn start_switchable(
    reply: &'static [u8],
) -> (SocketAddr, Arc<AtomicU64>, Arc<Mutex<&'static [u8]>>) {
    let canned = serve_canned(reply, Duration::ZERO, true).await;
    (canned.addr, canned.calls, canned.reply)
}

/// A canned peer and its handles: requests read, the reply and the delay before it (both
/// switchable while it runs).
pub struct Canned {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicU64>,
    pub reply: Arc<Mutex<&'static [u8]>>,
    pub delay_ms: Arc<AtomicU64>,
}

pub async fn serve_canned(reply: &'static [u8], delay: Duration, keep_open: bool) -> Canned {
    let (l, addr) = listener().await;
    let canned = Canned {
        addr,
        calls: Arc::new(AtomicU64::new(0)),
        reply: Arc::new(Mutex::new(reply)),
        delay_ms: Arc::new(AtomicU64::new(delay.as_millis() as u64)),
    };
    let (c, r, d) = (
        canned.calls.clone(),
        canned.reply.clone(),
        canned.delay_ms.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (c, r, d) = (c.clone(), r.clone(), d.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0;
                while read_head(&mut s, &mut buf).await.is_some() {
                    if !keep_open && answered == 1 {
                        return;
                    }
                    answered += 1;
                    c.fetch_add(1, Ordering::SeqCst);
                    let delay = Duration::from_millis(d.load(Ordering::SeqCst));
                    tokio::time::sleep(delay).await;
                    let reply: &'static [u8] = *r.lock().expect("reply lock");
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    canned
}

/// Reads from `s` until `buf` holds a whole request head (bodies are not read); returns it,
/// taken out of `buf`, or `None` once the peer has closed.
pub async fn read_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = buf[..end].to_vec();
            buf.drain(..end + 4);
            return Some(head);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A running authgate process; killed when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The process's log, for the failing test's output.
            eprintln!("--- authgate log ---\n{}", self.log());
        }
    }
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far (standard error, `RUST_LOG=warn`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("authgate.log")).unwrap_or_default()
    }

    /// Waits (at most 10 s) until the log has a line containing every one of `parts`; the line.
    pub fn log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?} in:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The configuration file this process was started with.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("authgate.yaml")
    }

    /// Replaces the configuration file (placeholders filled as at start).
    pub fn rewrite(&self, yaml: &str) {
        std::fs::write(self.conf(), fill(yaml, self.dir.path())).expect("rewrite config");
    }

    /// Sends a signal by name (`HUP`, `QUIT`, ...).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Waits (at most `limit`) for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "kill -s {name} {pid}");
}

/// Fills the PIDFILE and UPGRADESOCK placeholders with paths under `dir`.
pub fn fill(yaml: &str, dir: &std::path::Path) -> String {
    yaml.replace("PIDFILE", &dir.join("pid").display().to_string())
        .replace(
            "UPGRADESOCK",
            &dir.join("upgrade.sock").display().to_string(),
        )
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_authgate"))
}

/// The YAML for a proxy on `listen` with one pool; `resolver` is the whole `resolver:` body
/// and `extra` is appended at top level.
pub fn config(listen: SocketAddr, resolver: &str, backends: &[SocketAddr], extra: &str) -> String {
    let backends: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    format!(
        "pingora:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 0\n  pid_file: PIDFILE\n  upgrade_sock: UPGRADESOCK\n\
listen:\n  - addr: {listen}\n\
resolver:\n{resolver}\n\
upstreams:\n  app:\n    backends: [{}]\n\
routes:\n  - path: /\n    upstream: app\n{extra}{}",
        backends.join(", "),
        quiet_access_log(extra)
    )
}

/// Tests keep their output readable: no access log unless the test configures one.
fn quiet_access_log(rest: &str) -> &'static str {
    if rest.contains("access_log:") {
        ""
    } else {
        "access_log:\n  enabled: false\n"
    }
}

/// Like `config`, but `body` holds everything after `resolver:` (upstreams, routes, ...).
pub fn config_with(listen: SocketAddr, resolver: &str, body: &str) -> String {
    format!(
        "pingora:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 0\n  pid_file: PIDFILE\n  upgrade_sock: UPGRADESOCK\n\
listen:\n  - addr: {listen}\n\
resolver:\n{resolver}\n{body}{}",
        quiet_access_log(body)
    )
}

/// Waits (at most 10 s) until something accepts connections on `addr`.
pub fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An echo backend in a process of its own, so a test can kill it; killed when dropped.
pub struct EchoProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl EchoProcess {
    pub fn start(addr: SocketAddr) -> EchoProcess {
        let child = Command::new(binary())
            .args(["echo", "--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn echo");
        wait_for(addr);
        EchoProcess { addr, child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// An `admin:` section on a fresh loopback port, its token in a file under `dir`.
pub fn admin_section(dir: &std::path::Path) -> (String, SocketAddr) {
    let admin = closed_port();
    let token = dir.join("admin-token");
    std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).expect("token file");
    (
        format!(
            "admin:\n  listen: {admin}\n  token_file: {}\n",
            token.display()
        ),
        admin,
    )
}

/// `GET` an admin path with the token, as JSON.
pub async fn admin_get(admin: SocketAddr, path: &str) -> serde_json::Value {
    client()
        .get(format!("http://{admin}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request")
        .json()
        .await
        .expect("admin JSON")
}

/// The stand-in, an echo backend, and authgate in front of them with an admin listener; the
/// folder holds the admin token (and whatever `admin_extra` puts there, for YAML it appends
/// right after the `admin:` section).
pub struct AdminStack {
    pub standin: Arc<standin::Standin>,
    pub backend: SocketAddr,
    pub proxy: Proxy,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub async fn admin_stack(admin_extra: impl FnOnce(&std::path::Path) -> String) -> AdminStack {
    let (standin, raddr) = start_standin(Duration::ZERO).await;
    let backend = start_echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin_yaml, admin) = admin_section(dir.path());
    let extra = format!("{admin_yaml}{}", admin_extra(dir.path()));
    let proxy = start_proxy_with(|l| config(l, &resolver_at(raddr), &[backend], &extra));
    wait_for(admin);
    AdminStack {
        standin,
        backend,
        proxy,
        admin,
        dir,
    }
}

/// A `resolver:` body pointing at a plain-HTTP resolver with short timeouts.
pub fn resolver_at(addr: SocketAddr) -> String {
    format!("  url: http://{addr}/_resolver/resolve\n  timeout: 2s\n  read_timeout: 2s")
}

/// Starts authgate with `yaml` (PIDFILE / UPGRADESOCK / LISTEN are filled in) and waits until
/// it accepts connections.
pub fn start_proxy_with(yaml_for: impl FnOnce(SocketAddr) -> String) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = closed_port();
    let yaml = yaml_for(addr)
        .replace("PIDFILE", &dir.path().join("pid").display().to_string())
        .replace(
            "UPGRADESOCK",
            &dir.path().join("upgrade.sock").display().to_string(),
        );
    let conf = dir.path().join("authgate.yaml");
    std::fs::write(&conf, yaml).expect("write config");
    let log = std::fs::File::create(dir.path().join("authgate.log")).expect("log file");
    let child = Command::new(binary())
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn authgate");
    let mut proxy = Proxy { addr, child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return proxy;
        }
        if let Ok(Some(status)) = proxy.child.try_wait() {
            panic!("authgate exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "authgate did not listen on {addr} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// authgate in front of `resolver` and one echo backend, with the default settings.
pub fn start_proxy(resolver: SocketAddr, backend: SocketAddr) -> Proxy {
    start_proxy_with(|listen| config(listen, &resolver_at(resolver), &[backend], ""))
}

/// The usual arrangement: the stand-in, one echo backend, authgate with default settings.
pub struct Stack {
    pub standin: Arc<standin::Standin>,
    pub resolver: SocketAddr,
    pub backend: SocketAddr,
    pub proxy: Proxy,
}

pub async fn stack() -> Stack {
    let (standin, resolver) = start_standin(Duration::ZERO).await;
    let backend = start_echo().await;
    let proxy = start_proxy(resolver, backend);
    Stack {
        standin,
        resolver,
        backend,
        proxy,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Parses the echo backend's answer.
pub async fn echoed(resp: reqwest::Response) -> echo::Echo {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(
        status, 200,
        "expected the backend's echo, got {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an echo ({e}): {text}"))
}

/// `GET path` with a `Cookie` header, answered by the echo backend.
pub async fn get_as(proxy: &Proxy, path: &str, cookie: &str) -> echo::Echo {
    send_echo(client().get(proxy.url(path)).header("cookie", cookie)).await
}

/// Sends a request through the proxy; what the echo backend received (it must answer 200).
pub async fn send_echo(req: reqwest::RequestBuilder) -> echo::Echo {
    echoed(req.send().await.expect("request")).await
}

/// The user id the backend received for a request with `cookie`.
pub async fn user_of(proxy: &Proxy, cookie: &str) -> Vec<String> {
    get_as(proxy, "/", cookie)
        .await
        .header_values("x-authgear-user-id")
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Names of echoed headers that a backend would read as identity headers.
pub fn identity_headers(e: &echo::Echo) -> Vec<(String, String)> {
    e.headers
        .iter()
        .filter(|(n, _)| cgi_name(n).starts_with("HTTP_X_AUTHGEAR_"))
        .cloned()
        .collect()
}

/// The variable a CGI/WSGI/PHP backend reads a header as (`X.Authgear_user-id` ->
/// `HTTP_X_AUTHGEAR_USER_ID`): the judge of which received headers are identity headers,
/// independent of the code under test (`Namespace::covers`).
pub fn cgi_name(name: &str) -> String {
    let folded: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("HTTP_{folded}")
}

/// Sends raw bytes to the proxy and reads the whole answer until the server closes or
/// `until` appears; bounded by a 10 s deadline.
pub async fn raw(addr: SocketAddr, request: &[u8], until: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    let read = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    if find(&out, until).is_some() {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("raw answer within 10 s");
    out
}

/// A test CA and a server certificate for `names`, as (ca_pem, cert_pem, key_pem).
pub fn test_pki(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "authgate test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Sends GETs with `cookie` back to back until `stop` is set (or `limit` passes); returns how
/// many succeeded and what went wrong with the others.
pub async fn steady_stream(
    c: reqwest::Client,
    url: String,
    cookie: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> (usize, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    let end = Instant::now() + limit;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        match c.get(&url).header("cookie", cookie).send().await {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => failed.push(format!("status {}", r.status())),
            Err(e) => failed.push(format!("{e:?}")),
        }
    }
    (ok, failed)
}

/// The admin listener's Prometheus text.
pub async fn scrape(admin: SocketAddr) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics request")
        .text()
        .await
        .expect("metrics text")
}

/// Polls the admin metrics until `series` reaches `want` (at most 10 s).
pub async fn metric_reaches(admin: SocketAddr, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(&scrape(admin).await, series);
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {value}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of one series in a Prometheus text exposition (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
