//! `upstreams:`: backend pools (addresses resolved once, weights, load balancing, TLS,
//! timeouts), and the `health_check:` sections pools and the resolver share.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use http::Uri;

use super::file::{BackendFile, HealthFile, HealthKindFile, LbFile, UpstreamFile};
use super::paths::{read_ca_ders, relative_to};
use super::{under, Bad, LOG_TARGET};
use crate::resolver::POOL_NAME as RESOLVER_POOL;
use crate::upstreams::{HashKey, HealthKind, HealthSettings, LbKind, PoolSettings, TlsSettings};

/// `upstreams:`, pools by name.
pub(super) fn pools(
    upstreams: &BTreeMap<String, UpstreamFile>,
    base: Option<&Path>,
) -> Result<BTreeMap<String, PoolSettings>, Bad> {
    let mut pools = BTreeMap::new();
    for (name, up) in upstreams {
        if name == RESOLVER_POOL {
            // The resolver's own pool is listed under this name.
            return Err((
                format!("upstreams.{name}"),
                format!("`{RESOLVER_POOL}` is the resolver's pool; name this upstream otherwise"),
            ));
        }
        let settings = pool_settings(name, up, base).map_err(under(format!("upstreams.{name}")))?;
        pools.insert(name.clone(), settings);
    }
    Ok(pools)
}

fn pool_settings(name: &str, up: &UpstreamFile, base: Option<&Path>) -> Result<PoolSettings, Bad> {
    if up.backends.is_empty() {
        return Err((
            ".backends".into(),
            "at least one backend is required".into(),
        ));
    }
    let mut backends = Vec::with_capacity(up.backends.len());
    let mut first_host = None;
    for (i, b) in up.backends.iter().enumerate() {
        let (addr, weight, field) = match b {
            BackendFile::Addr(a) => (a, 1, format!(".backends[{i}]")),
            BackendFile::Weighted(w) => (&w.addr, w.weight, format!(".backends[{i}].addr")),
        };
        if weight == 0 {
            return Err((
                format!(".backends[{i}].weight"),
                "must be at least 1".into(),
            ));
        }
        if first_host.is_none() {
            first_host = addr
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string());
        }
        let resolved = resolve_addr(addr).map_err(|why| (field.clone(), why))?;
        if backends.iter().any(|(a, _)| *a == resolved) {
            return Err((field, format!("{resolved} is listed twice")));
        }
        backends.push((resolved, weight));
    }
    let lb = lb_kind(up.lb);
    let hash_key = match (&up.hash_key, lb) {
        (None, LbKind::Consistent) => {
            return Err((".hash_key".into(), "lb: consistent needs a hash_key".into()))
        }
        (Some(_), lb) if lb != LbKind::Consistent => {
            return Err((".hash_key".into(), "only applies to lb: consistent".into()))
        }
        (Some(k), _) => Some(HashKey::parse(k).map_err(|why| (".hash_key".to_string(), why))?),
        (None, _) => None,
    };
    let tls = match &up.tls {
        None => None,
        Some(t) => {
            let sni = match t.sni.clone().or(first_host) {
                Some(s) if !s.is_empty() => s,
                _ => {
                    return Err((
                        ".tls.sni".into(),
                        "set the server name to send and verify".into(),
                    ))
                }
            };
            let ca = match &t.ca_file {
                None => None,
                Some(p) => Some(
                    read_ca_ders(&relative_to(base, p))
                        .map_err(|why| (".tls.ca_file".to_string(), why))?,
                ),
            };
            if !t.verify {
                log::warn!(target: LOG_TARGET, "upstreams.{name}: TLS certificate verification is OFF: anyone on the path can impersonate these backends");
            }
            Some(TlsSettings {
                sni,
                verify: t.verify,
                ca,
            })
        }
    };
    let health = match &up.health_check {
        None => None,
        Some(h) => {
            let host = h
                .host
                .clone()
                .or_else(|| tls.as_ref().map(|t| t.sni.clone()))
                .unwrap_or_else(|| "localhost".into());
            Some(
                health_settings(h, &host, "/")
                    .map_err(|(k, why)| (format!(".health_check{k}"), why))?,
            )
        }
    };
    Ok(PoolSettings {
        name: name.to_string(),
        backends,
        lb,
        hash_key,
        connect_timeout: up.connect_timeout,
        read_timeout: up.read_timeout,
        write_timeout: up.write_timeout,
        tls,
        retries: up.retries,
        health,
    })
}

fn lb_kind(lb: LbFile) -> LbKind {
    match lb {
        LbFile::RoundRobin => LbKind::RoundRobin,
        LbFile::Random => LbKind::Random,
        LbFile::Consistent => LbKind::Consistent,
    }
}

/// Checks a `health_check` section; `host` and `path` are used where it names none.
pub(super) fn health_settings(
    h: &HealthFile,
    host: &str,
    path: &str,
) -> Result<HealthSettings, Bad> {
    let kind = match h.kind {
        HealthKindFile::Tcp => HealthKind::Tcp,
        HealthKindFile::Http => {
            let path = h.path.clone().unwrap_or_else(|| path.to_string());
            if !path.starts_with('/') || path.parse::<Uri>().is_err() {
                return Err((".path".into(), format!("`{path}` is not a request path")));
            }
            if !(100..=599).contains(&h.expected_status) {
                return Err((".expected_status".into(), "must be an HTTP status".into()));
            }
            let host = h.host.clone().unwrap_or_else(|| host.to_string());
            if http::HeaderValue::from_str(&host).is_err() {
                return Err((
                    ".host".into(),
                    format!("`{host}` is not a valid Host value"),
                ));
            }
            HealthKind::Http {
                path,
                host,
                status: h.expected_status,
            }
        }
    };
    Ok(HealthSettings {
        kind,
        interval: h.interval,
        timeout: h.timeout,
        rise: h.rise,
        fall: h.fall,
    })
}

/// `host:port` to one socket address, resolved once at load time.
pub fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut it = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}` (want host:port): {e}"))?;
    it.next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}
