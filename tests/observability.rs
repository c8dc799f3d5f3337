//! The dashboard (`deploy/grafana/authgate.json`) and the alert rules
//! (`deploy/prometheus/authgate-rules.yaml`) read only what authgate exposes: no dead panel, no
//! silent alert. authgate is started with everything that adds series (admin listener, a TLS
//! listener, a route with a response cache, a fleet on a real Redis, a pool with a health check,
//! Authgear webhooks), traffic makes every labelled series appear, and every metric, label and
//! label value the files name is looked up in `/metrics`; the other way round, every family
//! `/metrics` has must be read by a panel or a rule. Without authgate: every alert has a
//! severity, a summary, a description and a runbook that is a README section, and unit tests
//! (`authgate-rules.test.yaml`, run by promtool in `make test-observability`) where it fires and
//! where it stays silent.
//!
//! The names come from the PromQL by a deliberately small tokenizer (`references`): string
//! literals are skipped whole; an identifier (`[A-Za-z_:][A-Za-z0-9_:]*`) starting with
//! `authgate_` is a metric of authgate's, one starting with `authgate:` a series the rules file
//! records; the `{...}` right after a name holds its matchers; `rate(`, `irate(` or `increase(`
//! just before a name means it is read as a counter. A name is live when `/metrics` has a sample
//! of exactly that name, so a histogram is read through `_bucket`, `_sum` or `_count` (its
//! family, for the type checks, is the name without that suffix when `# TYPE` says histogram).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;

const DASHBOARD: &str = "deploy/grafana/authgate.json";
const RULES: &str = "deploy/prometheus/authgate-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/authgate-rules.test.yaml";

/// Series the files name that authgate does not expose yet, each with what makes it appear.
/// The test passes while they are missing and fails once one is exposed, so that the entry is
/// removed and the series is checked like the others.
const PENDING: &[(&str, &str)] = &[];

/// Families of `/metrics` that neither the dashboard nor the rules read, on purpose.
const UNREAD: &[&str] = &[];

/// Labels Prometheus adds when it scrapes (never in `/metrics` itself).
const TARGET_LABELS: &[&str] = &["job", "instance"];

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

// ------------------------------------------------------------------ the PromQL tokenizer

/// One label matcher of a selector: `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    label: String,
    op: &'static str,
    value: String,
}

/// A series name an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    name: String,
    matchers: Vec<Matcher>,
    /// Read by `rate`, `irate` or `increase`: must be a counter (or a histogram's series).
    as_counter: bool,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_continue(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The end of the string literal opening at `at` (just past its closing quote), and its value.
fn string_at(s: &[u8], at: usize) -> (usize, String) {
    let quote = s[at];
    let mut value = Vec::new();
    let mut i = at + 1;
    while i < s.len() && s[i] != quote {
        if s[i] == b'\\' && quote != b'`' && i + 1 < s.len() {
            i += 1;
        }
        value.push(s[i]);
        i += 1;
    }
    assert!(
        i < s.len(),
        "unterminated string in {:?}",
        String::from_utf8_lossy(s)
    );
    (i + 1, String::from_utf8_lossy(&value).into_owned())
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The matchers of the selector opening at `at` (`{`); the index just past its `}`.
fn matchers_at(expr: &str, at: usize) -> (usize, Vec<Matcher>) {
    let s = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = at + 1;
    loop {
        i = skip_space(s, i);
        if s.get(i) == Some(&b'}') {
            return (i + 1, out);
        }
        let start = i;
        while i < s.len() && ident_continue(s[i]) {
            i += 1;
        }
        let label = expr[start..i].to_string();
        i = skip_space(s, i);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| s[i..].starts_with(op.as_bytes()))
            .unwrap_or_else(|| panic!("no matcher operator after {label:?} in {expr}"));
        i = skip_space(s, i + op.len());
        assert!(
            matches!(s.get(i), Some(b'"' | b'\'' | b'`')),
            "a matcher's value is not a string in {expr}"
        );
        let (end, value) = string_at(s, i);
        out.push(Matcher { label, op, value });
        i = skip_space(s, end);
        match s.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => panic!("cannot read the selector at byte {at} of {expr}"),
        }
    }
}

