//! The process's sections: `pingora:` (Pingora's own `ServerConf`, its keys and the values it
//! would unwrap), `listen:`, `client:`, `trusted_proxies:`, `reload:` and `access_log:`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use pingora::server::configuration::ServerConf;

use super::file::{AccessLogFile, ClientFile, FormatFile, ListenFile, ReloadFile};
use super::paths::relative_to;
use super::{Bad, LOG_TARGET};
use crate::access_log::{AccessLogSettings, Format};
use crate::connections::{ClientLimits, DRAIN_WINDOW};
use crate::forwarded::TrustedProxies;

/// One listening socket, as Pingora will open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub h2: bool,
    pub h2c: bool,
}

pub const DEFAULT_PID_FILE: &str = "/tmp/authgate.pid";
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/authgate_upgrade.sock";

/// `pingora:` as parsed (`conf`), checked against the file's text: unknown keys refused,
/// authgate's own pid file and upgrade socket where the file names none, values Pingora
/// would unwrap refused.
pub(super) fn pingora(conf: ServerConf, text: &str) -> Result<ServerConf, Bad> {
    // ServerConf accepts unknown keys silently; a typo there must not pass either.
    let raw: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| (String::new(), e.to_string()))?;
    let pingora_raw = raw.get("pingora");
    check_pingora_keys(pingora_raw).map_err(|(k, r)| (format!("pingora.{k}"), r))?;
    let has = |k: &str| pingora_raw.and_then(|p| p.get(k)).is_some();
    let mut server = conf;
    if !has("pid_file") {
        server.pid_file = DEFAULT_PID_FILE.into();
    }
    if !has("upgrade_sock") {
        server.upgrade_sock = DEFAULT_UPGRADE_SOCK.into();
    }
    validate_server(&server).map_err(|(k, r)| (format!("pingora.{k}"), r))?;
    Ok(server)
}

fn check_pingora_keys(raw: Option<&serde_yaml::Value>) -> Result<(), Bad> {
    let Some(raw) = raw else { return Ok(()) };
    let Some(map) = raw.as_mapping() else {
        return Err((String::new(), "must be a mapping".into()));
    };
    let known =
        serde_yaml::to_value(ServerConf::default()).map_err(|e| (String::new(), e.to_string()))?;
    for key in map.keys() {
        let name = key.as_str().unwrap_or_default();
        if known.get(name).is_none() {
            return Err((name.to_string(), "unknown Pingora server setting".into()));
        }
    }
    Ok(())
}

fn validate_server(s: &ServerConf) -> Result<(), Bad> {
    // Pingora drops the runtime, with every request still on it, when the grace period ends.
    if let Some(g) = s
        .grace_period_seconds
        .filter(|g| *g <= DRAIN_WINDOW.as_secs())
    {
        log::warn!(
            target: LOG_TARGET,
            "pingora.grace_period_seconds is {g}: requests in flight when a graceful upgrade or shutdown stops the listeners are cut after {g} s"
        );
    }
    // Pingora parses these with unwrap() when it builds connectors.
    for (k, list, v4) in [
        ("client_bind_to_ipv4", &s.client_bind_to_ipv4, true),
        ("client_bind_to_ipv6", &s.client_bind_to_ipv6, false),
    ] {
        for (i, ip) in list.iter().enumerate() {
            match ip.parse::<IpAddr>() {
                Ok(a) if a.is_ipv4() == v4 => {}
                _ => {
                    return Err((
                        format!("{k}[{i}]"),
                        format!("`{ip}` is not an IPv{} address", if v4 { 4 } else { 6 }),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// `listen:`: addresses once each, TLS pairs read (so `-t` catches a bad one).
pub(super) fn listen(listen: &[ListenFile], base: Option<&Path>) -> Result<Vec<Listener>, Bad> {
    if listen.is_empty() {
        return Err(("listen".into(), "at least one listener is required".into()));
    }
    let mut out = Vec::with_capacity(listen.len());
    for (i, l) in listen.iter().enumerate() {
        let addr: SocketAddr = l.addr.parse().map_err(|_| {
            (
                format!("listen[{i}].addr"),
                format!("`{}` is not an IP:port address", l.addr),
            )
        })?;
        if out.iter().any(|o: &Listener| o.addr == addr) {
            return Err((
                format!("listen[{i}].addr"),
                format!("{addr} is listed twice"),
            ));
        }
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                if l.h2c {
                    return Err((
                        format!("listen[{i}].h2c"),
                        "h2c is HTTP/2 without TLS; this listener has TLS".into(),
                    ));
                }
                let (cert, key) = (relative_to(base, &t.cert), relative_to(base, &t.key));
                crate::tls::Pair::read(&cert, &key).map_err(|why| {
                    (
                        format!("listen[{i}].tls"),
                        format!("listener {addr}: {why}"),
                    )
                })?;
                Some((cert, key))
            }
        };
        out.push(Listener {
            addr,
            tls,
            h2: l.h2,
            h2c: l.h2c,
        });
    }
    Ok(out)
}

/// `client:`, each limit it leaves out at `ClientLimits`' default.
pub(super) fn client_limits(c: &ClientFile) -> ClientLimits {
    let d = ClientLimits::default();
    ClientLimits {
        max_connections: c.max_connections.unwrap_or(d.max_connections),
        header_timeout: c.header_timeout.unwrap_or(d.header_timeout),
        keepalive_timeout: c.keepalive_timeout.unwrap_or(d.keepalive_timeout),
        max_requests: match c.max_requests_per_connection {
            None => d.max_requests,
            Some(n) => (n > 0).then_some(n),
        },
        max_header_bytes: c.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: c.max_headers.unwrap_or(d.max_headers),
    }
}

/// `trusted_proxies:`, each an IP address or a CIDR network.
pub(super) fn trusted_proxies(list: &[String]) -> Result<TrustedProxies, Bad> {
    let mut nets = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        nets.push(parse_net(t).map_err(|r| (format!("trusted_proxies[{i}]"), r))?);
    }
    Ok(TrustedProxies::new(nets))
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR network"))
}

/// `reload:`: how often to look at the file, when watching is on.
pub(super) fn watch(r: &ReloadFile) -> Result<Option<Duration>, Bad> {
    if r.watch && r.interval.is_zero() {
        return Err(("reload.interval".into(), "must be greater than zero".into()));
    }
    Ok(r.watch.then_some(r.interval))
}

/// `access_log:`, `None` when it is off.
pub(super) fn access_log(
    a: &AccessLogFile,
    base: Option<&Path>,
) -> Result<Option<AccessLogSettings>, Bad> {
    if !a.enabled {
        return Ok(None);
    }
    let path = a.path.as_ref().map(|p| relative_to(base, p));
    // Opened by the runtime; its folder is looked at here, so `-t` catches a typo.
    if let Some(p) = &path {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err((
                "access_log.path".into(),
                format!("the folder of `{}` does not exist", p.display()),
            ));
        }
    }
    Ok(Some(AccessLogSettings {
        format: format(a.format),
        path,
        include_query: a.include_query,
    }))
}

fn format(f: FormatFile) -> Format {
    match f {
        FormatFile::Json => Format::Json,
        FormatFile::Text => Format::Text,
    }
}
