//! Local validation of JWT access tokens, end to end: the real binary in front of the
//! stand-in (which issues RS256 `at+jwt` tokens and serves their JWKS) and the echo backend.
//! What is answered locally is told by the stand-in's own record of resolves, not by authgate.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::devserver::standin::{Directory, Standin};
use authgate::devserver::tokens::{self, Signer};
use common::*;
use serde_json::json;

/// The stand-in (kept here, to count what it answers) and authgate with `jwt:` in front of it.
struct Jwt {
    standin: Arc<Standin>,
    stack: Stack,
}

impl Jwt {
    /// Local validation with `jwt_keys` under `jwt:` and `yaml` besides; the keys loaded.
    async fn start(jwt_keys: &str, yaml: &str) -> Jwt {
        let (standin, addr) = start_standin(Duration::ZERO).await;
        let builder = Stack::builder()
            .admin()
            .yaml(&jwt_section(addr, jwt_keys))
            .yaml(yaml);
        Jwt::launch(standin, addr, builder).await
    }

    /// `builder` (its admin listener on, its `jwt:` given) in front of the stand-in at
    /// `addr`, started; once its keys are in, the next second (see `next_second`).
    async fn launch(standin: Arc<Standin>, addr: SocketAddr, builder: StackBuilder) -> Jwt {
        let stack = builder.resolver(addr).start().await;
        metric_reaches(stack.admin(), "authgate_jwt_keys", 1.0).await;
        next_second().await;
        Jwt { standin, stack }
    }

    /// Resolves the stand-in answered (not its JWKS or token answers).
    fn resolves(&self) -> usize {
        self.requests("/_resolver/resolve")
    }

    fn jwks_fetches(&self) -> usize {
        self.requests("/oauth2/jwks")
    }

