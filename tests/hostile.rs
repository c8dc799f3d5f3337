//! Requests an attacker would send, end to end through the binary: request-line forms a
//! lenient framework reads differently, inputs that hold connections open, a resolver that
//! reads cookies loosely, configuration numbers without bounds, backends that close idle
//! connections.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A peer on loopback that answers each request head with `reply(head)`; keeps the
/// connection open unless the reply says `Connection: close`. Records every head.
struct RawPeer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawPeer {
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

async fn raw_peer(reply: fn(&str) -> String) -> RawPeer {
    let (l, addr) = listener().await;
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let head = String::from_utf8_lossy(&head).into_owned();
                    seen.lock().expect("heads").push(head.clone());
                    let answer = reply(&head);
                    if s.write_all(answer.as_bytes()).await.is_err()
                        || answer.contains("Connection: close")
                    {
                        return;
                    }
                }
            });
        }
    });
    RawPeer { addr, heads }
}

/// A backend that answers 200 and closes; what it read is in `heads`.
fn ok_and_close(_: &str) -> String {
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".into()
}

/// How a lenient framework (Werkzeug, Express, Rails) reads a request head: method folded
/// to upper case (or taken from an override header), a target without `/` read as a path,
/// an absolute-form target's authority as the host, dot segments resolved.
fn lenient_reading(head: &str) -> (String, String, String) {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let mut method = parts.next().unwrap_or_default().to_ascii_uppercase();
    let target = parts.next().unwrap_or_default().to_string();
    let mut host = String::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            let n = n.trim().to_ascii_lowercase();
            if n == "host" {
                host = v.trim().to_ascii_lowercase();
            }
            if n == "x-http-method-override" {
                method = v.trim().to_ascii_uppercase();
            }
        }
    }
    let mut path = target.split('?').next().unwrap_or_default().to_string();
    if let Some(i) = path.find("://") {
        let rest = &path[i + 3..];
        let (auth, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        host = auth.to_ascii_lowercase();
        path = p.to_string();
    } else if let Some((scheme, rest)) = path.split_once(':') {
        if !scheme.contains('/') {
            path = rest.to_string();
        }
    }
    let mut segs: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    // Case-insensitive, trailing-dot-dropping, suffix-matching: the loosest reading.
    let path = format!("/{}", segs.join("/")).to_ascii_lowercase();
    let path = path.replace("%20", "");
    let path = match path.rsplit_once('/') {
        Some((dir, last)) => match last.find('.') {
            Some(0) | None => path.clone(),
            Some(dot) => format!("{dir}/{}", &last[..dot]),
        },
        None => path.clone(),
    };
    (method, host, path)
}

/// Whether a lenient reading lands on a resource only a valid session may reach.
fn protected(reading: &(String, String, String)) -> bool {
    let (method, host, path) = reading;
    path.starts_with("/private")
        || host.split(':').next() == Some("secure.example")
        || (method == "DELETE" && path.starts_with("/items"))
        || (matches!(method.as_str(), "GET" | "HEAD") && path.starts_with("/reports"))
}

const GUARDED_ROUTES: &str = r#"
- path: /
  upstream: app
  auth: public
- path: /private
  upstream: app
  auth: require
- host: secure.example
  path: /
  upstream: app
  auth: require
- path: /items
  methods: [DELETE]
  upstream: app
  auth: require
  roles: [admin]
- path: /reports
  methods: [GET]
  upstream: app
  auth: require
"#;

/// A stack with everything routed to `app` without asking the resolver.
fn public() -> StackBuilder {
    Stack::builder().routes(ALL_PUBLIC)
}

/// A public stack in front of `backend`.
async fn public_before(backend: SocketAddr) -> Stack {
    public().pool("app", Pool::at(&[backend])).start().await
}

/// A recording backend, and a stack with the guarded routes in front of it.
async fn guarded_stack() -> (RawPeer, Stack) {
    let backend = raw_peer(ok_and_close).await;
    let stack = Stack::builder()
        .pool("app", Pool::at(&[backend.addr]))
        .routes(GUARDED_ROUTES)
        .start()
        .await;
    (backend, stack)
}

