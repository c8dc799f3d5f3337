//! Test harness: real peers on loopback sockets and the real authgate binary in front of them.
#![allow(dead_code)]

pub mod redis;

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

/// The origin the stand-in's JWT access tokens name (`iss`, `aud`).
pub const STANDIN_ORIGIN: &str = "https://project.authgear.test";

/// The `jwt:` section trusting the stand-in at `jwks` (its keys and origin), with further
/// keys (at column 0).
pub fn jwt_section(jwks: SocketAddr, keys: &str) -> String {
    format!(
        "jwt:\n  jwks_url: http://{jwks}/oauth2/jwks\n  issuer: {STANDIN_ORIGIN}\n  audience: {STANDIN_ORIGIN}\n{}",
        indent(keys, 2)
    )
}

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
    let s = Arc::new(
        standin::Standin::new(dir, latency)
            .with_tokens(STANDIN_ORIGIN)
            .expect("the stand-in's token issuer"),
    );
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
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
}

pub async fn serve_canned(reply: &'static [u8], delay: Duration, keep_open: bool) -> Canned {
    let (l, addr) = listener().await;
    let canned = Canned {
        addr,
        calls: Arc::new(AtomicU64::new(0)),
        reply: Arc::new(Mutex::new(reply)),
        delay_ms: Arc::new(AtomicU64::new(delay.as_millis() as u64)),
        connections: Arc::new(AtomicU64::new(0)),
    };
    let (c, r, d, n) = (
        canned.calls.clone(),
        canned.reply.clone(),
        canned.delay_ms.clone(),
        canned.connections.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
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

/// A loopback port nobody listens on (bound, then released), for a process to listen on or a
/// peer that refuses connections. Taken below the kernel's ephemeral range (32768 and up by
/// default), so no `bind` to port 0 (this process's echo backends and stand-ins, or any
/// other) can be given it between now and its use; and never handed out twice in one test
/// process. (A port from the ephemeral range could go to an echo backend started next, and a
/// test would then talk to that backend instead of the proxy that failed to bind it.)
pub fn closed_port() -> SocketAddr {
    const LOW: u16 = 15_000;
    const HIGH: u16 = 32_000;
    static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = LOW + rand::random::<u16>() % (HIGH - LOW);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed.contains(&port) {
            continue;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpListener::bind(addr).is_ok() {
            handed.insert(port);
            return addr;
        }
    }
}

/// A running authgate process; killed when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    child: Child,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
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

    /// What the process logged so far (standard error, `RUST_LOG=warn` unless the builder
    /// said otherwise).
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
        self.conf.clone()
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

/// YAML written in a raw string indented to sit with the code around it: the blank first and
/// last lines go, and so does the indentation every line shares.
pub fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    let lines = &lines[first..=last];
    let margin = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| format!("{}\n", l.get(margin..).unwrap_or("").trim_end()))
        .collect()
}

/// `text` (dedented) moved `by` columns right, to sit under a key.
fn indent(text: &str, by: usize) -> String {
    dedent(text)
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{:by$}{l}\n", "")
            }
        })
        .collect()
}

/// One entry of `upstreams:`: the pool `name` of `backends`, with further `keys` (`lb`,
/// `health_check`, `tls`, ...).
pub fn upstream(name: &str, backends: &[SocketAddr], keys: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    let list = list.join(", ");
    let head = format!(
        r#"
        {name}:
          backends: [{list}]
        "#
    );
    dedent(&head) + &indent(keys, 2)
}

/// A `resolver:` body pointing at a plain-HTTP resolver with short timeouts.
fn resolver_at(addr: SocketAddr) -> String {
    dedent(&format!(
        r#"
        url: http://{addr}/_resolver/resolve
        timeout: 2s
        read_timeout: 2s
        "#
    ))
}

/// Everything routed to `app` without asking the resolver: for the tests of connections, not
/// of identities.
pub const ALL_PUBLIC: &str = r#"
- path: /
  upstream: app
  auth: public
"#;

/// Everything routed to the pool `upstream`.
pub fn all_to(upstream: &str) -> String {
    dedent(&format!(
        r#"
        - path: /
          upstream: {upstream}
        "#
    ))
}

/// Tests keep their output readable: no access log unless the test configures one.
const QUIET_ACCESS_LOG: &str = r#"
access_log:
  enabled: false
"#;

/// An authgate configuration file in parts, each the YAML under its key (at column 0);
/// `extra` holds further top-level sections. A test changes a part and renders it again to
/// rewrite the file of a running proxy.
#[derive(Clone, Debug)]
pub struct Config {
    pub grace_period_seconds: u32,
    /// Keys added under `pingora:`.
    pub pingora: String,
    pub listen: String,
    pub resolver: String,
    pub upstreams: String,
    pub routes: String,
    pub extra: String,
}

