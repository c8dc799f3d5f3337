//! Unit tests of `fleet`: sealing, tombstones, what the bus accepts and applies, and the
//! link's reconnect loop, with a fake host in place of the runtime (no Redis).

use super::seal::*;
use super::tombstones::{Tombstones, MAX_TOMBS};
use super::*;
use crate::identity::Identity;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const KEY: &str = "authgate:a:0001";

fn ns() -> Namespace {
    Namespace::new("x-authgear-")
}

fn identity(user: &str) -> Identity {
    let mut h = HeaderMap::new();
    h.insert("x-authgear-session-valid", HeaderValue::from_static("true"));
    h.insert(
        "x-authgear-user-id",
        HeaderValue::from_str(user).expect("header value"),
    );
    h.insert(
        "x-authgear-user-roles",
        HeaderValue::from_static("admin,staff"),
    );
    h.insert("x-authgear-custom", HeaderValue::from_static("kept"));
    h.append(SET_COOKIE, HeaderValue::from_static("a=b; Path=/"));
    Identity::from_headers(&h, &ns()).expect("identity")
}

use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

fn message(from: &str, seq: u64, at: u64, purge: Purge) -> Message {
    Message {
        v: 1,
        from: from.into(),
        seq,
        at,
        purge,
    }
}

#[test]
fn entries_round_trip() {
    let keys = Keys::derive(SECRET);
    let alice = identity("user-alice");
    let wire = seal_entry(&keys, KEY, &alice, 10, 20);
    let entry = open_entry(&keys, KEY, &ns(), &wire).expect("opens");
    assert_eq!(entry.identity, alice);
    assert_eq!((entry.resolved_at, entry.fresh_until), (10, 20));
    assert_eq!(entry.identity.set_cookie(), alice.set_cookie());
}

#[test]
fn an_entry_changed_anywhere_is_refused() {
    let keys = Keys::derive(SECRET);
    let wire = seal_entry(&keys, KEY, &identity("user-alice"), 10, 20);
    for i in 0..wire.len() {
        let mut bad = wire.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            open_entry(&keys, KEY, &ns(), &bad).err(),
            Some(Rejected::Forged),
            "byte {i} flipped"
        );
    }
    for cut in [0, 1, 31, 32, wire.len() - 1] {
        assert!(open_entry(&keys, KEY, &ns(), &wire[..cut]).is_err());
    }
}

#[test]
fn an_entry_is_bound_to_its_key_and_secret() {
    let keys = Keys::derive(SECRET);
    let bob = seal_entry(&keys, "authgate:a:bob", &identity("user-bob"), 10, 20);
    // Bob's answer copied under Alice's key.
    assert_eq!(
        open_entry(&keys, "authgate:a:alice", &ns(), &bob).err(),
        Some(Rejected::Forged)
    );
    let other = Keys::derive(b"another secret of at least 32 bytes!");
    let forged = seal_entry(&other, KEY, &identity("admin"), 10, u64::MAX);
    assert_eq!(
        open_entry(&keys, KEY, &ns(), &forged).err(),
        Some(Rejected::Forged)
    );
}

#[test]
fn answer_names_depend_on_namespace_and_hide_the_digest() {
    let keys = Keys::derive(SECRET);
    let digest = [7u8; 32];
    let a = keys.answer_name(&ns(), &digest);
    assert_ne!(a, keys.answer_name(&Namespace::new("x-other-"), &digest));
    assert_ne!(a, hex::encode(digest));
    assert_ne!(
        a,
        Keys::derive(b"x".repeat(40).as_slice()).answer_name(&ns(), &digest)
    );
}

