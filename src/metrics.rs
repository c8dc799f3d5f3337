//! Prometheus metrics: the registry and its series (requests and their durations, resolver
//! calls and latency, upstream errors, reloads, drain state, in-flight requests, webhook
//! events, client connections). A leaf: the parts whose counters are read at scrape (the
//! answer cache, the fleet, the response cache, the pools) render their own series, and the
//! admin endpoint composes the page.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub client_disconnects: IntCounter,
    pub draining: IntGauge,
    pub resolver_retries: IntCounter,
    pub tls_certificate_expiry: IntGaugeVec,
    pub resolver_calls: IntCounterVec,
    pub resolver_latency: Histogram,
    pub upstream_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub inflight: IntGauge,
    pub webhook_events: IntCounterVec,
    pub webhook_rejections: IntCounterVec,
    pub client_connections: IntGauge,
    pub connections_closed: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "authgate_requests_total",
            "Requests answered, by route and status class",
        ),
        &["route", "status"],
    )?;
    let request_duration = HistogramVec::new(
        HistogramOpts::new(
            "authgate_request_duration_seconds",
            "Time from the request header to the end of the answer, by route and status class",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ]),
        &["route", "status"],
    )?;
    let client_disconnects = IntCounter::new(
        "authgate_client_disconnects_total",
        "Requests whose client went away before the answer was sent (logged as status 499)",
    )?;
    let draining = IntGauge::new(
        "authgate_draining",
        "1 from SIGTERM on: readiness answers 503 while the listeners drain",
    )?;
    let resolver_retries = IntCounter::new(
        "authgate_resolver_retries_total",
        "Resolves sent again on a new connection after a reused one failed before any answer byte",
    )?;
    let tls_certificate_expiry = IntGaugeVec::new(
        Opts::new(
            "authgate_tls_certificate_expiry_timestamp_seconds",
            "When the certificate a TLS listener serves expires (notAfter, Unix seconds)",
        ),
        &["listener"],
    )?;
    let resolver_calls = IntCounterVec::new(
        Opts::new(
            "authgate_resolver_calls_total",
            "Calls made to the resolver, by outcome",
        ),
        &["outcome"],
    )?;
    let resolver_latency = Histogram::with_opts(
        HistogramOpts::new(
            "authgate_resolver_latency_seconds",
            "Time a resolver call took",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
    )?;
    let upstream_errors = IntCounterVec::new(
        Opts::new(
            "authgate_upstream_errors_total",
            "Failed connections and exchanges with backends, by upstream",
        ),
        &["upstream"],
    )?;
    let reloads = IntCounterVec::new(
        Opts::new("authgate_reloads_total", "Configuration reloads, by result"),
        &["result"],
    )?;
    let inflight = IntGauge::new("authgate_inflight_requests", "Requests being handled")?;
    let webhook_events = IntCounterVec::new(
        Opts::new(
            "authgate_webhook_events_total",
            "Well-signed Authgear webhook events, by what they led to (purged, replayed, ignored)",
        ),
        &["result"],
    )?;
    let webhook_rejections = IntCounterVec::new(
        Opts::new(
            "authgate_webhook_rejections_total",
            "Refused Authgear webhook deliveries, by reason",
        ),
        &["reason"],
    )?;
    let client_connections =
        IntGauge::new("authgate_client_connections", "Open client connections")?;
    let connections_closed = IntCounterVec::new(
        Opts::new(
            "authgate_client_connections_closed_total",
            "Client connections closed by authgate's limits, by reason (over_limit, header_timeout)",
        ),
        &["reason"],
    )?;
    registry.register(Box::new(client_connections.clone()))?;
    registry.register(Box::new(connections_closed.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_duration.clone()))?;
    registry.register(Box::new(client_disconnects.clone()))?;
    registry.register(Box::new(draining.clone()))?;
    registry.register(Box::new(resolver_retries.clone()))?;
    registry.register(Box::new(tls_certificate_expiry.clone()))?;
    registry.register(Box::new(resolver_calls.clone()))?;
    registry.register(Box::new(resolver_latency.clone()))?;
    registry.register(Box::new(upstream_errors.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(inflight.clone()))?;
    registry.register(Box::new(webhook_events.clone()))?;
    registry.register(Box::new(webhook_rejections.clone()))?;
    // Series with a fixed set of labels start at zero, so a rate() or an alert on them has a
    // series to read before the first event.
    for result in ["ok", "failed"] {
        reloads.with_label_values(&[result]);
    }
    for reason in ["over_limit", "header_timeout"] {
        connections_closed.with_label_values(&[reason]);
    }
    Ok(Metrics {
        registry,
        requests,
        request_duration,
        client_disconnects,
        draining,
        resolver_retries,
        tls_certificate_expiry,
        resolver_calls,
        resolver_latency,
        upstream_errors,
        reloads,
        inflight,
        webhook_events,
        webhook_rejections,
        client_connections,
        connections_closed,
    })
}

/// The process's metrics. Building them cannot fail with these fixed names; if it did, the
/// process could not report anything, so failing loudly at first use is right.
pub static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().unwrap_or_else(|e| panic!("metrics registry: {e}")));

/// `2xx`, `4xx`, ... for a status code.
/// The status classes of `authgate_requests_total`, in `status_index` order.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// One route's request series (`authgate_requests_total` and
/// `authgate_request_duration_seconds`), looked up once when the runtime is built rather than
/// by label on every request.
pub struct RouteSeries {
    route: Box<str>,
    counters: [IntCounter; 6],
    /// Made on a class's first request: a route shows only the classes it answered, which
    /// keeps the histogram's series to what happens.
    durations: [OnceLock<Histogram>; 6],
}

pub type RequestCounters = Arc<RouteSeries>;

pub fn request_counters(route: &str) -> RequestCounters {
    Arc::new(RouteSeries {
        route: route.into(),
        counters: STATUS_CLASSES.map(|class| METRICS.requests.with_label_values(&[route, class])),
        durations: Default::default(),
    })
}

/// Counts one answered request of a route (`None`: refused before it had one) and how long
/// it took.
pub fn count_request(series: Option<&RequestCounters>, status: u16, took: Duration) {
    let class = match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    };
    let secs = took.as_secs_f64();
    match series {
        Some(s) => {
            s.counters[class].inc();
            s.durations[class]
                .get_or_init(|| {
                    METRICS
                        .request_duration
                        .with_label_values(&[&*s.route, STATUS_CLASSES[class]])
                })
                .observe(secs);
        }
        None => {
            let labels = ["none", STATUS_CLASSES[class]];
            METRICS.requests.with_label_values(&labels).inc();
            METRICS
                .request_duration
                .with_label_values(&labels)
                .observe(secs);
        }
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// One resolver call, by how it ended (the resolver's own label words).
pub fn resolver_call(outcome: &str, took: Duration) {
    METRICS.resolver_calls.with_label_values(&[outcome]).inc();
    METRICS.resolver_latency.observe(took.as_secs_f64());
}

/// Counts one request while it is handled.
pub struct InFlight;

impl InFlight {
    pub fn start() -> InFlight {
        METRICS.inflight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.inflight.dec();
    }
}

/// The registered series in the text exposition. The rest of the page is rendered by the
/// parts that own those series and composed by the admin endpoint.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        log::warn!("metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}