impl Config {
    /// The usual file: a proxy on `listen` in front of `resolver`, everything routed to one
    /// pool `app` of `backends`.
    pub fn new(listen: SocketAddr, resolver: SocketAddr, backends: &[SocketAddr]) -> Config {
        Config {
            grace_period_seconds: 0,
            pingora: String::new(),
            listen: dedent(&format!("- addr: {listen}")),
            resolver: resolver_at(resolver),
            upstreams: upstream("app", backends, ""),
            routes: all_to("app"),
            extra: String::new(),
        }
    }

    /// This file with `routes:` replaced.
    pub fn with_routes(&self, yaml: &str) -> Config {
        let routes = dedent(yaml);
        Config {
            routes,
            ..self.clone()
        }
    }

    /// This file with further top-level sections.
    pub fn with_yaml(&self, yaml: &str) -> Config {
        let extra = self.extra.clone() + &dedent(yaml);
        Config {
            extra,
            ..self.clone()
        }
    }

    /// The YAML file (with the PIDFILE and UPGRADESOCK placeholders `fill` replaces).
    pub fn render(&self) -> String {
        let grace_period_seconds = self.grace_period_seconds;
        let pingora = indent(&self.pingora, 2);
        let listen = indent(&self.listen, 2);
        let resolver = indent(&self.resolver, 2);
        let upstreams = indent(&self.upstreams, 2);
        let routes = indent(&self.routes, 2);
        let extra = dedent(&self.extra);
        let access_log = if extra.contains("access_log:") {
            ""
        } else {
            QUIET_ACCESS_LOG
        };
        format!(
            r#"
pingora:
  threads: 2
  grace_period_seconds: {grace_period_seconds}
  graceful_shutdown_timeout_seconds: 0
  pid_file: PIDFILE
  upgrade_sock: UPGRADESOCK
{pingora}
listen:
{listen}
resolver:
{resolver}
upstreams:
{upstreams}
routes:
{routes}
{extra}{access_log}"#
        )
    }
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

/// An `admin:` section (with further `keys`) on a fresh loopback port, its token in a file
/// under `dir`.
fn admin_section(dir: &std::path::Path, keys: &str) -> (String, SocketAddr) {
    let admin = closed_port();
    let token = dir.join("admin-token");
    std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).expect("token file");
    let token = token.display();
    let section = format!(
        r#"
        admin:
          listen: {admin}
          token_file: {token}
        "#
    );
    (dedent(&section) + &indent(keys, 2), admin)
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

/// Starts authgate on `addr` with `yaml` written to `conf` (default: `authgate.yaml` in
/// `dir`; PIDFILE / UPGRADESOCK filled with paths in `dir`, which the proxy keeps), its log
/// filtered by `filter` (`RUST_LOG`), and waits until it accepts connections. The one place
/// that spawns the proxy.
fn start_proxy_in(
    dir: tempfile::TempDir,
    addr: SocketAddr,
    yaml: &str,
    conf: Option<PathBuf>,
    filter: &str,
) -> Proxy {
    let conf = conf.unwrap_or_else(|| dir.path().join("authgate.yaml"));
    std::fs::write(&conf, fill(yaml, dir.path())).expect("write config");
    let log = std::fs::File::create(dir.path().join("authgate.log")).expect("log file");
    let child = Command::new(binary())
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn authgate");
    let mut proxy = Proxy {
        addr,
        child,
        dir,
        conf,
    };
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

/// The backends of one pool: echo backends the stack starts, or addresses the test gives.
pub struct Pool {
    echoes: usize,
    backends: Vec<SocketAddr>,
    keys: String,
}

impl Pool {
    /// `n` echo backends, started with the stack.
    pub fn echoes(n: usize) -> Pool {
        Pool {
            echoes: n,
            backends: Vec::new(),
            keys: String::new(),
        }
    }

    /// Backends the test runs (or a closed port, for a dead one).
    pub fn at(backends: &[SocketAddr]) -> Pool {
        Pool {
            echoes: 0,
            backends: backends.to_vec(),
            keys: String::new(),
        }
    }

    /// Further keys of the pool (`lb`, `health_check`, `tls`, ...).
    pub fn keys(mut self, yaml: &str) -> Pool {
        self.keys = dedent(yaml);
        self
    }
}

/// How a test asks for a stack; `Stack::builder()` gives the usual one: the stand-in, one echo
/// backend in pool `app`, everything routed to it, no admin listener.
pub struct StackBuilder {
    dir: tempfile::TempDir,
    latency: Duration,
    resolver: Option<SocketAddr>,
    resolver_body: Option<String>,
    resolver_keys: String,
    pools: Vec<(String, Pool)>,
    routes: Option<String>,
    admin: Option<String>,
    listener_keys: String,
    listeners: String,
    grace_period_seconds: u32,
    pingora_keys: String,
    extra: String,
    /// `RUST_LOG` of the process (default `warn`).
    log_filter: Option<String>,
    conf: Option<PathBuf>,
    listen: Option<SocketAddr>,
}

impl StackBuilder {
    /// The proxy listens on `addr` (from `closed_port()`), known before it starts.
    pub fn listen_on(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The stand-in answers after `latency`.
    pub fn resolver_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// A resolver the test runs (canned, raw, TLS) at `addr`, or a closed port: no stand-in.
    pub fn resolver(mut self, addr: SocketAddr) -> Self {
        self.resolver = Some(addr);
        self
    }

    /// The whole `resolver:` body, instead of the resolver's URL over plain HTTP with 2 s
    /// timeouts.
    pub fn resolver_body(mut self, yaml: &str) -> Self {
        self.resolver_body = Some(dedent(yaml));
        self
    }

    /// Further keys under `resolver:`.
    pub fn resolver_keys(mut self, yaml: &str) -> Self {
        self.resolver_keys.push_str(&dedent(yaml));
        self
    }

    /// A pool `name`; with none, the stack has pool `app` of one echo backend.
    pub fn pool(mut self, name: &str, pool: Pool) -> Self {
        self.pools.push((name.to_string(), pool));
        self
    }

    /// The whole `routes:` body, instead of everything to `app`.
    pub fn routes(mut self, yaml: &str) -> Self {
        self.routes = Some(dedent(yaml));
        self
    }

    /// The admin listener, its token in the stack's folder.
    pub fn admin(self) -> Self {
        self.admin_keys("")
    }

    /// The admin listener with further keys under `admin:`.
    pub fn admin_keys(mut self, yaml: &str) -> Self {
        self.admin = Some(dedent(yaml));
        self
    }

    /// Further keys of the proxy's listener (`tls`, `h2c`).
    pub fn listener_keys(mut self, yaml: &str) -> Self {
        self.listener_keys.push_str(&dedent(yaml));
        self
    }

    /// TLS on the main listener, with a certificate for `names` from a test CA of its own;
    /// the CA's PEM, for a client that trusts it.
    pub fn tls(self, names: &[&str]) -> (Self, String) {
        let (ca, cert, key) = test_pki(names);
        let cert_path = self.file("cert.pem", &cert);
        let key_path = self.file("key.pem", &key);
        let stack = self.listener_keys(&format!(
            r#"
            tls:
              cert: {}
              key: {}
            "#,
            cert_path.display(),
            key_path.display()
        ));
        (stack, ca)
    }

    /// The configuration file at `path` (say, a symlink into a `Volume`), written through
    /// it at start, instead of `authgate.yaml` in the stack's folder.
    pub fn conf_at(mut self, path: PathBuf) -> Self {
        self.conf = Some(path);
        self
    }

    /// Another listener, given by its keys (`addr`, ...).
    pub fn listener(mut self, yaml: &str) -> Self {
        // A list item: its keys two columns in, the first one behind the dash.
        let mut item = indent(yaml, 2);
        item.replace_range(..1, "-");
        self.listeners.push_str(&item);
        self
    }

    /// In-flight requests get this long once a shutdown or upgrade stops the listeners.
    pub fn grace_period_seconds(mut self, seconds: u32) -> Self {
        self.grace_period_seconds = seconds;
        self
    }

    /// Further keys under `pingora:`.
    pub fn pingora_keys(mut self, yaml: &str) -> Self {
        self.pingora_keys.push_str(&dedent(yaml));
        self
    }

    /// The process's `RUST_LOG`, instead of `warn`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_string());
        self
    }

    /// Further top-level sections (`cache:`, `client:`, ...).
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.extra.push_str(&dedent(yaml));
        self
    }

    /// A path in the stack's folder (the proxy's, kept while it runs), for files the YAML
    /// names.
    /// The access log on, written to a file in the stack's folder: the builder and the path.
    pub fn access_log_file(self) -> (Self, PathBuf) {
        let path = self.path("access.log");
        let yaml = format!("access_log:\n  path: {}\n", path.display());
        (self.yaml(&yaml), path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` in the stack's folder; its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write a file for the stack");
        path
    }

    pub async fn start(self) -> Stack {
        let (standin, resolver) = match self.resolver {
            Some(addr) => (None, addr),
            None => {
                let (standin, addr) = start_standin(self.latency).await;
                (Some(standin), addr)
            }
        };
        let mut pools = self.pools;
        if pools.is_empty() {
            pools.push(("app".to_string(), Pool::echoes(1)));
        }
        let (mut backends, mut upstreams) = (Vec::new(), String::new());
        for (name, pool) in pools {
            let mut addrs = pool.backends;
            for _ in 0..pool.echoes {
                addrs.push(start_echo().await);
            }
            upstreams.push_str(&upstream(&name, &addrs, &pool.keys));
            backends.extend(addrs);
        }
        let mut extra = self.extra;
        let admin = self.admin.map(|keys| {
            let (section, admin) = admin_section(self.dir.path(), &keys);
            extra.push_str(&section);
            admin
        });
        let listen = self.listen.unwrap_or_else(closed_port);
        let config = Config {
            grace_period_seconds: self.grace_period_seconds,
            pingora: self.pingora_keys,
            listen: dedent(&format!("- addr: {listen}"))
                + &indent(&self.listener_keys, 2)
                + &self.listeners,
            resolver: self.resolver_body.unwrap_or_else(|| resolver_at(resolver))
                + &self.resolver_keys,
            upstreams,
            routes: self.routes.unwrap_or_else(|| all_to("app")),
            extra,
        };
        let log = self.log_filter.as_deref().unwrap_or("warn");
        let proxy = start_proxy_in(self.dir, listen, &config.render(), self.conf, log);
        if let Some(admin) = admin {
            wait_for(admin);
        }
        Stack {
            standin,
            resolver,
            backends,
            proxy,
            admin,
            config,
        }
    }
}

/// The resolver (the stand-in unless the test gave its own), the backends, and authgate in
/// front of them, started from `config`; the proxy's folder is the stack's.
pub struct Stack {
    standin: Option<Arc<standin::Standin>>,
    pub resolver: SocketAddr,
    /// Every pool's backends, in the order the pools were given.
    pub backends: Vec<SocketAddr>,
    pub proxy: Proxy,
    admin: Option<SocketAddr>,
    pub config: Config,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            dir: tempfile::tempdir().expect("tempdir"),
            latency: Duration::ZERO,
            resolver: None,
            resolver_body: None,
            resolver_keys: String::new(),
            pools: Vec::new(),
            routes: None,
            admin: None,
            listener_keys: String::new(),
            listeners: String::new(),
            grace_period_seconds: 0,
            pingora_keys: String::new(),
            extra: String::new(),
            log_filter: None,
            conf: None,
            listen: None,
        }
    }

    /// The usual stack.
    pub async fn start() -> Stack {
        Stack::builder().start().await
    }

    pub fn standin(&self) -> &standin::Standin {
        self.standin
            .as_deref()
            .expect("a stack started with its own resolver has no stand-in")
    }

    /// Requests the stand-in has answered.
    pub fn resolver_calls(&self) -> u64 {
        self.standin().stats.requests.load(Ordering::SeqCst)
    }

    /// The first (usually the only) backend.
    pub fn backend(&self) -> SocketAddr {
        self.backends[0]
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
            .expect("a stack started without .admin() has no admin listener")
    }

    /// Replaces the proxy's file with `config` (not reloaded: a signal or the watcher does).
    pub fn rewrite(&self, config: &Config) {
        self.proxy.rewrite(&config.render());
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
    echoed(fetch_as(proxy, path, cookie).await).await
}

/// `GET path` through the proxy, whatever it answers.
pub async fn fetch(proxy: &Proxy, path: &str) -> reqwest::Response {
    client().get(proxy.url(path)).send().await.expect("request")
}

/// `GET path` with a `Cookie` header, whatever the proxy answers.
pub async fn fetch_as(proxy: &Proxy, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .get(proxy.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("request")
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

/// One HTTP/1.1 response with a Content-Length body, read from a kept connection.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return text;
                }
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| "timed out".into())
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
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(names, 4096);
    (ca.pem(), cert, key)
}

/// A test CA that signs server certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authgate test CA");
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa { cert, key }
    }

    /// The CA's certificate, for a client that trusts it.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` valid until the first of January of `year`, with a key of
    /// its own, as (cert_pem, key_pem).
    pub fn leaf(&self, names: &[&str], year: i32) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// A folder laid out as kubelet lays out a ConfigMap or Secret volume:
/// `..<timestamp>/NAME` holds the files, `..data -> ..<timestamp>`, `NAME -> ..data/NAME`.
pub struct Volume {
    dir: PathBuf,
    stamps: AtomicU64,
}

impl Volume {
    /// The volume at `dir` (created) holding `files` (name, contents).
    pub fn new(dir: PathBuf, files: &[(&str, &str)]) -> Volume {
        std::fs::create_dir_all(&dir).expect("volume folder");
        let v = Volume {
            dir,
            stamps: AtomicU64::new(0),
        };
        let stamp = v.stage(files);
        std::os::unix::fs::symlink(&stamp, v.dir.join("..data")).expect("..data");
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), v.path(name)).expect("link");
        }
        v
    }

    /// The path a pod reads `name` at.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A new timestamped folder holding `files`; its name.
    fn stage(&self, files: &[(&str, &str)]) -> String {
        let n = self.stamps.fetch_add(1, Ordering::SeqCst);
        let stamp = format!("..2026_12_06_10_00_{n:02}.123456789");
        std::fs::create_dir(self.dir.join(&stamp)).expect("timestamped folder");
        for (name, text) in files {
            std::fs::write(self.dir.join(&stamp).join(name), text).expect("volume file");
        }
        stamp
    }

    /// Kubelet's update: the new files in a new timestamped folder (with the mtimes of the
    /// files they replace, to show nothing relies on them), a `..data_tmp` symlink to it
    /// renamed over `..data` (atomic), then the old folder removed.
    pub fn swap(&self, files: &[(&str, &str)]) {
        let old = std::fs::read_link(self.dir.join("..data")).expect("..data");
        let stamp = self.stage(files);
        for (name, _) in files {
            let Ok(was) =
                std::fs::metadata(self.dir.join(&old).join(name)).and_then(|m| m.modified())
            else {
                continue;
            };
            std::fs::File::options()
                .write(true)
                .open(self.dir.join(&stamp).join(name))
                .and_then(|f| f.set_modified(was))
                .expect("set mtime");
        }
        std::os::unix::fs::symlink(&stamp, self.dir.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).expect("rename");
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old folder");
    }
}

/// Steady traffic while a test changes something under it: one task per client, each sending
/// GETs with a cookie back to back until stopped or its time limit passes.
pub struct Streams {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Streams {
    pub fn start(
        clients: Vec<reqwest::Client>,
        url: &str,
        cookie: &'static str,
        limit: Duration,
    ) -> Streams {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = clients
            .into_iter()
            .map(|c| {
                let (url, stop) = (url.to_string(), stop.clone());
                tokio::spawn(async move {
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
                })
            })
            .collect();
        Streams { stop, tasks }
    }

