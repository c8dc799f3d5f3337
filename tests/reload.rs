//! Hot reload of the running binary (SIGHUP): routes swap under traffic, a broken file changes
//! nothing, unchanged pools keep their health, the cache survives unless its key changes.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

fn two_pools(
    listen: SocketAddr,
    raddr: SocketAddr,
    a: SocketAddr,
    b: SocketAddr,
    route_to: &str,
    extra: &str,
) -> String {
    config_with(
        listen,
        &resolver_at(raddr),
        &format!("upstreams:\n  a:\n    backends: [{a}]\n  b:\n    backends: [{b}]\nroutes:\n  - path: /\n    upstream: {route_to}\n{extra}"),
    )
}

/// The stand-in, two echo backends (pools `a` and `b`), and authgate routing to `a`, with the
/// admin endpoint and `extra` YAML (kept in `admin_yaml` for rewrites).
struct Setup {
    standin: std::sync::Arc<authgate::devserver::standin::Standin>,
    raddr: SocketAddr,
    a: SocketAddr,
    b: SocketAddr,
    admin: SocketAddr,
    admin_yaml: String,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &str) -> Setup {
    let (standin, raddr) = start_standin(Duration::ZERO).await;
    let (a, b) = (start_echo().await, start_echo().await);
    let dir = tempfile::tempdir().unwrap();
    let (admin_yaml, admin) = admin_section(dir.path());
    let admin_yaml = format!("{admin_yaml}{extra}");
    let proxy = start_proxy_with(|l| two_pools(l, raddr, a, b, "a", &admin_yaml));
    wait_for(admin);
    Setup {
        standin,
        raddr,
        a,
        b,
        admin,
        admin_yaml,
        proxy,
        _dir: dir,
    }
}

