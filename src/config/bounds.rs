//! Upper and lower bounds for every number in the file, checked before anything is sized
//! from one: a typo must be an error naming the field, never an allocation that aborts the
//! process or a deadline that overflows the clock.

use std::time::Duration;

use pingora::server::configuration::ServerConf;

use super::file::{BackendFile, FileConfig, HealthFile};
use super::server::client_limits;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `v` within `min..=max`, or the field and why not.
fn num(field: &str, v: usize, min: usize, max: usize) -> Result<(), (String, String)> {
    if v < min {
        Err((
            field.into(),
            format!("{v} is out of range: must be at least {min}"),
        ))
    } else if v > max {
        Err((
            field.into(),
            format!("{v} is out of range (allowed: {min} to {max})"),
        ))
    } else {
        Ok(())
    }
}
/// A duration within `min..=max`; below a non-zero `min`, zero is "must be greater than zero".
fn dur(field: &str, v: Duration, min: Duration, max: Duration) -> Result<(), (String, String)> {
    if (min..=max).contains(&v) {
        Ok(())
    } else if v.is_zero() {
        Err((field.into(), "must be greater than zero".into()))
    } else {
        let h = humantime::format_duration;
        Err((
            field.into(),
            format!(
                "{} is out of range (allowed: {} to {})",
                h(v),
                h(min),
                h(max)
            ),
        ))
    }
}