#[test]
fn messages_round_trip_and_refuse_tampering() {
    let keys = Keys::derive(SECRET);
    let msg = message(
        "a",
        1,
        5,
        Purge::User {
            user: "user-alice".into(),
        },
    );
    let wire = seal_message(&keys, "authgate:", &msg);
    assert_eq!(open_message(&keys, "authgate:", wire.as_bytes()), Ok(msg));
    let flushed = wire.replace(r#""op":"user","user":"user-alice""#, r#""op":"flush""#);
    assert_ne!(flushed, wire);
    assert_eq!(
        open_message(&keys, "authgate:", flushed.as_bytes()),
        Err(Refused::BadSignature)
    );
    // Another fleet sharing the secret under another prefix.
    assert_eq!(
        open_message(&keys, "other:", wire.as_bytes()),
        Err(Refused::BadSignature)
    );
    let other = Keys::derive(b"another secret of at least 32 bytes!");
    assert_eq!(
        open_message(&other, "authgate:", wire.as_bytes()),
        Err(Refused::BadSignature)
    );
    for garbage in [
        &b""[..],
        b"flush",
        b"deadbeef.{\"v\":1}",
        b".{}",
        &[b'a'; 20_000],
    ] {
        assert_eq!(
            open_message(&keys, "authgate:", garbage),
            Err(Refused::Malformed)
        );
    }
}

fn fleet() -> Fleet {
    let settings = FleetSettings {
        url: "redis://127.0.0.1:1/0".into(),
        password: None,
        ca: None,
        secret: SECRET.to_vec(),
        prefix: "authgate:".into(),
        timeout: Duration::from_millis(20),
        shared_cache: true,
    };
    Fleet::new(settings, ns()).expect("fleet")
}

#[test]
fn the_bus_refuses_replays_and_old_messages_and_skips_its_own() {
    let f = fleet();
    let keys = Keys::derive(SECRET);
    let now = unix_ms();
    let wire = seal_message(&keys, "authgate:", &message("peer", 1, now, Purge::Flush));
    assert!(matches!(f.accept(wire.as_bytes()), Ok(Some(_))));
    assert_eq!(f.accept(wire.as_bytes()).err(), Some(Refused::Replayed));
    let window = REPLAY_WINDOW.as_millis() as u64;
    for at in [now - window - 1_000, now + window + 1_000] {
        let old = seal_message(&keys, "authgate:", &message("peer", 2, at, Purge::Flush));
        assert_eq!(f.accept(old.as_bytes()).err(), Some(Refused::Stale));
    }
    let own = seal_message(
        &keys,
        "authgate:",
        &message(&f.instance, 3, now, Purge::Flush),
    );
    assert!(matches!(f.accept(own.as_bytes()), Ok(None)));
}

#[test]
fn a_purge_key_must_be_a_digest() {
    for key in ["", "zz", &"ab".repeat(31), &"ab".repeat(33)] {
        let p = Purge::Key { key: key.into() };
        assert_eq!(Target::from_purge(&p), None, "{key}");
    }
    let p = Purge::Key {
        key: "ab".repeat(32),
    };
    assert_eq!(Target::from_purge(&p), Some(Target::Key([0xab; 32])));
}

/// A response-cache purge crosses the bus as its URL and kind, and leaves no tombstone (it
/// refuses no resolver answer).
#[test]
fn a_response_purge_round_trips_and_buries_nothing() {
    let target = Target::Responses {
        url: "https://example.com/static/".into(),
        prefix: true,
    };
    let wire = serde_json::to_string(&target.to_purge()).unwrap();
    assert_eq!(
        wire,
        r#"{"op":"responses","url":"https://example.com/static/","prefix":true}"#
    );
    let back: Purge = serde_json::from_str(&wire).unwrap();
    assert_eq!(Target::from_purge(&back), Some(target.clone()));
    let mut t = Tombstones::default();
    t.bury(&target, 100, Duration::from_secs(3600));
    assert!(t.allows(&[1; 32], Some("u"), 50));
}

#[test]
fn tombstones_refuse_answers_resolved_before_a_purge() {
    let hour = Duration::from_secs(3600);
    let mut t = Tombstones::default();
    let (alice, bob) = ([1u8; 32], [2u8; 32]);
    assert!(t.allows(&alice, Some("user-alice"), 100));
    t.bury(&Target::Key(alice), 100, hour);
    assert!(!t.allows(&alice, Some("user-alice"), 100));
    assert!(t.allows(&alice, Some("user-alice"), 101));
    assert!(t.allows(&bob, Some("user-bob"), 50));
    t.bury(&Target::User("user-bob".into()), 200, hour);
    assert!(!t.allows(&bob, Some("user-bob"), 150));
    assert!(t.allows(&bob, None, 150));
    assert!(t.allows(&bob, Some("user-bobby"), 150));
    t.bury(&Target::Flush, 300, hour);
    assert!(!t.allows(&[3u8; 32], None, 300));
    assert!(t.allows(&[3u8; 32], None, 301));
}

#[test]
fn tombstones_stay_bounded_and_safe_when_full() {
    let mut t = Tombstones::default();
    let long = Duration::from_secs(86_400);
    for i in 0..=MAX_TOMBS as u64 {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&i.to_le_bytes());
        t.bury(&Target::Key(d), 1_000 + i, long);
    }
    assert!(t.held() <= MAX_TOMBS);
    // Whatever was forgotten, nothing resolved before the last purge is allowed.
    assert!(!t.allows(&[0u8; 32], None, 1_000));
    assert!(!t.allows(&[9u8; 32], None, 1_000 + MAX_TOMBS as u64));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_from_redis_are_refused_without_panic(
        wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
    ) {
        let keys = Keys::derive(SECRET);
        proptest::prop_assert!(open_entry(&keys, KEY, &ns(), &wire).is_err());
        proptest::prop_assert!(open_message(&keys, "authgate:", &wire).is_err());
    }
}

