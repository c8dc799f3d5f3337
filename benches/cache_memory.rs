//! Resident memory per cached answer: fills a cache with N typical valid answers (distinct
//! users and sessions, as the resolver sends them) and measures RSS growth. The baseline in
//! the same run is the same fill with anonymous answers (no identity headers), which shows
//! what the store and the key cost without the identity itself.
//!
//! `cargo bench --bench cache_memory` (N = 1,000,000; `AUTHGATE_BENCH_ENTRIES` to change).

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::cache::{Cache, CacheSettings};
use authgate::credentials::CacheKey;
use authgate::identity::{Answer, Identity, Namespace};
use sha2::{Digest, Sha256};

// The allocator the authgate binary runs with (src/main.rs), so the figures are its figures.
#[global_allocator]
static GLOBAL: authgate::allocator::MiMalloc = authgate::allocator::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn answer(i: usize, valid: bool) -> Answer {
    let mut h = http::HeaderMap::new();
    if valid {
        let user = format!("{:08x}-6f41-4d8e-9a7b-{:012x}", i as u32, i as u64 * 7919);
        let at = (1_764_300_000 + i).to_string();
        for (n, v) in [
            ("x-authgear-session-valid", "true".to_string()),
            ("x-authgear-user-id", user),
            ("x-authgear-user-anonymous", "false".into()),
            ("x-authgear-user-verified", "true".into()),
            ("x-authgear-user-can-reauthenticate", "true".into()),
            (
                "x-authgear-user-roles",
                if i % 10 == 0 {
                    "admin,staff".into()
                } else {
                    "staff".into()
                },
            ),
            ("x-authgear-session-amr", "pwd otp".into()),
            ("x-authgear-session-authenticated-at", at),
        ] {
            h.append(n, http::HeaderValue::from_str(&v).expect("value"));
        }
    }
    let ns = Namespace::new("x-authgear-");
    Answer::Identity(Arc::new(Identity::from_headers(&h, &ns).expect("identity")))
}

fn fill(n: usize, valid: bool) -> (f64, Duration, i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = Cache::new(CacheSettings {
        capacity: n,
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        lock_timeout: Duration::from_secs(3),
        stale_if_error: Duration::ZERO,
        refresh_after: Duration::ZERO,
    });
    let before = rss_bytes();
    let started = Instant::now();
    let key = |i: usize| CacheKey {
        digest: Sha256::digest(i.to_le_bytes()).into(),
        has_credentials: true,
    };
    rt.block_on(async {
        for i in 0..n {
            let a = answer(i, valid);
            let _ = cache.resolve(&key(i), move || async move { Ok(a) }).await;
        }
        // Serve each answer once, as traffic would: injecting shares the answer's bytes,
        // which costs a little memory the first time.
        for i in 0..n {
            if let (Ok(Answer::Identity(id)), _) = cache
                .resolve(&key(i), || async { unreachable!("filled") })
                .await
            {
                std::hint::black_box(id.wire_headers().count());
            }
        }
    });
    let took = started.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    let held = cache
        .stats()
        .snapshot()
        .iter()
        .find(|(k, _)| *k == "size")
        .map_or(0, |(_, v)| *v);
    // Per entry held, not per entry inserted: evicted or refused entries cost nothing.
    (grown as f64 / held.max(1) as f64, took, held)
}

/// One fill in this process: prints `bytes_per_entry held seconds`.
fn child(kind: &str, n: usize) {
    let (per_entry, took, held) = fill(n, kind == "valid");
    println!("{per_entry:.1} {held} {:.3}", took.as_secs_f64());
}

/// Each fill runs in a fresh process: freed memory is not returned to the system, so a second
/// fill in the same process would reuse the first one's pages and look cheaper than it is.
fn measure(kind: &str, n: usize) -> (f64, i64, f64) {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(["--fill", kind, &n.to_string()])
        .output()
        .expect("run fill");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace();
    let mut next = || {
        f.next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (next(), next() as i64, next())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fill") {
        let kind = args.get(i + 1).map_or("valid", String::as_str);
        let n = args.get(i + 2).and_then(|v| v.parse().ok()).unwrap_or(1000);
        return child(kind, n);
    }
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !args.iter().any(|a| a == "--bench");
    let n: usize = std::env::var("AUTHGATE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10_000 } else { 1_000_000 });
    let (anon, held_anon, t_anon) = measure("anonymous", n);
    let (valid, held_valid, t_valid) = measure("valid", n);
    println!("cache_memory: {n} entries per fill, each fill in a fresh process");
    println!("  baseline (anonymous answers): {anon:.0} bytes/entry RSS, {held_anon} held, filled in {t_anon:.2}s");
    println!("  valid answers (8 headers):    {valid:.0} bytes/entry RSS, {held_valid} held, filled in {t_valid:.2}s");
    // The figure counts only if the cache held every entry it was given.
    let all_held = held_valid == n as i64 && held_anon == n as i64;
    println!(
        "  ratio valid/baseline: {:.2}; target <= 512 bytes/entry: {}",
        valid / anon.max(1.0),
        match (all_held, valid <= 512.0) {
            (false, _) => "NOT met (not every entry was held)",
            (true, true) => "met",
            (true, false) => "NOT met",
        }
    );
}