async fn served_by(proxy: &Proxy) -> String {
    get_as(proxy, "/", "session=sess-bob").await.served_by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_under_traffic_fails_no_request() {
    let Setup {
        standin: _s,
        raddr,
        a,
        b,
        admin,
        admin_yaml,
        proxy,
        _dir,
    } = setup("").await;
    assert_eq!(served_by(&proxy).await, a.to_string());

    let stream = |url: String| async move {
        let c = client();
        let (mut ok, mut failed) = (0, Vec::new());
        let end = Instant::now() + Duration::from_millis(2000);
        while Instant::now() < end {
            match c
                .get(&url)
                .header("cookie", "session=sess-bob")
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push(r.status().to_string()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    };
    let streams: Vec<_> = (0..4)
        .map(|_| tokio::spawn(stream(proxy.url("/"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.rewrite(&two_pools(proxy.addr, raddr, a, b, "b", &admin_yaml));
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(
        served_by(&proxy).await,
        b.to_string(),
        "the new route serves after the reload"
    );
    for st in streams {
        let (ok, failed) = st.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during the reload: {failed:?}"
        );
        assert!(ok > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing() {
    let Setup {
        standin: _s,
        raddr,
        a,
        b,
        admin,
        admin_yaml,
        proxy,
        _dir,
    } = setup("").await;
    // Route to b, but with a typo: the whole file is refused.
    proxy.rewrite(
        &two_pools(proxy.addr, raddr, a, b, "b", &admin_yaml).replace("routes:", "rootes:"),
    );
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"failed\"}", 1.0).await;
    assert_eq!(
        served_by(&proxy).await,
        a.to_string(),
        "the old configuration keeps serving"
    );
    // A listener change is reported, not applied: the old listener keeps serving.
    let elsewhere = closed_port();
    let moved = two_pools(proxy.addr, raddr, a, b, "b", &admin_yaml).replace(
        &format!("addr: {}", proxy.addr),
        &format!("addr: {elsewhere}"),
    );
    proxy.rewrite(&moved);
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_by(&proxy).await, b.to_string());
    assert!(
        std::net::TcpStream::connect(elsewhere).is_err(),
        "a new listener needs a graceful upgrade"
    );
    // ... and reported as such.
    proxy.log_line(&["reload: listen changed", "needs a graceful upgrade"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_pools_keep_their_health() {
    let (_s, raddr) = start_standin(Duration::ZERO).await;
    let live = start_echo().await;
    let dead = closed_port();
    let other = start_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (admin_yaml, admin) = admin_section(dir.path());
    let yaml = |l: SocketAddr, extra_pool: &str| {
        config_with(
            l,
            &resolver_at(raddr),
            &format!(
                "upstreams:\n  app:\n    backends: [{live}, {dead}]\n    health_check:\n      kind: tcp\n      interval: 300ms\n      fall: 2\n{extra_pool}routes:\n  - path: /\n    upstream: app\n{admin_yaml}"
            ),
        )
    };
    let proxy = start_proxy_with(|l| yaml(l, ""));
    wait_for(admin);
    let state = |v: &serde_json::Value, pool: &str, a: SocketAddr| {
        v[pool][a.to_string()].as_str().unwrap_or("?").to_string()
    };
    // Two failed checks (300 ms apart) mark the dead backend down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&admin_get(admin, "/upstreams").await, "app", dead) != "down" {
        assert!(
            Instant::now() < deadline,
            "the dead backend was never marked down"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    proxy.rewrite(&yaml(
        proxy.addr,
        &format!("  other:\n    backends: [{other}]\n"),
    ));
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    let v = admin_get(admin, "/upstreams").await;
    assert_eq!(
        state(&v, "other", other),
        "up",
        "the new pool is there: {v}"
    );
    // A rebuilt pool would start all-healthy and need two checks (300 ms) to see it again.
    assert_eq!(
        state(&v, "app", dead),
        "down",
        "the unchanged pool kept its health: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_a_reload_unless_its_key_changes() {
    let Setup {
        standin,
        raddr,
        a,
        b,
        admin,
        admin_yaml,
        proxy,
        _dir,
    } = setup("").await;
    let calls = || standin.stats.requests.load(Ordering::SeqCst);
    served_by(&proxy).await;
    assert_eq!(calls(), 1);
    // A route change and new TTLs: the answers stay.
    proxy.rewrite(&two_pools(
        proxy.addr,
        raddr,
        a,
        b,
        "b",
        &format!("{admin_yaml}cache:\n  ttl: 20m\n"),
    ));
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_by(&proxy).await, b.to_string());
    assert_eq!(calls(), 1, "a hit after the reload");
    // Another cookie list changes the key: the cache starts empty.
    let keyed = two_pools(proxy.addr, raddr, a, b, "b", &admin_yaml).replace(
        "  read_timeout: 2s",
        "  read_timeout: 2s\n  credential_cookies: [session, app_session]",
    );
    proxy.rewrite(&keyed);
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 2.0).await;
    served_by(&proxy).await;
    assert_eq!(calls(), 2, "a miss after the key changed");
}

/// authgate before a stand-in and an echo backend, with a grace period: in-flight requests (and
/// connections accepted last) get time to finish, since Pingora drops the runtime, and whatever
/// still runs on it, once the grace period ends.
async fn graceful_proxy() -> Proxy {
    let (_, raddr) = start_standin(Duration::ZERO).await;
    let backend = start_echo().await;
    start_proxy_with(|l| {
        config(l, &resolver_at(raddr), &[backend], "")
            .replace("grace_period_seconds: 0", "grace_period_seconds: 3")
    })
}

/// A connection accepted just before the listener stops, whose request has not arrived yet,
/// is served (Pingora alone would close it, unanswered, the moment its listener stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_shutdown_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut proxy = graceful_proxy().await;
    // Accepted: it has answered a first request, then sits idle like a connection whose
    // client has not sent its request yet.
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "GET /a HTTP/1.1\r\nHost: {}\r\nCookie: session=sess-bob\r\n\r\n",
        proxy.addr
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let first = read_response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    proxy.signal("TERM");
    // The listener is closed once a new connection is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conn.write_all(request.as_bytes()).await.unwrap();
    let second = read_response(&mut conn).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "a shutting-down proxy does not keep the connection: {second}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "then it closes: {closed:?}");
    let exited = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(10)));
    assert!(exited.is_some(), "the process did not exit");
}

/// One HTTP/1.1 response with a Content-Length body, read from a kept connection.
async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
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

/// Pingora's zero-downtime upgrade: a new process started with `-u` takes the listening
/// sockets when the old one gets `SIGQUIT`; a steady stream of new connections sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_drops_no_request() {
    let mut old = graceful_proxy().await;
    let url = old.url("/");
    // A new connection per request: every request needs a listening socket that accepts.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Three streams open a connection per request; one keeps its connection alive, so it is
    // told `Connection: close` by the old process and moves to the new one.
    let limit = Duration::from_secs(30);
    let streams: Vec<_> = [fresh.clone(), fresh.clone(), fresh.clone(), client()]
        .into_iter()
        .map(|c| {
            let run = steady_stream(c, url.clone(), "session=sess-bob", stop.clone(), limit);
            tokio::spawn(run)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process waits on the upgrade socket for the old one's listeners.
    let sock = old.dir.path().join("upgrade.sock");
    let _new = Killed(
        std::process::Command::new(binary())
            .args(["-u", "-c", &old.conf().display().to_string()])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened {}",
            sock.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    old.signal("QUIT");
    let exited = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(25)));
    assert!(exited.is_some(), "the old process did not exit");
    // Keep the stream going a little on the new process alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for st in streams {
        let (ok, failed) = st.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during the upgrade: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 10, "only {total} requests ran");
    let e = send_echo(fresh.get(&url).header("cookie", "session=sess-alice")).await;
    assert_eq!(
        e.header_values("x-authgear-user-id"),
        ["user-alice"],
        "the new process serves"
    );
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_the_file_reloads_without_a_signal() {
    let Setup {
        standin: _s,
        raddr,
        a,
        b,
        admin,
        admin_yaml: watch,
        proxy,
        _dir,
    } = setup("reload:\n  watch: true\n  interval: 100ms\n").await;
    assert_eq!(served_by(&proxy).await, a.to_string());
    proxy.rewrite(&two_pools(proxy.addr, raddr, a, b, "b", &watch));
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_by(&proxy).await, b.to_string());
}

/// Daemon mode with a pid file and an error log, all from the YAML file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_writes_its_pid_file_and_error_log() {
    let Stack {
        resolver: raddr,
        backend,
        ..
    } = stack().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = closed_port();
    let pid_file = dir.path().join("authgate.pid");
    let error_log = dir.path().join("error.log");
    let yaml = fill(
        &config(listen, &resolver_at(raddr), &[backend], ""),
        dir.path(),
    )
    .replace(
        &format!("pid_file: {}", dir.path().join("pid").display()),
        &format!("pid_file: {}", pid_file.display()),
    )
    .replace(
        "pingora:\n",
        &format!(
            "pingora:\n  daemon: true\n  error_log: {}\n",
            error_log.display()
        ),
    );
    let conf = dir.path().join("authgate.yaml");
    std::fs::write(&conf, yaml).unwrap();
    let status = std::process::Command::new(binary())
        .args(["-c", &conf.display().to_string()])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the launching process returns once the daemon runs"
    );
    wait_for(listen);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let e = send_echo(
        client()
            .get(format!("http://{listen}/"))
            .header("cookie", "session=sess-bob"),
    )
    .await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-bob"]);
    assert!(error_log.exists(), "error log at {}", error_log.display());
    signal(pid, "INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_ok() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