/// Every number in the file, against the range authgate accepts. The upper bounds are far
/// beyond any sensible setting; they exist so that a typo (or `18446744073709551615`) is an
/// error naming the field, never an allocation that aborts the process or a deadline that
/// overflows the clock.
pub(super) fn check_bounds(f: &FileConfig, server: &ServerConf) -> Result<(), (String, String)> {
    let ms = Duration::from_millis;
    let zero = Duration::ZERO;
    let rc = &f.response_cache;
    num("response_cache.max_bytes", rc.max_bytes, 65_536, 1 << 40)?;
    num(
        "response_cache.max_object_bytes",
        rc.max_object_bytes,
        1,
        1 << 32,
    )?;
    dur(
        "response_cache.lock_timeout",
        rc.lock_timeout,
        ms(1),
        Duration::from_secs(60),
    )?;
    for (i, r) in f.routes.iter().enumerate() {
        if let Some(c) = &r.cache {
            let year = DAY * 366;
            let field = |k: &str| format!("routes[{i}].cache.{k}");
            dur(&field("ttl"), c.ttl, zero, year)?;
            dur(&field("max_ttl"), c.max_ttl, Duration::from_secs(1), year)?;
            dur(
                &field("stale_while_revalidate"),
                c.stale_while_revalidate,
                zero,
                DAY,
            )?;
            dur(&field("stale_if_error"), c.stale_if_error, zero, DAY)?;
        }
    }
    if let Some(j) = &f.jwt {
        let s = Duration::from_secs;
        dur("jwt.leeway", j.leeway, zero, s(300))?;
        dur("jwt.refresh_interval", j.refresh_interval, s(10), DAY)?;
        dur(
            "jwt.unknown_kid_cooldown",
            j.unknown_kid_cooldown,
            s(1),
            HOUR,
        )?;
        dur("jwt.fetch_timeout", j.fetch_timeout, ms(100), s(60))?;
        num("jwt.max_token_bytes", j.max_token_bytes, 512, 64 * 1024)?;
    }
    num("pingora.threads", server.threads, 1, 1024)?;
    num(
        "pingora.listener_tasks_per_fd",
        server.listener_tasks_per_fd,
        1,
        64,
    )?;
    num(
        "pingora.upstream_keepalive_pool_size",
        server.upstream_keepalive_pool_size,
        0,
        65_536,
    )?;
    // Pingora sizes each connection pool as this product, and allocates for it at start.
    const MAX_POOLED: usize = 1 << 20;
    if server.upstream_keepalive_pool_size * server.threads > MAX_POOLED {
        return Err((
            "pingora.upstream_keepalive_pool_size".into(),
            format!(
                "{} x pingora.threads {} is more than {MAX_POOLED} pooled connections",
                server.upstream_keepalive_pool_size, server.threads
            ),
        ));
    }
    num("pingora.max_retries", server.max_retries, 1, 100)?;
    for (k, v) in [
        ("grace_period_seconds", server.grace_period_seconds),
        (
            "graceful_shutdown_timeout_seconds",
            server.graceful_shutdown_timeout_seconds,
        ),
    ] {
        if let Some(v) = v {
            dur(&format!("pingora.{k}"), Duration::from_secs(v), zero, DAY)?;
        }
    }
    for (k, v) in [
        (
            "upstream_connect_offload_threadpools",
            server.upstream_connect_offload_threadpools,
        ),
        (
            "upstream_connect_offload_thread_per_pool",
            server.upstream_connect_offload_thread_per_pool,
        ),
        (
            "downstream_tls_offload_threadpools",
            server.downstream_tls_offload_threadpools,
        ),
        (
            "downstream_tls_offload_thread_per_pool",
            server.downstream_tls_offload_thread_per_pool,
        ),
        (
            "upgrade_sock_connect_accept_max_retries",
            server.upgrade_sock_connect_accept_max_retries,
        ),
        ("max_blocking_threads", server.max_blocking_threads),
        (
            "runtime_metrics_poll_time_histogram_buckets",
            server.runtime_metrics_poll_time_histogram_buckets,
        ),
    ] {
        if let Some(v) = v {
            num(&format!("pingora.{k}"), v, 0, 1024)?;
        }
    }
    for (k, v) in [
        (
            "blocking_threads_ttl_seconds",
            server.blocking_threads_ttl_seconds,
        ),
        (
            "fast_timeout_to_tokio_threshold_seconds",
            server.fast_timeout_to_tokio_threshold_seconds,
        ),
        (
            "daemon_ready_timeout_seconds",
            server.daemon_ready_timeout_seconds.map(|n| n.get()),
        ),
        (
            "daemon_notify_timeout_seconds",
            server.daemon_notify_timeout_seconds.map(|n| n.get()),
        ),
    ] {
        if let Some(v) = v {
            dur(
                &format!("pingora.{k}"),
                Duration::from_secs(v.min(u64::MAX / 2)),
                zero,
                DAY,
            )?;
        }
    }

    if let Some(v) = server.runtime_metrics_poll_time_histogram_resolution_micros {
        if v > 60_000_000 {
            return Err((
                "pingora.runtime_metrics_poll_time_histogram_resolution_micros".into(),
                format!("{v} is out of range (allowed: 0 to 60000000)"),
            ));
        }
    }
    let r = &f.resolver;
    dur("resolver.connect_timeout", r.connect_timeout, ms(1), HOUR)?;
    dur("resolver.read_timeout", r.read_timeout, ms(1), HOUR)?;
    dur("resolver.timeout", r.timeout, ms(1), HOUR)?;
    dur("resolver.idle_timeout", r.idle_timeout, ms(1), DAY)?;
    num("resolver.backends", r.backends.len(), 0, 1024)?;
    num(
        "resolver.credential_cookies",
        r.credential_cookies.len(),
        0,
        64,
    )?;
    if let Some(h) = &r.health_check {
        health_bounds("resolver.health_check", h)?;
    }

    let c = &f.cache;
    // About 30 bytes an entry are allocated at start, about 450 once full.
    num("cache.capacity", c.capacity, 0, 10_000_000)?;
    dur("cache.ttl", c.ttl, zero, 7 * DAY)?;
    dur("cache.negative_ttl", c.negative_ttl, zero, 7 * DAY)?;
    dur("cache.stale_if_error", c.stale_if_error, zero, 7 * DAY)?;
    if let Some(d) = c.lock_timeout {
        dur("cache.lock_timeout", d, ms(1), HOUR)?;
    }
    if let Some(d) = c.refresh_after {
        dur("cache.refresh_after", d, zero, 7 * DAY)?;
    }

    num("upstreams", f.upstreams.len(), 0, 1024)?;
    for (name, up) in &f.upstreams {
        let at = |k: &str| format!("upstreams.{name}.{k}");
        num(&at("backends"), up.backends.len(), 0, 1024)?;
        for (i, b) in up.backends.iter().enumerate() {
            if let BackendFile::Weighted(w) = b {
                // Pingora's balancers hold a backend once per unit of weight.
                num(&at(&format!("backends[{i}].weight")), w.weight, 1, 256)?;
            }
        }
        dur(&at("connect_timeout"), up.connect_timeout, ms(1), HOUR)?;
        dur(&at("read_timeout"), up.read_timeout, ms(1), DAY)?;
        dur(&at("write_timeout"), up.write_timeout, ms(1), DAY)?;
        num(&at("retries"), up.retries, 0, 16)?;
        if let Some(h) = &up.health_check {
            health_bounds(&at("health_check"), h)?;
        }
    }
    num("routes", f.routes.len(), 0, 100_000)?;

    let l = client_limits(&f.client);
    num("client.max_connections", l.max_connections, 1, 1_000_000)?;
    dur("client.header_timeout", l.header_timeout, ms(100), HOUR)?;
    dur("client.keepalive_timeout", l.keepalive_timeout, zero, DAY)?;
    // Pingora reads at most 1 MiB of header and 256 fields; beyond that it answers 400 itself.
    num(
        "client.max_header_bytes",
        l.max_header_bytes,
        1024,
        1024 * 1024,
    )?;
    num("client.max_headers", l.max_headers, 8, 256)?;

    dur("reload.interval", f.reload.interval, zero, DAY)?;
    dur("shutdown.drain_delay", f.shutdown.drain_delay, zero, HOUR)?;
    if let Some(a) = &f.admin {
        if let Some(w) = &a.webhook {
            dur("admin.webhook.max_age", w.max_age, ms(1), 7 * DAY)?;
        }
    }
    if let Some(fl) = &f.fleet {
        // Waiting on Redis longer than a resolver call would defeat its purpose.
        dur("fleet.timeout", fl.timeout, ms(1), Duration::from_secs(10))?;
        num("fleet.prefix", fl.prefix.len(), 0, 64)
            .map_err(|(k, _)| (k, "must be at most 64 bytes".to_string()))?;
    }
    Ok(())
}

fn health_bounds(at: &str, h: &HealthFile) -> Result<(), (String, String)> {
    let field = |k: &str| format!("{at}.{k}");
    if !(100..=599).contains(&h.expected_status) {
        return Err((
            field("expected_status"),
            format!("{} is not an HTTP status", h.expected_status),
        ));
    }
    dur(
        &field("interval"),
        h.interval,
        Duration::from_millis(100),
        HOUR,
    )?;
    dur(&field("timeout"), h.timeout, Duration::from_millis(1), HOUR)?;
    num(&field("rise"), h.rise, 1, 100)?;
    num(&field("fall"), h.fall, 1, 100)
}
