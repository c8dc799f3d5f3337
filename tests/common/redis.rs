//! Fleet harness: real `redis-server` processes on loopback ports, a TCP proxy that makes Redis
//! slow on demand, and several authgate instances in one fleet in front of one stand-in
//! resolver and one echo backend.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::devserver::standin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    closed_port, dedent, echoed, fetch_as, jwt_section, listener, metric, metric_reaches, scrape,
    start_echo, start_standin, Pool, Stack,
};

/// The fleet's `timeout` in tests that do not set one (see `FleetBuilder::start`).
const DEFAULT_TIMEOUT: &str = "250ms";

/// A `redis-server` of the test's own on a free loopback port (never 6379), without
/// persistence; killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut last = String::new();
        // The port is free when chosen; another process may take it before redis binds it.
        for _ in 0..5 {
            let mut server = RedisServer::unstarted(closed_port().port());
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Starts one on `port` (a port the test chose, e.g. one an instance already points at).
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer::unstarted(port);
        if let Err(e) = server.spawn() {
            panic!("redis-server did not start on port {port}: {e}");
        }
        server
    }

    fn unstarted(port: u16) -> RedisServer {
        assert_ne!(port, 6379, "tests never use the system redis port");
        RedisServer {
            port,
            dir: tempfile::tempdir().expect("redis tempdir"),
            child: None,
        }
    }

    /// Runs redis-server on this server's port and waits (at most 10 s) for a PONG.
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("redis log file: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("cannot run redis-server ({e}); `make test` installs it, or apt-get install redis-server")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pings(self.addr()) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("redis-server exited ({status}):\n{}", self.log()));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server did not answer PING within 10 s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A client of this server, for the test's own commands.
    pub fn client(&self) -> ::redis::Client {
        ::redis::Client::open(self.url()).expect("redis client")
    }

    /// A synchronous connection, for the test's own commands.
    pub fn connection(&self) -> ::redis::Connection {
        self.client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to the test's redis")
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "redis-server did not restart on port {}: {e}",
                    self.port
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// What redis-server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log (port {}) ---\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// A real PING on a fresh connection to `addr` answered by PONG.
fn pings(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 7 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"+PONG\r\n")
}

/// A TCP proxy on a loopback port in front of `target` (Redis) that holds every chunk, either
/// way, for `delay_ms` before forwarding it; 0 is transparent. Stops when dropped.
pub struct DelayProxy {
    pub addr: SocketAddr,
    pub delay_ms: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl DelayProxy {
    pub async fn start(target: SocketAddr) -> DelayProxy {
        let (l, addr) = listener().await;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (delay, handles) = (delay_ms.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(client_read, server_write, delay.clone()));
                let down = tokio::spawn(pipe(server_read, client_write, delay.clone()));
                let mut h = handles.lock().expect("delay proxy tasks");
                h.push(up.abort_handle());
                h.push(down.abort_handle());
            }
        });
        tasks
            .lock()
            .expect("delay proxy tasks")
            .push(accept.abort_handle());
        DelayProxy {
            addr,
            delay_ms,
            tasks,
        }
    }

    /// Every chunk from now on waits `delay` before it is forwarded.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The proxy as a Redis URL: `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

pub const FLEET_UP: &str = "authgate_fleet_up";
pub const BUS_SENT: &str = r#"authgate_fleet_bus_messages_total{result="sent"}"#;
pub const BUS_APPLIED: &str = r#"authgate_fleet_bus_messages_total{result="applied"}"#;
pub const BUS_REJECTED: &str = r#"authgate_fleet_bus_messages_total{result="rejected"}"#;
pub const SHARED_HIT: &str = r#"authgate_fleet_shared_cache_total{result="hit"}"#;
pub const SHARED_MISS: &str = r#"authgate_fleet_shared_cache_total{result="miss"}"#;
pub const SHARED_REJECTED: &str = r#"authgate_fleet_shared_cache_total{result="rejected"}"#;
pub const SHARED_ERROR: &str = r#"authgate_fleet_shared_cache_total{result="error"}"#;
pub const SHARED_WRITES: &str = "authgate_fleet_shared_cache_writes_total";

/// How one request's answer was found, judged from the outside: the stand-in's request count
/// and the instance's shared-cache hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Neither the resolver nor Redis: the instance's own cache.
    Local,
    /// From another instance's answer in Redis.
    Shared,
    /// The resolver was called.
    Resolved,
}

