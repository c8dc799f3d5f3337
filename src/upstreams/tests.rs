//! Unit tests of `upstreams`.

use super::*;

fn pool(lb: LbKind, backends: &[(u16, usize)]) -> Pool {
    Pool::for_tests("p", lb, backends)
}

fn port(p: &HttpPeer) -> u16 {
    p._address.as_inet().map_or(0, |a| a.port())
}

#[test]
fn round_robin_visits_every_backend_in_turn() {
    let pool = pool(LbKind::RoundRobin, &[(1, 1), (2, 1), (3, 1)]);
    let picks: Vec<u16> = (0..6)
        .map(|_| port(&pool.select(b"", &[]).unwrap()))
        .collect();
    let mut first = picks[..3].to_vec();
    first.sort();
    assert_eq!(first, [1, 2, 3]);
    assert_eq!(picks[..3], picks[3..]);
}

#[test]
fn weights_are_respected() {
    for kind in [LbKind::RoundRobin, LbKind::Random] {
        let pool = pool(kind, &[(1, 1), (2, 3)]);
        let mut counts = HashMap::new();
        for _ in 0..4000 {
            *counts
                .entry(port(&pool.select(b"", &[]).unwrap()))
                .or_insert(0) += 1;
        }
        let ratio = counts[&2] as f64 / counts[&1] as f64;
        assert!((2.5..3.5).contains(&ratio), "{kind:?}: {counts:?}");
    }
}

#[test]
fn consistent_hashing_is_stable_and_spreads() {
    let pool = pool(LbKind::Consistent, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
    let mut used = BTreeSet::new();
    for k in 0..200 {
        let key = format!("user-{k}");
        let first = port(&pool.select(key.as_bytes(), &[]).unwrap());
        for _ in 0..5 {
            assert_eq!(port(&pool.select(key.as_bytes(), &[]).unwrap()), first);
        }
        used.insert(first);
    }
    assert_eq!(used.len(), 4, "200 keys should reach all 4 backends");
}

#[test]
fn tried_backends_are_skipped() {
    let pool = pool(LbKind::Consistent, &[(1, 1), (2, 1)]);
    let first = pool.select(b"k", &[]).unwrap();
    let tried = [*first._address.as_inet().unwrap()];
    let second = pool.select(b"k", &tried).unwrap();
    assert_ne!(port(&first), port(&second));
    let both = [tried[0], *second._address.as_inet().unwrap()];
    assert!(pool.select(b"k", &both).is_none());
}

#[test]
fn hash_keys_parse() {
    assert_eq!(HashKey::parse("client_ip"), Ok(HashKey::ClientIp));
    assert_eq!(
        HashKey::parse("cookie:session"),
        Ok(HashKey::Cookie("session".into()))
    );
    assert!(matches!(
        HashKey::parse("header:X-Tenant"),
        Ok(HashKey::Header(_))
    ));
    assert!(HashKey::parse("header:bad header").is_err());
    assert!(HashKey::parse("ip").is_err());
}

#[test]
fn a_sole_backend_is_chosen_until_tried() {
    for lb in [LbKind::RoundRobin, LbKind::Random, LbKind::Consistent] {
        let pool = pool(lb, &[(9101, 3)]);
        for key in [&b""[..], b"k1", b"k2"] {
            assert_eq!(port(&pool.select(key, &[]).unwrap()), 9101);
        }
        let tried = [SocketAddr::from(([127, 0, 0, 1], 9101))];
        assert!(pool.select(b"k", &tried).is_none());
        // Another address tried before does not matter.
        let other = [SocketAddr::from(([127, 0, 0, 1], 9102))];
        assert_eq!(port(&pool.select(b"k", &other).unwrap()), 9101);
    }
}