/// The `authgate_` and `authgate:` series `expr` reads (see the module's comment).
fn references(expr: &str) -> Vec<Reference> {
    let s = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = string_at(s, i).0;
        } else if c.is_ascii_digit() {
            // A number or a duration (`1e3`, `5m`): not a name.
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'.') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident_continue(s[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if !name.starts_with("authgate_") && !name.starts_with("authgate:") {
                continue;
            }
            let before = expr[..start].trim_end();
            let as_counter = before.strip_suffix('(').is_some_and(|f| {
                let f = f.trim_end();
                f.ends_with("rate") || f.ends_with("increase")
            });
            let mut matchers = Vec::new();
            let next = skip_space(s, i);
            if s.get(next) == Some(&b'{') {
                let (end, m) = matchers_at(expr, next);
                matchers = m;
                i = end;
            }
            out.push(Reference {
                name: name.to_string(),
                matchers,
                as_counter,
            });
        } else {
            i += 1;
        }
    }
    out
}

// ------------------------------------------------------------------ the exposition

/// What `/metrics` exposes: each family's `# TYPE`, and every sample's name and labels.
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<(String, HashMap<String, String>)>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let s = line.as_bytes();
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..end].to_string();
            let mut labels = HashMap::new();
            if s.get(end) == Some(&b'{') {
                let mut i = end + 1;
                while s[i] != b'}' {
                    let eq = i + line[i..].find('=').expect("label =");
                    let (next, value) = string_at(s, eq + 1);
                    labels.insert(line[i..eq].to_string(), value);
                    i = next;
                    if s[i] == b',' {
                        i += 1;
                    }
                }
            }
            samples.push((name, labels));
        }
        Exposition { types, samples }
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _)| n == name)
    }

    /// The family a sample name belongs to, and its type.
    fn family(&self, name: &str) -> (String, String) {
        if let Some(kind) = self.types.get(name) {
            return (name.to_string(), kind.clone());
        }
        for (suffix, kinds) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(kind) = self.types.get(base).filter(|k| kinds.contains(&k.as_str())) {
                    return (base.to_string(), kind.clone());
                }
            }
        }
        (name.to_string(), "untyped".to_string())
    }

    /// The values label `label` takes on the samples named `name`.
    fn values(&self, name: &str, label: &str) -> BTreeSet<&str> {
        self.samples
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, l)| l.get(label).map(String::as_str))
            .collect()
    }
}