/// How a test asks for a fleet: `nodes` instances (2 unless told) sharing one stand-in, one
/// echo backend, one Redis and one fleet secret.
pub struct FleetBuilder {
    dir: tempfile::TempDir,
    redis_url: String,
    nodes: usize,
    latency: Duration,
    prefix: String,
    timeout: Option<String>,
    /// Further keys under `fleet:` (two spaces in).
    fleet_keys: String,
    cache: String,
    routes: Option<String>,
    admin_keys: String,
    access_log: bool,
    extra: String,
    wait_up: bool,
    jwt: bool,
}

impl FleetBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// The stand-in answers after `latency`.
    pub fn resolver_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// `fleet.prefix` (default `authgate:`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// `fleet.timeout` (`20ms` style); `DEFAULT_TIMEOUT` when not given.
    pub fn timeout(mut self, timeout: &str) -> Self {
        self.timeout = Some(timeout.to_string());
        self
    }

    /// Further keys under `fleet:`, e.g. `shared_cache: false`.
    pub fn fleet_keys(mut self, yaml: &str) -> Self {
        for line in dedent(yaml).lines() {
            self.fleet_keys.push_str(&format!("  {line}\n"));
        }
        self
    }

    /// The whole `cache:` section, instead of a 10 m TTL without refresh-ahead.
    pub fn cache(mut self, yaml: &str) -> Self {
        self.cache = dedent(yaml);
        self
    }

    /// The whole `routes:` body, instead of everything to `app`.
    pub fn routes(mut self, yaml: &str) -> Self {
        self.routes = Some(yaml.to_string());
        self
    }

    /// Keys under every instance's `admin:` (`webhook:` ...).
    pub fn admin_keys(mut self, yaml: &str) -> Self {
        self.admin_keys.push_str(&dedent(yaml));
        self
    }

    /// Every instance writes a JSON access log (see `Fleet::access_log`).
    pub fn access_log(mut self) -> Self {
        self.access_log = true;
        self
    }

    /// Further top-level sections for every instance.
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.extra.push_str(&dedent(yaml));
        self
    }

    /// Do not wait for the instances to connect to Redis (it is down on purpose).
    pub fn without_waiting_for_redis(mut self) -> Self {
        self.wait_up = false;
        self
    }

    /// Writes `contents` to `name` in the fleet's folder; its absolute path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write a file for the fleet");
        path
    }

    /// Local JWT validation on every instance, with the stand-in's keys.
    pub fn jwt(mut self) -> Self {
        self.jwt = true;
        self
    }

    pub async fn start(self) -> Fleet {
        let (standin, resolver) = start_standin(self.latency).await;
        let jwt = if self.jwt {
            jwt_section(resolver, "")
        } else {
            String::new()
        };
        let echo = start_echo().await;
        let secret: [u8; 32] = rand::random();
        let secret_file = self.file("fleet-secret", &format!("{}\n", hex::encode(secret)));
        // Not the shipped 20 ms: on a loaded 2-core machine (a build beside the tests) Redis
        // answers late now and then, the instance marks it slow and skips the shared cache
        // for a second, and a test waiting for a shared answer or a write-through times out.
        // Tests of a slow Redis set their own.
        let timeout = format!(
            "  timeout: {}\n",
            self.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT)
        );
        let fleet_section = format!(
            "fleet:\n  redis:\n    url: {}\n  secret_file: {}\n  prefix: \"{}\"\n{timeout}{}",
            self.redis_url,
            secret_file.display(),
            self.prefix,
            self.fleet_keys
        );
        let mut nodes = Vec::new();
        for _ in 0..self.nodes {
            let mut b = Stack::builder()
                .resolver(resolver)
                .pool("app", Pool::at(&[echo]))
                .admin_keys(&self.admin_keys)
                .yaml(&fleet_section)
                .yaml(&self.cache)
                .yaml(&jwt)
                .yaml(&self.extra);
            if let Some(routes) = &self.routes {
                b = b.routes(routes);
            }
            if self.access_log {
                let path = b.path("access.log");
                b = b.yaml(&format!("access_log:\n  path: {}\n", path.display()));
            }
            nodes.push(b.start().await);
        }
        let fleet = Fleet {
            standin,
            resolver,
            echo,
            nodes,
            prefix: self.prefix,
            secret_file,
            _dir: self.dir,
        };
        if self.wait_up {
            for i in 0..fleet.nodes.len() {
                fleet.reaches(i, FLEET_UP, 1.0).await;
            }
        }
        fleet
    }
}