/// A host that records what the fleet asks of it, in place of the runtime.
#[derive(Default)]
struct FakeHost {
    fleet: Mutex<Option<Arc<Fleet>>>,
    applied: Mutex<Vec<Target>>,
    responses: Mutex<Vec<(String, bool)>>,
    resyncs: AtomicUsize,
    /// Answers held locally: a resync drops them.
    held: AtomicI64,
}

impl FakeHost {
    fn serving(fleet: &Arc<Fleet>) -> FakeHost {
        let host = FakeHost::default();
        host.set_fleet(Some(fleet.clone()));
        host
    }

    fn set_fleet(&self, fleet: Option<Arc<Fleet>>) {
        *self.fleet.lock().unwrap() = fleet;
    }

    fn applied(&self) -> Vec<Target> {
        self.applied.lock().unwrap().clone()
    }

    fn responses(&self) -> Vec<(String, bool)> {
        self.responses.lock().unwrap().clone()
    }
}

impl Host for FakeHost {
    fn fleet(&self) -> Option<Arc<Fleet>> {
        self.fleet.lock().unwrap().clone()
    }

    fn apply(&self, target: &Target) {
        self.applied.lock().unwrap().push(target.clone());
    }

    fn resync(&self) -> i64 {
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        self.held.swap(0, Ordering::SeqCst)
    }

    fn horizon(&self) -> Duration {
        Duration::from_secs(600)
    }

    fn purge_responses(&self, url: &str, prefix: bool) -> Result<(), String> {
        self.responses
            .lock()
            .unwrap()
            .push((url.to_string(), prefix));
        Ok(())
    }
}

