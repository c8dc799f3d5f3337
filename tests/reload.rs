//! Hot reload of the running binary (SIGHUP): routes swap under traffic, a broken file changes
//! nothing, unchanged pools keep their health, the cache survives unless its key changes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// Two echo backends, in pools `a` and `b`, everything routed to `a`, and the admin listener.
fn two_pools() -> StackBuilder {
    Stack::builder()
        .pool("a", Pool::echoes(1))
        .pool("b", Pool::echoes(1))
        .routes(&all_to("a"))
        .admin()
}

async fn served_by(proxy: &Proxy) -> String {
    get_as(proxy, "/", "session=sess-bob").await.served_by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_under_traffic_fails_no_request() {
    let s = two_pools().start().await;
    let (proxy, admin, a, b) = (&s.proxy, s.admin(), s.backends[0], s.backends[1]);
    assert_eq!(served_by(proxy).await, a.to_string());

    let clients = (0..4).map(|_| client()).collect();
    let streams = Streams::start(
        clients,
        &proxy.url("/"),
        "session=sess-bob",
        Duration::from_millis(2000),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.rewrite(&s.config.with_routes(&all_to("b")));
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(
        served_by(proxy).await,
        b.to_string(),
        "the new route serves after the reload"
    );
    for ok in streams.no_failures("during the reload").await {
        assert!(ok > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing() {
    let s = two_pools().start().await;
    let (proxy, admin, a, b) = (&s.proxy, s.admin(), s.backends[0], s.backends[1]);
    // Route to b, but with a typo: the whole file is refused.
    let to_b = s.config.with_routes(&all_to("b"));
    proxy.rewrite(&to_b.render().replace("routes:", "rootes:"));
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"failed\"}", 1.0).await;
    assert_eq!(
        served_by(proxy).await,
        a.to_string(),
        "the old configuration keeps serving"
    );
    // A listener change is reported, not applied: the old listener keeps serving.
    let elsewhere = closed_port();
    let mut moved = to_b;
    moved.listen = dedent(&format!("- addr: {elsewhere}"));
    s.rewrite(&moved);
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_by(proxy).await, b.to_string());
    assert!(
        std::net::TcpStream::connect(elsewhere).is_err(),
        "a new listener needs a graceful upgrade"
    );
    // ... and reported as such.
    proxy.log_line(&["reload: listen changed", "needs a graceful upgrade"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_pools_keep_their_health() {
    let live = start_echo().await;
    let dead = closed_port();
    let other = start_echo().await;
    let s = Stack::builder()
        .pool(
            "app",
            Pool::at(&[live, dead]).keys(
                r#"
                health_check:
                  kind: tcp
                  interval: 300ms
                  fall: 2
                "#,
            ),
        )
        .admin()
        .start()
        .await;
    let (proxy, admin) = (&s.proxy, s.admin());
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
    let mut more = s.config.clone();
    more.upstreams.push_str(&upstream("other", &[other], ""));
    s.rewrite(&more);
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
    let s = two_pools().start().await;
    let (proxy, admin, b) = (&s.proxy, s.admin(), s.backends[1]);
    let calls = || s.resolver_calls();
    served_by(proxy).await;
    assert_eq!(calls(), 1);
    // A route change and new TTLs: the answers stay.
    let to_b = s.config.with_routes(&all_to("b"));
    s.rewrite(&to_b.with_yaml(
        r#"
        cache:
          ttl: 20m
        "#,
    ));
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_by(proxy).await, b.to_string());
    assert_eq!(calls(), 1, "a hit after the reload");
    // Another cookie list changes the key: the cache starts empty.
    let mut keyed = to_b;
    keyed
        .resolver
        .push_str(&dedent("credential_cookies: [session, app_session]"));
    s.rewrite(&keyed);
    proxy.signal("HUP");
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 2.0).await;
    served_by(proxy).await;
    assert_eq!(calls(), 2, "a miss after the key changed");
}

/// The usual stack with a grace period: in-flight requests (and connections accepted last) get
/// time to finish, since Pingora drops the runtime, and whatever still runs on it, once the
/// grace period ends.
async fn graceful_stack() -> Stack {
    Stack::builder().grace_period_seconds(3).start().await
}

/// A connection accepted just before the listener stops, whose request has not arrived yet,
/// is served (Pingora alone would close it, unanswered, the moment its listener stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_shutdown_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = graceful_stack().await;
    let proxy = &mut s.proxy;
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

/// Pingora's zero-downtime upgrade: a new process started with `-u` takes the listening
/// sockets when the old one gets `SIGQUIT`; a steady stream of new connections sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_drops_no_request() {
    let mut s = graceful_stack().await;
    let old = &mut s.proxy;
    let url = old.url("/");
    // A new connection per request: every request needs a listening socket that accepts.
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // Three streams open a connection per request; one keeps its connection alive, so it is
    // told `Connection: close` by the old process and moves to the new one.
    let streams = Streams::start(
        vec![fresh.clone(), fresh.clone(), fresh.clone(), client()],
        &url,
        "session=sess-bob",
        Duration::from_secs(30),
    );
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
    streams.stop();
    let total: usize = streams.no_failures("during the upgrade").await.iter().sum();
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
    let s = two_pools()
        .yaml(
            r#"
            reload:
              watch: true
              interval: 100ms
            "#,
        )
        .start()
        .await;
    let (proxy, admin, a, b) = (&s.proxy, s.admin(), s.backends[0], s.backends[1]);
    assert_eq!(served_by(proxy).await, a.to_string());
    s.rewrite(&s.config.with_routes(&all_to("b")));
    metric_reaches(admin, "authgate_reloads_total{result=\"ok\"}", 1.0).await;
    assert_eq!(served_by(proxy).await, b.to_string());
}

/// Daemon mode with a pid file and an error log, all from the YAML file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_writes_its_pid_file_and_error_log() {
    // The launching process exits once the daemon runs: not a proxy `Stack` can wait for.
    let (_standin, raddr) = start_standin(Duration::ZERO).await;
    let backend = start_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let listen = closed_port();
    let pid_file = dir.path().join("pid");
    let error_log = dir.path().join("error.log");
    let mut config = Config::new(listen, raddr, &[backend]);
    config.pingora = dedent(&format!(
        r#"
        daemon: true
        error_log: {}
        "#,
        error_log.display()
    ));
    let conf = dir.path().join("authgate.yaml");
    std::fs::write(&conf, fill(&config.render(), dir.path())).unwrap();
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
