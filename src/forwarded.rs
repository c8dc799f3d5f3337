//! `X-Forwarded-For/Proto/Host`, rebuilt by authgate; client copies count only from trusted proxies.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::{PreparedHeaderName, RequestHeader};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(FOR);
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(PROTO);
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(HOST);
const FOR: &str = "x-forwarded-for";
const PROTO: &str = "x-forwarded-proto";
const HOST: &str = "x-forwarded-host";
/// The names ready-made as Pingora takes them (written in lower case, as before): setting one
/// neither parses nor copies the name.
static FOR_WIRE: PreparedHeaderName = PreparedHeaderName::from_static(FOR);
static PROTO_WIRE: PreparedHeaderName = PreparedHeaderName::from_static(PROTO);
static HOST_WIRE: PreparedHeaderName = PreparedHeaderName::from_static(HOST);

/// Which peers may tell authgate who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// The forwarding headers authgate sends to the resolver and to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub for_: Option<HeaderValue>,
    pub proto: HeaderValue,
    pub host: Option<HeaderValue>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Builds the forwarding headers for a request that arrived from `peer`, over TLS or not;
    /// `own_host` is the request's canonical host (see `request`).
    pub fn derive(
        &self,
        req: &RequestHeader,
        own_host: Option<HeaderValue>,
        peer: Option<IpAddr>,
        tls: bool,
    ) -> Forwarded {
        let trusted = peer.is_some_and(|ip| self.trusts(ip));
        let own_proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        let peer_value = peer.map(|ip| ip_value(canonical(ip)));
        if !trusted {
            return Forwarded {
                for_: peer_value,
                proto: own_proto,
                host: own_host,
            };
        }
        let mut chain: Vec<&[u8]> = req
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let peer_text;
        if let Some(p) = &peer_value {
            peer_text = p.clone();
            chain.push(peer_text.as_bytes());
        }
        let for_ = HeaderValue::from_bytes(&chain.join(&b", "[..]))
            .ok()
            .or(peer_value);
        let proto = match req.headers.get(&X_FORWARDED_PROTO) {
            Some(v) if v == "https" || v == "http" => v.clone(),
            _ => own_proto,
        };
        let host = req.headers.get(&X_FORWARDED_HOST).cloned().or(own_host);
        Forwarded { for_, proto, host }
    }
}

/// An IPv4 client seen through a dual-stack socket is still an IPv4 client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// An address as a header value. IPv4, nearly every peer, is written digit by digit: through
/// `Display` it cost more than the rest of deriving the forwarding headers.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return header_value(&ip.to_string());
    };
    let mut text = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            text[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            text[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        text[n] = b'0' + octet % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&text[..n]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn header_value(text: &str) -> HeaderValue {
    // An IP address in text form is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

impl Forwarded {
    /// How many headers `apply` sets at most.
    pub const HEADERS: usize = 3;

    /// Replaces any client copies with authgate's values.
    pub fn apply(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        match &self.for_ {
            Some(v) => req.insert_header(&FOR_WIRE, v.clone())?,
            None => {
                req.remove_header(&X_FORWARDED_FOR);
            }
        }
        req.insert_header(&PROTO_WIRE, self.proto.clone())?;
        match &self.host {
            Some(v) => req.insert_header(&HOST_WIRE, v.clone())?,
            None => {
                req.remove_header(&X_FORWARDED_HOST);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "forwarded/tests.rs"]
mod tests;