fn counted(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

/// A bus message as a peer with the fleet secret sends it.
fn sealed(from: &str, seq: u64, at: u64, purge: Purge) -> String {
    seal_message(
        &Keys::derive(SECRET),
        "authgate:",
        &message(from, seq, at, purge),
    )
}

#[test]
fn a_sealed_bus_message_is_applied_once_and_remembered() {
    let f = fleet();
    let host = FakeHost::default();
    let now = unix_ms();
    let digest = [5u8; 32];
    let purge = Target::Key(digest).to_purge();
    let wire = sealed("peer", 1, now, purge);
    let applied = counted(&STATS.applied);
    f.receive(&host, wire.as_bytes());
    assert_eq!(host.applied(), [Target::Key(digest)]);
    assert!(counted(&STATS.applied) > applied);
    // A shared answer resolved before the purge is refused from now on.
    assert!(!f.tombs().allows(&digest, None, now));

    let rejected = counted(&STATS.rejected);
    f.receive(&host, wire.as_bytes());
    assert_eq!(host.applied().len(), 1, "a replay is not applied");
    assert!(counted(&STATS.rejected) > rejected);

    let user = Purge::User {
        user: "user-bob".into(),
    };
    let wire = sealed("peer", 2, now, user);
    f.receive(&host, wire.as_bytes());
    assert_eq!(host.applied()[1], Target::User("user-bob".into()));
    assert!(host.responses().is_empty());
}

#[test]
fn forged_stale_or_own_bus_messages_reach_nothing() {
    let f = fleet();
    let host = FakeHost::default();
    let now = unix_ms();
    let keys = Keys::derive(SECRET);
    let window = REPLAY_WINDOW.as_millis() as u64;
    let other = Keys::derive(b"another secret of at least 32 bytes!");
    let user = || Purge::User {
        user: "user-alice".into(),
    };
    let genuine = sealed("peer", 1, now, user());
    let altered = genuine.replace(r#""op":"user","user":"user-alice""#, r#""op":"flush""#);
    assert_ne!(altered, genuine);
    let wires = [
        seal_message(&other, "authgate:", &message("peer", 2, now, Purge::Flush)),
        altered,
        seal_message(&keys, "other:", &message("peer", 3, now, Purge::Flush)),
        sealed("peer", 4, now - window - 1_000, user()),
        sealed("peer", 5, now + window + 1_000, user()),
        sealed(&f.instance, 6, now, Purge::Flush),
        sealed("peer", 7, now, Purge::Key { key: "zz".into() }),
    ];
    for wire in &wires {
        f.receive(&host, wire.as_bytes());
    }
    assert_eq!(host.applied(), []);
    assert_eq!(host.responses(), []);
    // Nothing was remembered either: shared answers stay usable.
    assert!(f.tombs().allows(&[1u8; 32], Some("user-alice"), now - 1));
}

#[test]
fn a_response_purge_from_a_peer_reaches_the_hook_only() {
    let f = fleet();
    let host = FakeHost::default();
    let now = unix_ms();
    let purge = Purge::Responses {
        url: "https://example.com/static/".into(),
        prefix: true,
    };
    let wire = sealed("peer", 1, now, purge);
    f.receive(&host, wire.as_bytes());
    assert_eq!(
        host.responses(),
        [("https://example.com/static/".to_string(), true)]
    );
    assert_eq!(host.applied(), [], "the answer cache is not touched");
    assert!(f.tombs().allows(&[1u8; 32], Some("user-alice"), now - 1));
}

/// `run`'s loop with scripted connections: every session starts with a resync (purges sent
/// while the bus was away were lost), counted when it dropped answers or the bus was away.
/// One test, because the resync counter is process-wide.
#[tokio::test(start_paused = true)]
async fn the_loop_resyncs_each_time_the_bus_is_back() {
    let f = Arc::new(fleet());
    let host = FakeHost::serving(&f);

    // Nothing held and never away: resynced, not counted.
    let before = counted(&STATS.resyncs);
    let seen = Mutex::new(Vec::new());
    f.follow(
        &host,
        || async { Ok::<_, String>(1) },
        |s: u32| {
            seen.lock()
                .unwrap()
                .push((s, host.resyncs.load(Ordering::SeqCst)));
            async { None }
        },
    )
    .await;
    assert_eq!(*seen.lock().unwrap(), [(1, 1)]);
    assert_eq!(counted(&STATS.resyncs), before);

    // Answers held, Redis unreachable twice, then a session that is lost, then one that
    // ends with the fleet replaced: each session begins with a resync, each counted.
    host.held.store(3, Ordering::SeqCst);
    let before = counted(&STATS.resyncs);
    let mut script = VecDeque::from([
        Err("refused".to_string()),
        Err("refused".into()),
        Ok(2),
        Ok(3),
    ]);
    let seen = Mutex::new(Vec::new());
    f.follow(
        &host,
        || {
            let next = script
                .pop_front()
                .expect("no reconnection after the fleet ended");
            async move { next }
        },
        |s: u32| {
            let resyncs = host.resyncs.load(Ordering::SeqCst);
            seen.lock()
                .unwrap()
                .push((s, resyncs, host.held.load(Ordering::SeqCst)));
            async move { (s == 2).then(|| "lost".to_string()) }
        },
    )
    .await;
    assert_eq!(*seen.lock().unwrap(), [(2, 2, 0), (3, 3, 0)]);
    assert_eq!(counted(&STATS.resyncs), before + 2);
    assert!(script.is_empty());
}

/// A fleet the host no longer names stops: before connecting, and while Redis is away.
#[tokio::test(start_paused = true)]
async fn the_loop_ends_when_the_fleet_is_replaced() {
    let f = Arc::new(fleet());
    let host = FakeHost::default();
    f.follow(
        &host,
        || async { panic!("connected a fleet the host does not name") },
        |_: ()| async { None },
    )
    .await;

    host.set_fleet(Some(Arc::new(fleet())));
    f.follow(
        &host,
        || async { panic!("connected a fleet the host does not name") },
        |_: ()| async { None },
    )
    .await;

    host.set_fleet(Some(f.clone()));
    let attempts = AtomicUsize::new(0);
    f.follow(
        &host,
        || {
            // A reload replaces the fleet while Redis is unreachable.
            if attempts.fetch_add(1, Ordering::SeqCst) == 2 {
                host.set_fleet(None);
            }
            async { Err::<(), _>("refused".to_string()) }
        },
        |_: ()| async { None },
    )
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(host.resyncs.load(Ordering::SeqCst), 0);
}