/// Several authgate instances in one fleet; each is a `Stack` (admin listener on) without a
/// stand-in of its own: the fleet's stand-in counts resolver calls across all of them.
pub struct Fleet {
    pub standin: Arc<standin::Standin>,
    pub resolver: SocketAddr,
    pub echo: SocketAddr,
    pub nodes: Vec<Stack>,
    /// `fleet.prefix`: keys are `<prefix>a:...`, the bus is `<prefix>bus`.
    pub prefix: String,
    pub secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// A fleet of instances using Redis at `redis_url`.
    pub fn builder(redis_url: &str) -> FleetBuilder {
        FleetBuilder {
            dir: tempfile::tempdir().expect("fleet tempdir"),
            redis_url: redis_url.to_string(),
            nodes: 2,
            latency: Duration::ZERO,
            prefix: "authgate:".to_string(),
            timeout: None,
            fleet_keys: String::new(),
            cache: dedent(
                r#"
                cache:
                  ttl: 10m
                  refresh_after: 0s
                "#,
            ),
            routes: None,
            admin_keys: String::new(),
            access_log: false,
            extra: String::new(),
            wait_up: true,
            jwt: false,
        }
    }

    pub fn node(&self, i: usize) -> &Stack {
        &self.nodes[i]
    }

    pub fn admin(&self, i: usize) -> SocketAddr {
        self.nodes[i].admin()
    }

    /// The bus channel.
    pub fn channel(&self) -> String {
        format!("{}bus", self.prefix)
    }

    /// Requests the stand-in answered, across the fleet.
    pub fn resolver_calls(&self) -> u64 {
        self.standin.stats.requests.load(Ordering::SeqCst)
    }

    /// One series of instance `i`'s metrics (0 when absent).
    pub async fn metric(&self, i: usize, series: &str) -> f64 {
        metric(&scrape(self.admin(i)).await, series)
    }

    /// Waits (at most 10 s) until instance `i`'s `series` is `want`.
    pub async fn reaches(&self, i: usize, series: &str, want: f64) {
        metric_reaches(self.admin(i), series, want).await;
    }

    /// Sends `GET /` with `cookie` to instance `i`, checks that the backend received the user
    /// `user` (none when empty), and says how the answer was found.
    pub async fn lookup(&self, i: usize, cookie: &str, user: &str) -> Lookup {
        let calls = self.resolver_calls();
        let hits = self.metric(i, SHARED_HIT).await;
        let e = echoed(fetch_as(&self.nodes[i].proxy, "/", cookie).await).await;
        let want: Vec<&str> = if user.is_empty() { vec![] } else { vec![user] };
        assert_eq!(
            e.header_values("x-authgear-user-id"),
            want,
            "the identity instance {i} forwarded for {cookie}"
        );
        let called = self.resolver_calls() - calls;
        let shared = (self.metric(i, SHARED_HIT).await - hits) as i64;
        match (called, shared) {
            (0, 0) => Lookup::Local,
            (0, 1) => Lookup::Shared,
            (1, 0) => Lookup::Resolved,
            _ => panic!(
                "one request on instance {i} made {called} resolver calls and {shared} shared hits"
            ),
        }
    }

    /// `lookup`, which must call the resolver; then waits (at most 10 s) until the instance
    /// has written the answer to Redis, so that the next instance asking finds it there.
    pub async fn resolve(&self, i: usize, cookie: &str, user: &str) {
        let writes = self.metric(i, SHARED_WRITES).await;
        assert_eq!(
            self.lookup(i, cookie, user).await,
            Lookup::Resolved,
            "{cookie} on instance {i}"
        );
        self.reaches(i, SHARED_WRITES, writes + 1.0).await;
    }

    /// Instance `i`'s access log lines so far, as JSON (needs `access_log()`).
    pub fn access_log(&self, i: usize) -> Vec<serde_json::Value> {
        let path = self.nodes[i].proxy.dir.path().join("access.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// `POST` an admin path of instance `i` with the token and `body`; the status and body.
    pub async fn admin_post(&self, i: usize, path: &str, body: &str) -> (u16, String) {
        let r = super::client()
            .post(format!("http://{}{path}", self.admin(i)))
            .bearer_auth(super::ADMIN_TOKEN)
            .body(body.to_string())
            .send()
            .await
            .expect("admin request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("admin answer"))
    }
}