/// What is wrong with `r` (read in `place`) against `/metrics`: nothing when it is live.
/// Matchers on the scrape's own labels or with a Grafana `$variable` are not checked; `=~`
/// values are checked when they are a plain alternation (`a|b|c`), other regexes only for
/// their label; `!=` and `!~` only for their label.
fn problems(r: &Reference, place: &str, exp: &Exposition) -> Vec<String> {
    if !exp.has(&r.name) {
        let hint = match exp.types.get(&r.name).map(String::as_str) {
            Some("histogram") => " (a histogram: read its _bucket, _sum or _count)",
            _ => "",
        };
        return vec![format!("{place}: {} is not exposed{hint}", r.name)];
    }
    let mut out = Vec::new();
    let (family, kind) = exp.family(&r.name);
    if r.as_counter && kind == "gauge" {
        out.push(format!("{place}: rate()/increase() of {}, a gauge", r.name));
    }
    if r.name == family && kind == "histogram" {
        out.push(format!("{place}: {} is a histogram's family name", r.name));
    }
    for m in &r.matchers {
        if TARGET_LABELS.contains(&m.label.as_str()) || m.value.contains('$') {
            continue;
        }
        let values = exp.values(&r.name, &m.label);
        if values.is_empty() {
            out.push(format!("{place}: {} has no label {}", r.name, m.label));
            continue;
        }
        let wanted: Vec<&str> = match m.op {
            "=" => vec![m.value.as_str()],
            "=~" if m
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'|') =>
            {
                m.value.split('|').collect()
            }
            _ => vec![],
        };
        for v in wanted {
            if !values.contains(v) {
                out.push(format!(
                    "{place}: no {}{{{}=\"{v}\"}} (values: {values:?})",
                    r.name, m.label
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ the files

/// Every PromQL expression of the dashboard, with where it is (panel title and query).
fn dashboard_expressions() -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&repo_file(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let mut out = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            let title = p["title"].as_str().unwrap_or("?");
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            assert!(!targets.is_empty(), "panel {title:?} has no query");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "panel {title:?} does not read the dashboard's data source"
            );
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(
                    !expr.trim().is_empty(),
                    "panel {title:?} has an empty query"
                );
                let place = format!("panel {title:?} query {}", t["refId"]);
                out.push((place, expr.to_string()));
            }
        }
    }
    walk(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let query = match &v["query"] {
            serde_json::Value::Object(q) => q.get("query").cloned().unwrap_or_default(),
            q => q.clone(),
        };
        if v["type"] == "query" {
            let query = query.as_str().unwrap_or("").to_string();
            out.push((format!("variable {}", v["name"]), query));
        }
    }
    out
}

fn rules() -> serde_yaml::Value {
    serde_yaml::from_str(&repo_file(RULES)).unwrap_or_else(|e| panic!("{RULES}: {e}"))
}

fn rule_list(rules: &serde_yaml::Value) -> Vec<&serde_yaml::Value> {
    let groups = rules["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect()
}

/// Every expression of the rules file (with the rule's name), and the series it records.
fn rule_expressions() -> (Vec<(String, String)>, BTreeSet<String>) {
    let rules = rules();
    let (mut exprs, mut recorded) = (Vec::new(), BTreeSet::new());
    for rule in rule_list(&rules) {
        let name = match (rule["alert"].as_str(), rule["record"].as_str()) {
            (Some(alert), _) => format!("alert {alert}"),
            (None, Some(record)) => {
                recorded.insert(record.to_string());
                format!("record {record}")
            }
            _ => panic!("a rule that neither alerts nor records: {rule:?}"),
        };
        let expr = rule["expr"].as_str().expect("expr").to_string();
        exprs.push((name, expr));
    }
    (exprs, recorded)
}

/// The problems of every expression of both files against one scrape; pending series that
/// are missing are left out.
fn check_files(text: &str) -> (Vec<String>, usize) {
    let exp = Exposition::parse(text);
    let (rule_exprs, recorded) = rule_expressions();
    let mut out = Vec::new();
    let mut checked = 0;
    for (place, expr) in dashboard_expressions().into_iter().chain(rule_exprs) {
        for r in references(&expr) {
            checked += 1;
            if r.name.starts_with("authgate:") {
                if !recorded.contains(&r.name) {
                    out.push(format!("{place}: {} is recorded by no rule", r.name));
                }
                continue;
            }
            let pending = PENDING.iter().any(|(name, _)| *name == r.name);
            if pending && !exp.has(&r.name) {
                continue;
            }
            out.extend(problems(&r, &place, &exp));
        }
    }
    (out, checked)
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn the_tokenizer_reads_names_matchers_and_counter_functions() {
    let expr = r#"sum by (route) (rate(authgate_requests_total{job=~"$job", status="5xx"}[$__rate_interval]))
        / histogram_quantile(0.99, sum by (le) (irate(authgate_request_duration_seconds_bucket[5m])))
        + authgate_cache_size{note="authgate_not_a_name"} * 1e3 > authgate:ratio_rate5m
        or label_values(authgate_backend_up, instance)"#;
    let refs = references(expr);
    let names: Vec<(&str, bool)> = refs
        .iter()
        .map(|r| (r.name.as_str(), r.as_counter))
        .collect();
    assert_eq!(
        names,
        [
            ("authgate_requests_total", true),
            ("authgate_request_duration_seconds_bucket", true),
            ("authgate_cache_size", false),
            ("authgate:ratio_rate5m", false),
            ("authgate_backend_up", false),
        ]
    );
    assert_eq!(
        refs[0].matchers,
        [
            Matcher {
                label: "job".into(),
                op: "=~",
                value: "$job".into()
            },
            Matcher {
                label: "status".into(),
                op: "=",
                value: "5xx".into()
            },
        ]
    );
}

/// The checker itself: a name, a label value or a use that does not fit `/metrics` is reported.
#[test]
fn a_dead_name_label_or_misuse_is_reported() {
    let exp = Exposition::parse(
        "# TYPE authgate_requests_total counter\n\
         authgate_requests_total{route=\"*/\",status=\"2xx\"} 3\n\
         # TYPE authgate_draining gauge\nauthgate_draining 0\n\
         # TYPE authgate_resolver_latency_seconds histogram\n\
         authgate_resolver_latency_seconds_bucket{le=\"+Inf\"} 1\n\
         authgate_resolver_latency_seconds_sum 0.1\nauthgate_resolver_latency_seconds_count 1\n",
    );
    let check = |expr: &str| -> Vec<String> {
        references(expr)
            .iter()
            .flat_map(|r| problems(r, "here", &exp))
            .collect()
    };
    assert_eq!(
        check(r#"rate(authgate_requests_total{status="2xx",job="x"}[5m])"#),
        Vec::<String>::new()
    );
    assert_eq!(
        check("histogram_quantile(0.9, rate(authgate_resolver_latency_seconds_bucket[5m])) / authgate_resolver_latency_seconds_count"),
        Vec::<String>::new()
    );
    for (expr, why) in [
        ("authgate_bogus_total", "is not exposed"),
        ("authgate_resolver_latency_seconds", "a histogram"),
        (
            r#"authgate_requests_total{status="6xx"}"#,
            "no authgate_requests_total{status=\"6xx\"}",
        ),
        (
            r#"authgate_requests_total{status=~"2xx|6xx"}"#,
            "status=\"6xx\"",
        ),
        (
            r#"authgate_requests_total{upstream="app"}"#,
            "has no label upstream",
        ),
        ("increase(authgate_draining[5m])", "a gauge"),
    ] {
        let found = check(expr);
        assert!(
            found.len() == 1 && found[0].contains(why),
            "{expr}: {found:?}"
        );
    }
}

/// Every alert has a severity, a summary, a description and a runbook that is a README section,
/// and the unit tests show it both firing and silent.
#[test]
fn every_alert_has_a_runbook_and_tests_firing_and_silent() {
    let readme = repo_file("README.md");
    let mut anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    for part in readme.split("<a id=\"").skip(1) {
        anchors.insert(part.split('"').next().unwrap_or("").to_string());
    }
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&repo_file(RULE_TESTS)).unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<&serde_yaml::Value> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .collect();
    let rules = rules();
    let alerts: Vec<_> = rule_list(&rules)
        .into_iter()
        .filter(|r| r["alert"].is_string())
        .collect();
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for rule in alerts {
        let alert = rule["alert"].as_str().unwrap_or("");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{alert}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{alert}: no {key}"
            );
        }
        let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
        let target = runbook.strip_prefix("README.md#").unwrap_or("");
        assert!(
            anchors.contains(target),
            "{alert}: runbook {runbook} is no README section"
        );
        let of_alert = |firing: bool| {
            cases.iter().any(|c| {
                c["alertname"].as_str() == Some(alert)
                    && c["exp_alerts"].as_sequence().is_none_or(Vec::is_empty) != firing
            })
        };
        assert!(of_alert(true), "{alert}: no unit test where it fires");
        assert!(
            of_alert(false),
            "{alert}: no unit test where it stays silent"
        );
    }
}

const WEBHOOK_SECRET: &str = "whsec-observability-0123456789abcdef";

const ROUTES: &str = r#"
- path: /static
  upstream: app
  auth: public
  cache:
    ttl: 60s
- path: /gone
  upstream: gone
  auth: public
- path: /
  upstream: app
"#;

/// Starts authgate with every part that adds series, sends the traffic that makes every
/// labelled series appear, and checks every name the dashboard and the rules read against
/// `/metrics` (polled until all are there: some are counted after the client has its answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_rules_read_is_exposed() {
    let redis = RedisServer::start();
    let stack = Stack::builder();
    let (ca, cert, key) = test_pki(&["authgate.test"]);
    let cert = stack.file("tls-cert.pem", &cert);
    let key = stack.file("tls-key.pem", &key);
    let fleet_secret = stack.file("fleet-secret", &hex::encode(rand::random::<[u8; 32]>()));
    let webhook_secret = stack.file("webhook-secret", &format!("{WEBHOOK_SECRET}\n"));
    let tls = closed_port();
    let s = stack
        .pool(
            "app",
            Pool::echoes(1).keys(
                r#"
                health_check:
                  kind: http
                  interval: 200ms
                "#,
            ),
        )
        // Nothing listens there: a request to /gone is an upstream error.
        .pool("gone", Pool::at(&[closed_port()]))
        .routes(ROUTES)
        .listener(&format!(
            "addr: {tls}\ntls:\n  cert: {}\n  key: {}\n",
            cert.display(),
            key.display()
        ))
        .admin_keys(&format!(
            "webhook:\n  secret_file: {}\n",
            webhook_secret.display()
        ))
        .yaml(&format!(
            "fleet:\n  redis:\n    url: {}\n  secret_file: {}\n",
            redis.url(),
            fleet_secret.display()
        ))
        .start()
        .await;
    let (proxy, admin) = (&s.proxy, s.admin());
    wait_for(tls);
    metric_reaches(admin, "authgate_fleet_up", 1.0).await;

    // An identified request (resolver call, answer cache, shared cache), a response cache miss
    // and hit, an upstream error, a request over TLS.
    get_as(proxy, "/", "session=sess-alice").await;
    for _ in 0..2 {
        echoed(fetch(proxy, "/static/app.js").await).await;
    }
    assert_eq!(fetch(proxy, "/gone").await.status(), 502);
    let tls_client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .resolve("authgate.test", tls)
        .build()
        .expect("client");
    send_echo(tls_client.get(format!("https://authgate.test:{}/", tls.port()))).await;
    // Authgear webhooks: a delivery without a signature, and a well-signed event nothing acts on.
    let hook = format!("http://{admin}/hooks/authgear");
    let r = client()
        .post(&hook)
        .body("{}")
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status(), 401);
    let event = serde_json::json!({
        "id": "evt-observability",
        "seq": 1,
        "type": "user.profile.updated",
        "payload": { "user": { "id": "user-alice" } },
        "context": { "timestamp": unix_now(), "user_id": "user-alice" }
    })
    .to_string();
    let r = client()
        .post(&hook)
        .header(
            "x-authgear-body-signature",
            webhook_signature(WEBHOOK_SECRET, event.as_bytes()),
        )
        .body(event)
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, checked) = loop {
        let text = scrape(admin).await;
        let (found, checked) = check_files(&text);
        if found.is_empty() {
            break (text, checked);
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard or the rules read what /metrics does not have:\n  {}\n\n/metrics:\n{text}",
            found.join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The other way round: every family /metrics exposes is on the dashboard or in the rules
    // (a new series gets a panel, or a line in UNREAD saying why not).
    let exp = Exposition::parse(&text);
    let read: BTreeSet<String> = dashboard_expressions()
        .into_iter()
        .chain(rule_expressions().0)
        .flat_map(|(_, expr)| references(&expr))
        .map(|r| exp.family(&r.name).0)
        .collect();
    let unread: Vec<&String> = exp
        .types
        .keys()
        .filter(|f| !read.contains(*f) && !UNREAD.contains(&f.as_str()))
        .collect();
    assert!(
        unread.is_empty(),
        "exposed but on no panel and in no rule: {unread:?} ({checked} references read)"
    );
    for (name, why) in PENDING {
        assert!(
            !exp.has(name),
            "{name} is exposed now: remove it from PENDING in tests/observability.rs"
        );
        eprintln!("pending, not checked: {name} ({why})");
    }
}