    /// Ends the streams before their time limit.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for every stream to end and asserts that no request failed (`during` says when,
    /// for the message); how many requests each stream ran.
    pub async fn no_failures(self, during: &str) -> Vec<usize> {
        let mut ran = Vec::new();
        for task in self.tasks {
            let (ok, failed) = task.await.expect("stream task");
            assert!(failed.is_empty(), "requests failed {during}: {failed:?}");
            ran.push(ok);
        }
        ran
    }
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

/// Sends one request with `cookie` to each of `urls` at the same time, and checks that each
/// reached the backend as `user`.
pub async fn herd_as(urls: Vec<String>, cookie: &str, user: &str) {
    let c = client();
    let requests: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let req = c.get(url).header("cookie", cookie).send();
            tokio::spawn(async move { echoed(req.await.expect("response")).await })
        })
        .collect();
    for r in requests {
        assert_eq!(
            r.await
                .expect("request task")
                .header_values("x-authgear-user-id"),
            [user]
        );
    }
}

/// The `x-authgear-body-signature` Authgear puts on a webhook delivery: hex HMAC-SHA256 of the
/// body, keyed with the webhook secret.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Authgear's `user.disabled` webhook event for `user`, sent now.
pub fn user_disabled(id: &str, user: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "seq": 7,
        "type": "user.disabled",
        "payload": { "user": { "id": user, "is_disabled": true } },
        "context": { "timestamp": unix_now(), "user_id": user, "preferred_languages": [] }
    })
    .to_string()
    .into_bytes()
}

/// Now, in Unix seconds (webhook events' `context.timestamp`).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The first `n` lines of the access log at `path`, once it has them (at most 10 s).
pub async fn access_log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text.lines().take(n).map(str::to_string).collect();
        }
        assert!(
            Instant::now() < deadline,
            "the access log has not {n} lines: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything routed to `app`, and `/static` public with a response cache (`ttl: 60s`).
pub const CACHED_STATIC: &str = r#"
- path: /static
  upstream: app
  auth: public
  cache:
    ttl: 60s
- path: /
  upstream: app
"#;
