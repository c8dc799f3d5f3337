//! A route's CORS policy and the one decision made from it for a request: authgate's own
//! answer to a preflight, the headers to add to the answer of an allowed origin, or nothing.
//!
//! Origins are matched exactly (`scheme://host[:port]`, as a browser serialises them): a
//! reflected `*` would hand any site the credentialed answers of the route's users.

use std::time::Duration;

use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, Method};

/// The response headers a policy owns: on its route, the backend's copies are dropped.
pub const RESPONSE_HEADERS: [HeaderName; 6] = [
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE,
];

/// What a route allows across origins; built from checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Serialised origins, lower case, without a default port.
    origins: Box<[String]>,
    methods: Box<[Method]>,
    /// Lower case.
    headers: Box<[HeaderName]>,
    expose: Box<[HeaderName]>,
    credentials: bool,
    max_age: Duration,
}

/// What a route's policy is made of, as the file gives it.
pub struct CorsSpec<'a> {
    pub origins: &'a [String],
    pub methods: &'a [String],
    pub headers: &'a [String],
    pub expose: &'a [String],
    pub credentials: bool,
    pub max_age: Duration,
}

/// A setting that cannot be a policy: the field (`allow_origins[1]`) and why.
pub type SpecError = (String, String);

/// The decision for one request on a route with a policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// A real preflight: authgate answers it itself with this status and these headers
    /// (204 and the grant, or 403 and no CORS headers when something asked is not allowed).
    Preflight {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Add these to the answer, whoever gives it (backend or authgate's own refusal).
    Headers(Vec<(HeaderName, HeaderValue)>),
    /// Not a cross-origin request this policy speaks to.
    Nothing,
}

impl CorsPolicy {
    pub fn new(spec: CorsSpec<'_>) -> Result<CorsPolicy, SpecError> {
        if spec.origins.is_empty() {
            return Err((
                "allow_origins".into(),
                "at least one origin is required".into(),
            ));
        }
        let mut origins = Vec::with_capacity(spec.origins.len());
        for (i, o) in spec.origins.iter().enumerate() {
            origins.push(parse_origin(o).map_err(|why| (format!("allow_origins[{i}]"), why))?);
        }
        let mut methods = Vec::with_capacity(spec.methods.len());
        for (i, m) in spec.methods.iter().enumerate() {
            let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
            let method = Method::from_bytes(m.as_bytes()).ok().filter(|_| ok);
            methods.push(method.ok_or_else(|| {
                (
                    format!("allow_methods[{i}]"),
                    format!("`{m}` is not an HTTP method in upper case"),
                )
            })?);
        }
        let names = |list: &[String], field: &str| -> Result<Vec<HeaderName>, SpecError> {
            list.iter()
                .enumerate()
                .map(|(i, h)| {
                    if h == "*" {
                        return Err((
                            format!("{field}[{i}]"),
                            "`*` is not allowed: name each header".into(),
                        ));
                    }
                    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        (
                            format!("{field}[{i}]"),
                            format!("`{h}` is not a header name"),
                        )
                    })
                })
                .collect()
        };
        Ok(CorsPolicy {
            origins: origins.into(),
            methods: methods.into(),
            headers: names(spec.headers, "allow_headers")?.into(),
            expose: names(spec.expose, "expose_headers")?.into(),
            credentials: spec.credentials,
            max_age: spec.max_age,
        })
    }

    fn allows(&self, origin: &[u8]) -> bool {
        self.origins.iter().any(|o| o.as_bytes() == origin)
    }

    /// The decision for a request with `method` and `headers` on this policy's route.
    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> Decision {
        let Some(origin) = single(headers, &ORIGIN) else {
            return Decision::Nothing;
        };
        let requested = single(headers, &ACCESS_CONTROL_REQUEST_METHOD);
        if method == Method::OPTIONS {
            if let Some(requested) = requested {
                return self.preflight(origin, requested, headers);
            }
        }
        if !self.allows(origin.as_bytes()) {
            return Decision::Headers(vec![(VARY, HeaderValue::from_static("Origin"))]);
        }
        let mut out = self.grant(origin);
        if !self.expose.is_empty() {
            out.push((ACCESS_CONTROL_EXPOSE_HEADERS, join(&self.expose)));
        }
        Decision::Headers(out)
    }

    fn preflight(&self, origin: &HeaderValue, requested: &HeaderValue, h: &HeaderMap) -> Decision {
        let vary = HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        );
        let refused = Decision::Preflight {
            status: 403,
            headers: vec![(VARY, vary.clone())],
        };
        let method_ok = self
            .methods
            .iter()
            .any(|m| m.as_str().as_bytes() == requested.as_bytes());
        let asked: Vec<String> = h
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        let headers_ok = asked
            .iter()
            .all(|n| self.headers.iter().any(|a| a.as_str() == n));
        if !self.allows(origin.as_bytes()) || !method_ok || !headers_ok {
            return refused;
        }
        let mut out = self.grant(origin);
        out.retain(|(n, _)| n != VARY);
        out.push((VARY, vary));
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
            out.push((ACCESS_CONTROL_ALLOW_METHODS, v));
        }
        if !self.headers.is_empty() {
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, join(&self.headers)));
        }
        out.push((
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age.as_secs()),
        ));
        Decision::Preflight {
            status: 204,
            headers: out,
        }
    }

    /// The headers every answer to an allowed origin carries.
    fn grant(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (VARY, HeaderValue::from_static("Origin")),
        ];
        if self.credentials {
            out.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        out
    }
}

/// The header's value when it occurs exactly once: two `Origin`s are no origin.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

fn join(names: &[HeaderName]) -> HeaderValue {
    let list: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
    // Header names are visible ASCII, so the joined list is a valid value.
    HeaderValue::from_str(&list.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An origin as a browser serialises it: `http` or `https`, a host, a port unless the
/// scheme's default; nothing else (no path, userinfo, query, wildcard or `null`).
pub fn parse_origin(text: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("`{text}` is not an origin: {why}"));
    let lower = text.to_ascii_lowercase();
    let (scheme, rest, default_port) = if let Some(r) = lower.strip_prefix("https://") {
        ("https", r, "443")
    } else if let Some(r) = lower.strip_prefix("http://") {
        ("http", r, "80")
    } else {
        return bad("it must be scheme://host[:port] with http or https");
    };
    if rest.contains('*') {
        return bad("wildcards are not allowed: list each origin exactly");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest
            .bytes()
            .any(|b| b"/?#@\\% ".contains(&b) || b.is_ascii_control())
    {
        return bad("only scheme://host[:port], without path, query or userinfo");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !rest.ends_with(']') => (h, Some(p)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return bad("the host is empty");
    }
    match port {
        Some(p) if p.is_empty() || p.parse::<u16>().is_err() => bad("the port is not a number"),
        Some(p) if p == default_port => Ok(format!("{scheme}://{host}")),
        Some(p) => Ok(format!("{scheme}://{host}:{p}")),
        None => Ok(format!("{scheme}://{host}")),
    }
}

#[cfg(test)]
#[path = "cors/tests.rs"]
mod tests;