/// Sends `request` raw, expects the backend's 200, and returns the head the backend read.
async fn forwarded_head(proxy: &Proxy, backend: &RawPeer, request: &[u8]) -> String {
    let answer = raw(proxy.addr, request, b"\r\n\r\n").await;
    assert_eq!(status(&answer), 200, "{}", String::from_utf8_lossy(&answer));
    backend.heads().pop().unwrap_or_default()
}

/// The status code of a raw exchange, 0 when the connection closed without an answer.
fn status(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_line_form_reaches_a_guarded_resource_without_a_session() {
    let (backend, s) = guarded_stack().await;
    let proxy = &s.proxy;
    let attacks: &[&[u8]] = &[
        // 1. absolute-form without Host, HTTP/1.1 and HTTP/1.0, and with a matching Host.
        b"GET http://secure.example/x HTTP/1.1\r\n\r\n",
        b"GET http://secure.example/x HTTP/1.0\r\n\r\n",
        b"GET HTTP://SECURE.EXAMPLE./x HTTP/1.0\r\n\r\n",
        b"GET http://secure.example/x HTTP/1.1\r\nHost: secure.example\r\n\r\n",
        b"GET http://secure.example HTTP/1.0\r\n\r\n",
        // 2. targets that do not start with `/`.
        b"GET private HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET x:/private HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET a/../private HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET ./private HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET ftp://a/private HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/../private HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: secure.example\r\n\r\n",
        // 3. method spellings and overrides.
        b"delete /items HTTP/1.1\r\nHost: a\r\n\r\n",
        b"Delete /items HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /items HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n",
        b"POST /items?_method=delete HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"HEAD /reports HTTP/1.1\r\nHost: a\r\n\r\n",
        b"get /reports HTTP/1.1\r\nHost: a\r\n\r\n",
        // Paths a case-insensitive (Express, IIS) or suffix-matching (Spring) backend
        // would serve as /private.
        b"GET /PRIVATE HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /Private/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /private. HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /private%20 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /private.json HTTP/1.1\r\nHost: a\r\n\r\n",
        // Hosts a backend would read as secure.example.
        b"GET / HTTP/1.1\r\nHost: SECURE.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: secure.example.:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: secure.example\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: secure.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: secure%2eexample\r\n\r\n",
    ];
    for attack in attacks {
        let before = backend.heads().len();
        let answer = raw(proxy.addr, attack, b"\r\n\r\n").await;
        let code = status(&answer);
        let text = String::from_utf8_lossy(attack);
        assert!(code != 0, "no answer to {text:?}");
        for head in &backend.heads()[before..] {
            let reading = lenient_reading(head);
            assert!(
                !protected(&reading),
                "{text:?} reached the backend as {reading:?} without a session (status {code}):\n{head}"
            );
        }
        if code < 400 {
            assert!(
                !protected(&lenient_reading(&text)),
                "{text:?} answered {code}"
            );
        }
    }
    // The guarded resources are reachable with a session, in their plain spelling.
    let last = forwarded_head(
        proxy,
        &backend,
        b"GET http://secure.example/x HTTP/1.0\r\nCookie: session=sess-alice\r\n\r\n",
    )
    .await;
    assert!(last.starts_with("GET /x HTTP/1.1"), "{last}");
    assert!(
        last.to_ascii_lowercase().contains("host: secure.example"),
        "{last}"
    );
    assert!(last.contains("user-alice"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gets_one_canonical_request() {
    let (backend, s) = guarded_stack().await;
    let proxy = &s.proxy;
    let head = forwarded_head(
        proxy,
        &backend,
        b"POST /x HTTP/1.1\r\nHost: A.Example.\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    let lower = head.to_ascii_lowercase();
    assert_eq!(lower.matches("content-length:").count(), 1, "{head}");
    assert!(lower.contains("host: a.example\r\n"), "{head}");
}

/// A resolver that reads cookie names in any case and splits on `,` as well as `;` (as
/// nginx's `$cookie_` does): `Session=valid-mallory` is mallory's session to it.
fn loose_resolver(head: &str) -> String {
    let cookie = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v.trim().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let mallory = cookie.split([';', ',']).any(|p| {
        p.trim()
            .split_once('=')
            .is_some_and(|(n, v)| n.eq_ignore_ascii_case("session") && v == "valid-mallory")
    });
    if mallory {
        "HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: true\r\nX-Authgear-User-Id: mallory\r\nContent-Length: 0\r\n\r\n".into()
    } else {
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loosely_read_cookie_never_lends_its_identity_to_a_shared_key() {
    let resolver = raw_peer(loose_resolver).await;
    let s = Stack::builder().resolver(resolver.addr).start().await;
    let proxy = &s.proxy;
    let send = |auth: &'static str, cookie: Option<&'static str>| {
        let mut r = client().get(proxy.url("/")).header("authorization", auth);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        send_echo(r)
    };
    for cookie in ["Session=valid-mallory", "x=1, session=valid-mallory"] {
        let e = send("Bearer undefined", Some(cookie)).await;
        assert_eq!(
            e.header_values("x-authgear-user-id"),
            ["mallory"],
            "{cookie}"
        );
        for victim in ["Bearer undefined"] {
            let e = send(victim, None).await;
            assert!(
                e.header_values("x-authgear-user-id").is_empty(),
                "{victim} was served mallory's answer stored under {cookie:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_answer_with_two_user_ids_is_refused_and_flags_are_canonical() {
    fn two_ids(_: &str) -> String {
        "HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: true\r\nX-Authgear-User-Id: alice\r\nX-Authgear-User-Id: admin\r\nContent-Length: 0\r\n\r\n".into()
    }
    fn shouting(_: &str) -> String {
        "HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: TRUE\r\nX-Authgear-User-Id: alice\r\nContent-Length: 0\r\n\r\n".into()
    }
    let resolver = raw_peer(two_ids).await;
    let s = Stack::builder().resolver(resolver.addr).start().await;
    let r = fetch_as(&s.proxy, "/", "session=x").await;
    assert_eq!(r.status(), 502);
    let resolver = raw_peer(shouting).await;
    let s = Stack::builder().resolver(resolver.addr).start().await;
    let e = get_as(&s.proxy, "/", "session=x").await;
    assert_eq!(e.header_values("x-authgear-session-valid"), ["true"]);
}

/// Reads until the server closes the connection (or resets it); `None` if it is still open
/// after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    let closed = async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|_| started.elapsed())
}

/// A connection that has had one request answered (the echo's JSON) and is kept alive.
async fn kept_alive(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&got, b"}").is_none() {
        let n = s.read(&mut chunk).await.expect("answer");
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&chunk[..n]);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed() {
    let s = public()
        .yaml(
            r#"
            client:
              header_timeout: 1s
              keepalive_timeout: 1s
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;

    // Idle keep-alive: closed about a second after its answer.
    let mut s = kept_alive(proxy.addr).await;
    let idle = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(
        idle.is_some_and(|d| d >= Duration::from_millis(900)),
        "idle keep-alive connection: {idle:?}"
    );

    // A header sent one byte at a time, each well within any per-read timeout.
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let started = Instant::now();
    let header = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in header.iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("answered a header that never completed in time"),
            Err(_) => {}
        }
    }
    assert!(closed, "a slow header was held until it completed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "held {:?}",
        started.elapsed()
    );

    // A connection that sends nothing at all.
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let silent = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(silent.is_some(), "a silent connection was held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_the_cap_frees_up() {
    let s = public()
        .yaml(
            r#"
            client:
              max_connections: 4
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;
    let mut held = Vec::new();
    for _ in 0..4 {
        // Each one answered once, so authgate has surely counted it.
        held.push(kept_alive(proxy.addr).await);
    }
    let over = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"\r\n\r\n",
    )
    .await;
    assert!(over.is_empty(), "a fifth connection was served");
    held.pop();
    // The closed connection's place comes back once authgate has seen it close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = raw(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"\r\n\r\n",
        )
        .await;
        if status(&again) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the cap never freed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_drops_reused_connections_costs_no_request() {
    // Every connection answers one request, then closes on the next without answering:
    // each reuse fails before any response byte, as when a backend's idle timeout fires
    // while authgate sends.
    let (backend, calls) = start_canned_with(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::ZERO,
        false,
    )
    .await;
    let s = public_before(backend).await;
    let proxy = &s.proxy;
    let c = client();
    for i in 0..20 {
        let r = c.get(proxy.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    // Not replayed: a POST on a stale connection is refused, not sent twice.
    let r = c
        .post(proxy.url("/"))
        .body("x")
        .send()
        .await
        .expect("request");
    assert!(r.status() == 200 || r.status() == 502, "{}", r.status());
}

/// A backend with a short keep-alive timeout under steady load: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_a_short_keepalive_timeout_under_load_costs_no_request() {
    let (l, backend) = listener().await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // Idle for 30 ms: closed, as Node's or gunicorn's keep-alive timeouts do.
                let idle = Duration::from_millis(30);
                while let Ok(Some(_)) =
                    tokio::time::timeout(idle, read_head(&mut s, &mut buf)).await
                {
                    let reply: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let s = public_before(backend).await;
    let proxy = &s.proxy;
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (url, failures, done) = (proxy.url("/"), failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while Instant::now() < until {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                // Pauses around the backend's idle timeout, so reuse races its close.
                i += 1;
                let pause = (i * 7 + t * 13) % 45;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    assert!(done.load(Ordering::SeqCst) > 50);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "of {} requests",
        done.load(Ordering::SeqCst)
    );
}

/// A cache capacity beyond any bound.
const HUGE_CAPACITY: &str = r#"
cache:
  capacity: 18446744073709551615
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_numbers_out_of_bounds_are_errors_not_aborts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, field) in [
        (HUGE_CAPACITY, "cache.capacity"),
        (
            r#"
            client:
              max_connections: 0
            "#,
            "client.max_connections",
        ),
    ] {
        let conf = dir.path().join("bad.yaml");
        // `-t` reads the file only: no peer needs to listen at these addresses.
        let config = Config::new(closed_port(), closed_port(), &[closed_port()]).with_yaml(extra);
        std::fs::write(&conf, fill(&config.render(), dir.path())).expect("write");
        let out = std::process::Command::new(binary())
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .expect("run -t");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(field) && err.contains("out of range"), "{err}");
    }

    // A running server keeps serving after a reload with such a number.
    let stack = Stack::builder().admin().start().await;
    let before = metric(
        &scrape(stack.admin()).await,
        "authgate_reloads_total{result=\"failed\"}",
    );
    stack.rewrite(&stack.config.with_yaml(HUGE_CAPACITY));
    stack.proxy.signal("HUP");
    metric_reaches(
        stack.admin(),
        "authgate_reloads_total{result=\"failed\"}",
        before + 1.0,
    )
    .await;
    let e = get_as(&stack.proxy, "/", "session=sess-alice").await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_backend_exchanges_are_counted_by_upstream() {
    let s = public()
        .pool("app", Pool::at(&[closed_port()]))
        .admin()
        .start()
        .await;
    let (proxy, admin) = (&s.proxy, s.admin());
    let series = "authgate_upstream_errors_total{upstream=\"app\"}";
    let before = metric(&scrape(admin).await, series);
    let r = fetch(proxy, "/").await;
    assert_eq!(r.status(), 502);
    metric_reaches(admin, series, before + 1.0).await;
}

/// A TLS connection that never sends its ClientHello is closed within the header timeout
/// (Pingora's own handshake timeout is a fixed 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_starts_is_closed() {
    let (stack, _ca) = public().tls(&["authgate.test"]);
    let s = stack
        .yaml(
            r#"
            client:
              header_timeout: 1s
            "#,
        )
        .start()
        .await;
    let mut silent = TcpStream::connect(s.proxy.addr).await.expect("connect");
    let held = closed_within(&mut silent, Duration::from_secs(20)).await;
    assert!(
        held.is_some_and(|d| d < Duration::from_secs(5)),
        "a silent TLS connection was held: {held:?}"
    );
}

/// A header that never ends is cut near `client.max_header_bytes`, not read up to Pingora's
/// 1 MiB: what one connection can make authgate buffer is bounded by the operator's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_header_is_cut_near_the_limit() {
    let s = public()
        .yaml(
            r#"
            client:
              max_header_bytes: 16384
            "#,
        )
        .start()
        .await;
    let mut c = TcpStream::connect(s.proxy.addr).await.expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    // 200 KiB of header fields and no blank line: well past the limit, far below 1 MiB.
    let field = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let mut sent = 0;
    for _ in 0..200 {
        if c.write_all(field.as_bytes()).await.is_err() {
            break;
        }
        sent += field.len();
    }
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "still reading a header after {sent} bytes (limit 16384)"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    // A whole header over the limit (but under what Pingora reads) gets authgate's 431;
    // one under it passes.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let answer = raw(s.proxy.addr, big.as_bytes(), b"\r\n\r\n").await;
    assert_eq!(status(&answer), 431, "{}", String::from_utf8_lossy(&answer));
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    let answer = raw(s.proxy.addr, fine.as_bytes(), b"\r\n\r\n").await;
    assert_eq!(status(&answer), 200, "{}", String::from_utf8_lossy(&answer));
}

/// `client.max_requests_per_connection`: the last request allowed on a connection is
/// answered with `Connection: close`, and the connection ends there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_serves_at_most_its_request_limit() {
    let s = public()
        .yaml(
            r#"
            client:
              max_requests_per_connection: 2
            "#,
        )
        .start()
        .await;
    let mut c = kept_alive(s.proxy.addr).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("second request");
    let mut second = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut second)).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after its last request"
    );
    let text = String::from_utf8_lossy(&second).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

/// Pingora logged every connection a client gave up on at `ERROR`: a TLS handshake the client
/// closed (as a load balancer's TCP health check does), a request header cut short, an HTTP/2
/// preface with nothing after it, on the proxy's listeners and the admin's. Anyone who can open connections could fill the error log,
/// and the operator's real errors drowned. These are the client's doing: logged at `debug`.
/// (With the log at debug for those modules, each line's arrival is the sync point.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_give_up_leave_no_error_line() {
    let tls = closed_port();
    let stack = Stack::builder().admin().log_filter(
        "warn,pingora_core::services::listening=debug,pingora_core::apps=debug,pingora_proxy=debug",
    );
    let (ca, cert, key) = test_pki(&["localhost"]);
    let cert = stack.file("cert.pem", &cert);
    let key = stack.file("key.pem", &key);
    let s = stack
        .listener(&format!(
            "addr: {tls}\ntls:\n  cert: {}\n  key: {}\n",
            cert.display(),
            key.display()
        ))
        .start()
        .await;
    wait_for(tls);
    let gave_up = |addr: SocketAddr, bytes: &'static [u8]| async move {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(bytes).await.expect("send");
        drop(c);
    };
    // A TCP check of the TLS port; a ClientHello cut short.
    gave_up(tls, b"").await;
    s.proxy.log_line(&["handshake"]);
    gave_up(tls, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").await;
    // A request header cut short, on the proxy and on the admin listener.
    gave_up(s.proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a").await;
    s.proxy.log_line(&["Fail to proxy"]);
    gave_up(s.admin(), b"GET /metrics HTTP/1.1\r\nHost: x\r\nAcc").await;
    s.proxy.log_line(&["fails to read from downstream"]);
    // HTTP/2 chosen by ALPN, then no preface.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(tls).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = connector.connect(name, tcp).await.expect("TLS handshake");
    conn.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    drop(conn);
    s.proxy.log_line(&["H2 handshake error"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.proxy.log().matches("handshake").count() < 2 {
        assert!(Instant::now() < deadline, "{}", s.proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = s.proxy.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A kept-alive connection's next request is read whole, however it arrives: the wait between
/// requests reads its first bytes (at most 4 KiB, vendored pingora-core patch) and hands them
/// to the session, which must go on reading a header larger than that, sent in pieces, and
/// still refuse one over `client.max_header_bytes` with 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connections_next_request_is_read_whole() {
    let s = public()
        .yaml("client:\n  max_header_bytes: 16384\n")
        .start()
        .await;
    let mut c = kept_alive(s.proxy.addr).await;
    c.set_nodelay(true).expect("nodelay");
    let big = "b".repeat(9000);
    let head = format!("GET /second HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let (a, rest) = head.as_bytes().split_at(10);
    let (b, rest) = rest.split_at(5000);
    for piece in [a, b, rest] {
        c.write_all(piece).await.expect("write");
        c.flush().await.expect("flush");
    }
    let answer = read_response(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("/second"), "{answer}");
    assert!(
        answer.contains(&big),
        "the backend did not get the whole header"
    );

    // The connection is still kept: a header over the limit on it gets 431, not a hang.
    let huge = "h".repeat(20_000);
    c.write_all(format!("GET /third HTTP/1.1\r\nHost: a\r\nX-Huge: {huge}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let answer = read_response(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