    fn requests(&self, path: &str) -> usize {
        self.standin
            .stats
            .recent()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    fn token(&self, user: &str) -> String {
        self.standin.token_for(user).expect("a demo user")
    }

    async fn get(&self, token: &str) -> reqwest::Response {
        client()
            .get(self.stack.proxy.url("/"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// The identity headers the backend received for `token`.
    async fn identity(&self, token: &str) -> Vec<(String, String)> {
        let mut h = identity_headers(&echoed(self.get(token).await).await);
        for (n, _) in h.iter_mut() {
            n.make_ascii_lowercase();
        }
        h.sort();
        h
    }

    async fn metric(&self, series: &str) -> f64 {
        metric(&scrape(self.stack.admin()).await, series)
    }
}

/// Waits for the next Unix second. A new process (or a resync of the fleet's bus) leaves
/// every token issued up to then to the resolver, and `iat` counts whole seconds: a token
/// issued in the same second might be older than the process, and is refused locally.
async fn next_second() {
    let now = unix_now();
    let deadline = Instant::now() + Duration::from_secs(3);
    while unix_now() == now {
        assert!(Instant::now() < deadline, "the clock stands still");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the stand-in resolver itself answers for `token`: its `x-authgear-*` headers.
async fn resolver_answer(resolver: SocketAddr, token: &str) -> Vec<(String, String)> {
    let r = client()
        .get(format!("http://{resolver}/_resolver/resolve"))
        .bearer_auth(token)
        .send()
        .await
        .expect("resolve");
    let mut h: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-authgear-"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    h.sort();
    h
}

/// Every demo user who can sign in (a disabled user gets no token from Authgear).
fn demo_users() -> Vec<String> {
    Directory::from_yaml(USERS)
        .expect("users")
        .users
        .into_iter()
        .filter(|u| !u.disabled)
        .map(|u| u.id)
        .collect()
}

/// The claims of `user`'s access token issued at `iat` (Unix seconds), as the stand-in signs them.
fn claims_of(user: &str, iat: u64) -> serde_json::Value {
    let dir = Directory::from_yaml(USERS).expect("users");
    let u = dir
        .users
        .iter()
        .find(|u| u.id == user)
        .expect("a demo user");
    tokens::access_claims(u, STANDIN_ORIGIN, iat)
}

/// `claims` signed by the stand-in's key, under `header` (Authgear's when `None`).
fn mint(header: Option<&serde_json::Value>, claims: &serde_json::Value) -> String {
    let signer = Signer::demo().expect("demo key");
    match header {
        None => signer.sign(claims),
        Some(h) => signer.sign_raw(h.to_string().as_bytes(), claims.to_string().as_bytes()),
    }
    .expect("signing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_headers_equal_the_resolvers_for_every_demo_user() {
    let jwt = Jwt::start("", "").await;
    let users = demo_users();
    assert!(users.len() >= 2, "{users:?}");
    for user in users {
        let token = jwt.token(&user);
        let before = jwt.resolves();
        let local = jwt.identity(&token).await;
        assert_eq!(
            jwt.resolves(),
            before,
            "{user}: answered without the resolver"
        );
        let resolver = resolver_answer(jwt.stack.resolver, &token).await;
        assert!(
            resolver.contains(&("x-authgear-user-id".into(), user.clone())),
            "{resolver:?}"
        );
        assert_eq!(local, resolver, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_once_costs_no_resolver_call_and_the_log_says_jwt() {
    let (standin, addr) = start_standin(Duration::ZERO).await;
    let (builder, log) = Stack::builder()
        .admin()
        .yaml(&jwt_section(addr, ""))
        .access_log_file();
    let jwt = Jwt::launch(standin, addr, builder).await;
    let token = jwt.token("alice");
    let r = jwt.get(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(jwt.resolves(), 0);
    let line = access_log_lines(&log, 1).await.remove(0);
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["cache"], "jwt", "{line}");
    assert_eq!(entry["user_id"], "user-alice", "{line}");
    assert_eq!(
        jwt.metric("authgate_jwt_tokens_total{result=\"accepted\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_asks_the_resolver_and_a_revocation_sticks() {
    let jwt = Jwt::start(
        "",
        "cache:\n  ttl: 30s\n  negative_ttl: 1s\n  refresh_after: 1s\n",
    )
    .await;
    let token = jwt.token("bob");
    assert_eq!(user_ids(&jwt, &token).await, ["user-bob"]);
    assert_eq!(jwt.resolves(), 0);
    // Disabled in the portal, no webhook: the refresh-ahead of a hit after `refresh_after`
    // brings the resolver's verdict.
    jwt.standin.disable("user-bob");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !user_ids(&jwt, &token).await.is_empty() {
        assert!(Instant::now() < deadline, "the revocation was never seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(jwt.resolves() >= 1);
    // Past the negative answer's TTL the token is still not vouched for locally.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert!(user_ids(&jwt, &token).await.is_empty(), "bob came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The user ids the backend received for a request with `token`.
async fn user_ids(jwt: &Jwt, token: &str) -> Vec<String> {
    echoed(jwt.get(token).await)
        .await
        .header_values("x-authgear-user-id")
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_token_is_checked_by_the_resolver_on_first_use() {
    let jwt = Jwt::start("", "cache:\n  ttl: 30s\n  refresh_after: 2s\n").await;
    let old = jwt.token("alice");
    // Older than refresh_after by its first use here.
    let issued = unix_now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while unix_now() < issued + 3 {
        assert!(Instant::now() < deadline, "the clock stands still");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(user_ids(&jwt, &old).await, ["user-alice"]);
    assert_eq!(
        jwt.metric("authgate_jwt_tokens_total{result=\"accepted\"}")
            .await,
        1.0,
        "answered locally"
    );
    // ...and the resolver is asked in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwt.resolves() == 0 {
        assert!(Instant::now() < deadline, "no background resolve");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fresh token is not.
    let fresh = jwt.token("bob");
    assert_eq!(user_ids(&jwt, &fresh).await, ["user-bob"]);
    assert_eq!(jwt.resolves(), 1);
}

const WEBHOOK_SECRET: &str = "whsec-0123456789abcdef-authgate-jwt";

async fn deliver(admin: SocketAddr, body: Vec<u8>) {
    let r = client()
        .post(format!("http://{admin}/hooks/authgear"))
        .header("content-type", "application/json")
        .header(
            "x-authgear-body-signature",
            webhook_signature(WEBHOOK_SECRET, &body),
        )
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_old_tokens_go_to_the_resolver_after_a_webhook_or_a_purge() {
    let (standin, addr) = start_standin(Duration::ZERO).await;
    let builder = Stack::builder();
    let secret = builder.file("webhook-secret", &format!("{WEBHOOK_SECRET}\n"));
    let builder = builder
        .admin_keys(&format!("webhook:\n  secret_file: {}\n", secret.display()))
        .yaml(&jwt_section(addr, ""));
    let jwt = Jwt::launch(standin, addr, builder).await;
    let (bob, alice) = (jwt.token("bob"), jwt.token("alice"));
    assert_eq!(user_ids(&jwt, &bob).await, ["user-bob"]);
    assert_eq!(user_ids(&jwt, &alice).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), 0);

    jwt.standin.disable("user-bob");
    deliver(jwt.stack.admin(), user_disabled("ev-bob", "user-bob")).await;
    assert!(user_ids(&jwt, &bob).await.is_empty(), "bob refused");
    assert_eq!(jwt.resolves(), 1, "by the resolver");
    assert_eq!(
        jwt.metric("authgate_jwt_tokens_total{result=\"deferred\",reason=\"purged\"}")
            .await,
        1.0
    );
    // Alice's token was not covered.
    assert_eq!(user_ids(&jwt, &alice).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), 1);

    // An admin purge by user: Alice's token issued before it goes to the resolver (which
    // still says she is valid), and a token issued after it is vouched for again.
    let r = client()
        .post(format!("http://{}/cache/purge", jwt.stack.admin()))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"user_id":"user-alice"}"#)
        .send()
        .await
        .expect("purge");
    assert_eq!(r.status(), 200);
    assert_eq!(user_ids(&jwt, &alice).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_flood_fetches_the_keys_at_most_once_per_cooldown() {
    let jwt = Jwt::start("unknown_kid_cooldown: 30s\n", "").await;
    assert_eq!(jwt.jwks_fetches(), 1, "the fetch at start");
    let claims = claims_of("user-alice", unix_now() as u64);
    let mut answered = Vec::new();
    for i in 0..40 {
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": format!("rotated-{i}")});
        let token = mint(Some(&header), &claims);
        answered.push(jwt.get(&token).await.status().as_u16());
    }
    assert!(answered.iter().all(|&s| s == 200), "{answered:?}");
    assert_eq!(jwt.resolves(), 40, "each one by the resolver");
    // The one fetch the first unknown kid asked for, whenever it lands; never more.
    metric_reaches(
        jwt.stack.admin(),
        "authgate_jwt_key_fetches_total{result=\"ok\"}",
        2.0,
    )
    .await;
    assert_eq!(jwt.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_and_x5u_are_never_fetched() {
    let (attacker, contacted) = start_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        Duration::ZERO,
    )
    .await;
    let jwt = Jwt::start("", "").await;
    let claims = claims_of("user-alice", unix_now() as u64);
    for kid in [tokens::DEMO_KID, "attackers-key"] {
        let header = json!({
            "alg": "RS256", "typ": "at+jwt", "kid": kid,
            "jku": format!("http://{attacker}/jwks"),
            "x5u": format!("http://{attacker}/cert.pem"),
        });
        let token = mint(Some(&header), &claims);
        assert_eq!(jwt.get(&token).await.status(), 200);
    }
    assert_eq!(jwt.resolves(), 1, "the unknown kid went to the resolver");
    assert_eq!(contacted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_decides_every_token_not_vouched_for() {
    let jwt = Jwt::start("", "").await;
    let now = unix_now() as u64;
    let machine = mint(
        None,
        &tokens::machine_claims("backend", STANDIN_ORIGIN, now),
    );
    let mut expired = claims_of("user-alice", now - 4000);
    expired["exp"] = json!(now - 600);
    let expired = mint(None, &expired);
    let mut oversized = claims_of("user-alice", now);
    oversized["pad"] = json!("x".repeat(9 * 1024));
    let oversized = mint(None, &oversized);
    // What the resolver answers for each: the stand-in reads any size, as Authgear does.
    let cases = [
        (machine, "m2m", None),
        (expired, "expired", None),
        (oversized, "not_jwt", Some("user-alice")),
        ("demo-token-x.y".to_string(), "not_jwt", None),
    ];
    for (i, (token, reason, user)) in cases.iter().enumerate() {
        let ids = user_ids(&jwt, token).await;
        let want: Vec<String> = user.iter().map(|u| u.to_string()).collect();
        assert_eq!(ids, want, "{reason}");
        assert_eq!(jwt.resolves(), i + 1, "{reason}: asked the resolver");
    }
    for reason in ["m2m", "expired", "not_jwt"] {
        let series =
            format!("authgate_jwt_tokens_total{{result=\"deferred\",reason=\"{reason}\"}}");
        assert!(jwt.metric(&series).await >= 1.0, "{series}");
    }
    // An opaque token still works through the resolver.
    assert_eq!(user_ids(&jwt, "tok-alice").await, ["user-alice"]);
}

/// A JWKS server that never answers, answers garbage or too much: tokens go to the resolver,
/// which keeps serving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_garbage_jwks_leaves_the_resolver_path_serving() {
    let hanging = serve_canned(b"", Duration::from_secs(3600), true).await;
    let (garbage, _) = start_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n<html>no</html",
        Duration::ZERO,
    )
    .await;
    // Valid JSON, but more than the 256 KiB a JWKS answer may have.
    let mut big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 300 * 1024).into_bytes();
    let body = format!(
        "{{\"keys\":[],\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024 - 20)
    );
    assert_eq!(body.len(), 300 * 1024);
    big.extend_from_slice(body.as_bytes());
    let (oversized, _) = start_canned(Box::leak(big.into_boxed_slice()), Duration::ZERO).await;
    for jwks in [hanging.addr, garbage, oversized] {
        let (standin, addr) = start_standin(Duration::ZERO).await;
        let section = jwt_section(addr, "fetch_timeout: 300ms\n").replace(
            &format!("http://{addr}/oauth2/jwks"),
            &format!("http://{jwks}/oauth2/jwks"),
        );
        let stack = Stack::builder()
            .resolver(addr)
            .admin()
            .yaml(&section)
            .start()
            .await;
        let failed = |text: &str| {
            ["timeout", "not_jwks", "bad_answer", "unreachable"]
                .iter()
                .map(|r| {
                    metric(
                        text,
                        &format!("authgate_jwt_key_fetches_total{{result=\"{r}\"}}"),
                    )
                })
                .sum::<f64>()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while failed(&scrape(stack.admin()).await) < 1.0 {
            assert!(Instant::now() < deadline, "no failed fetch");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let jwt = Jwt { standin, stack };
        for user in ["alice", "bob"] {
            let token = jwt.token(user);
            assert_eq!(user_ids(&jwt, &token).await, [format!("user-{user}")]);
        }
        assert_eq!(jwt.resolves(), 2, "{jwks}: by the resolver");
        assert_eq!(jwt.metric("authgate_jwt_keys").await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_jwt_section_bearer_jwts_go_to_the_resolver() {
    let stack = Stack::builder().admin().start().await;
    let token = stack.standin().token_for("alice").expect("token");
    let r = client()
        .get(stack.proxy.url("/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    let ids = echoed(r).await.header_values("x-authgear-user-id").len();
    assert_eq!(ids, 1);
    assert_eq!(stack.resolver_calls(), 1);
    assert!(!scrape(stack.admin()).await.contains("authgate_jwt_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_bearer_token_never_reaches_the_validator_unbounded() {
    let jwt = Jwt::start("", "").await;
    let huge = format!("eyJ{}", "A".repeat(10 * 1024 * 1024));
    let status = client()
        .get(jwt.stack.proxy.url("/"))
        .bearer_auth(&huge)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_ne!(status, 200, "a 10 MB header is refused before any reading");
    // And the proxy still serves.
    let token = jwt.token("alice");
    assert_eq!(user_ids(&jwt, &token).await, ["user-alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_serves_tokens_and_keys() {
    let (_standin, addr) = start_standin(Duration::ZERO).await;
    let jwks: serde_json::Value = client()
        .get(format!("http://{addr}/oauth2/jwks"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JSON");
    assert_eq!(jwks["keys"][0]["kid"], tokens::DEMO_KID);
    let token = client()
        .get(format!("http://{addr}/_standin/token?user=alice"))
        .send()
        .await
        .expect("token")
        .text()
        .await
        .expect("text");
    assert!(token.starts_with("eyJ"), "{token}");
    let answer = resolver_answer(addr, token.trim()).await;
    assert!(answer.contains(&("x-authgear-user-id".into(), "user-alice".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_local_validation_on_and_keeps_its_keys() {
    let (standin, addr) = start_standin(Duration::ZERO).await;
    let stack = Stack::builder().resolver(addr).admin().start().await;
    let jwt = Jwt { standin, stack };
    assert_eq!(user_ids(&jwt, &jwt.token("alice")).await, ["user-alice"]);
    assert_eq!((jwt.resolves(), jwt.jwks_fetches()), (1, 0));

    let on = jwt.stack.config.with_yaml(&jwt_section(addr, ""));
    jwt.stack.rewrite(&on);
    jwt.stack.proxy.signal("HUP");
    metric_reaches(jwt.stack.admin(), "authgate_jwt_keys", 1.0).await;
    next_second().await;
    assert_eq!(user_ids(&jwt, &jwt.token("bob")).await, ["user-bob"]);
    assert_eq!((jwt.resolves(), jwt.jwks_fetches()), (1, 1));

    // Another section changes: the validator and its keys stay, nothing is fetched again.
    jwt.stack
        .rewrite(&on.with_yaml("cache:\n  negative_ttl: 5s\n"));
    jwt.stack.proxy.signal("HUP");
    metric_reaches(
        jwt.stack.admin(),
        "authgate_reloads_total{result=\"ok\"}",
        2.0,
    )
    .await;
    // A token the cache has not seen (another `jti`): vouched for with the kept keys.
    let mut claims = claims_of("user-bob", unix_now() as u64);
    claims["jti"] = json!("after-the-reload");
    let token = mint(None, &claims);
    assert_eq!(user_ids(&jwt, &token).await, ["user-bob"]);
    assert_eq!((jwt.resolves(), jwt.jwks_fetches()), (1, 1));
}

/// A webhook on one instance: a disabled user's old token is refused locally on every
/// instance of the fleet (the bus's purge buries it there too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_one_instance_keeps_old_tokens_off_every_local_path() {
    use common::redis::{Fleet, RedisServer, BUS_APPLIED};
    let redis = RedisServer::start();
    let builder = Fleet::builder(&redis.url()).nodes(2).jwt();
    let secret = builder.file("webhook-secret", &format!("{WEBHOOK_SECRET}\n"));
    let fleet = builder
        .admin_keys(&format!("webhook:\n  secret_file: {}\n", secret.display()))
        .start()
        .await;
    let resolves = || {
        fleet
            .standin
            .stats
            .recent()
            .iter()
            .filter(|r| r.path == "/_resolver/resolve")
            .count()
    };
    let ids = |i: usize, token: String| {
        let url = fleet.node(i).proxy.url("/");
        async move {
            let r = client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            echoed(r)
                .await
                .header_values("x-authgear-user-id")
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        }
    };
    for i in 0..2 {
        metric_reaches(fleet.admin(i), "authgate_jwt_keys", 1.0).await;
    }
    next_second().await;
    let token = fleet.standin.token_for("bob").expect("token");
    let ids = |i: usize| ids(i, token.clone());
    for i in 0..2 {
        assert_eq!(ids(i).await, ["user-bob"]);
    }
    assert_eq!(resolves(), 0);

    fleet.standin.disable("user-bob");
    deliver(fleet.admin(0), user_disabled("ev-bob", "user-bob")).await;
    fleet.reaches(1, BUS_APPLIED, 1.0).await;
    assert!(ids(1).await.is_empty(), "refused on the other instance");
    assert!(
        ids(0).await.is_empty(),
        "and on the one that got the webhook"
    );
    assert!(resolves() >= 1);
}

/// Purges made before the process started are unknown to it (a webhook before a restart):
/// a token issued before the start goes to the resolver, and one issued after does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_before_the_process_started_goes_to_the_resolver() {
    let jwt = Jwt::start("", "").await;
    let before = mint(None, &claims_of("user-bob", unix_now() as u64 - 120));
    assert_eq!(user_ids(&jwt, &before).await, ["user-bob"]);
    assert_eq!(jwt.resolves(), 1, "the resolver answered it");
    assert_eq!(
        jwt.metric("authgate_jwt_tokens_total{result=\"deferred\",reason=\"purged\"}")
            .await,
        1.0
    );
    assert_eq!(user_ids(&jwt, &jwt.token("bob")).await, ["user-bob"]);
    assert_eq!(jwt.resolves(), 1, "a token issued since: locally");
}

/// Keys over HTTPS, trusted through `jwt.ca_file`; without it the certificate is refused and
/// tokens go to the resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_over_https_need_the_configured_ca() {
    // Bound where "localhost" resolves first, since authgate connects to that address.
    let first = std::net::ToSocketAddrs::to_socket_addrs("localhost:0")
        .expect("localhost")
        .next()
        .expect("an address");
    let l = tokio::net::TcpListener::bind(first).await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (ca, cert, key) = test_pki(&["localhost"]);
    let tls = authgate::devserver::tls_config(cert.as_bytes(), key.as_bytes()).expect("tls");
    let _keys = start_standin_on(l, Duration::ZERO, Some(tls));
    let https = |extra: &str| {
        format!(
            "jwt:\n  jwks_url: https://localhost:{port}/oauth2/jwks\n  issuer: {STANDIN_ORIGIN}\n  audience: {STANDIN_ORIGIN}\n{extra}"
        )
    };

    let (standin, addr) = start_standin(Duration::ZERO).await;
    let builder = Stack::builder().admin();
    let ca_path = builder.file("ca.pem", &ca);
    let builder = builder.yaml(&https(&format!("  ca_file: {}\n", ca_path.display())));
    let jwt = Jwt::launch(standin, addr, builder).await;
    assert_eq!(user_ids(&jwt, &jwt.token("alice")).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), 0, "answered locally");

    let (standin, addr) = start_standin(Duration::ZERO).await;
    let stack = Stack::builder()
        .resolver(addr)
        .admin()
        .yaml(&https(""))
        .start()
        .await;
    metric_reaches(
        stack.admin(),
        "authgate_jwt_key_fetches_total{result=\"unreachable\"}",
        1.0,
    )
    .await;
    let jwt = Jwt { standin, stack };
    assert_eq!(jwt.metric("authgate_jwt_keys").await, 0.0);
    assert_eq!(user_ids(&jwt, &jwt.token("alice")).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), 1, "by the resolver");
}

/// A sign-out through a `logout: true` route: that token goes to the resolver from then on,
/// another token of the same user does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_route_keeps_that_token_off_the_local_path() {
    let (standin, addr) = start_standin(Duration::ZERO).await;
    let builder = Stack::builder()
        .admin()
        .routes("- path: /\n  upstream: app\n- path: /logout\n  upstream: app\n  logout: true\n")
        .yaml(&jwt_section(addr, ""));
    let jwt = Jwt::launch(standin, addr, builder).await;
    let token = jwt.token("alice");
    let mut other = claims_of("user-alice", unix_now() as u64);
    other["jti"] = json!("another-device");
    let other = mint(None, &other);
    assert_eq!(user_ids(&jwt, &token).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), 0);

    let r = client()
        .get(jwt.stack.proxy.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 200);
    let after_logout = jwt.resolves();
    // The stand-in still knows the token (no revocation there): it answers, not the local path.
    assert_eq!(user_ids(&jwt, &token).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), after_logout + 1, "by the resolver");
    assert_eq!(user_ids(&jwt, &other).await, ["user-alice"]);
    assert_eq!(jwt.resolves(), after_logout + 1, "another token: locally");
}
