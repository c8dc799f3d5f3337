//! Requests to routes: host, path prefix and method matching on the normalised path, the most
//! specific route winning; each route names its upstream pool and its auth policy.
//!
//! Precedence, decided once when the configuration is loaded:
//! 1. host: an exact host beats a wildcard (`*.example.com`; a longer suffix beats a shorter
//!    one), which beats a route without a host;
//! 2. then the longer path prefix;
//! 3. then a route that names methods beats one that does not;
//! 4. then the order in the file.

use std::sync::Arc;

use http::Method;

use crate::cors::CorsPolicy;
pub use crate::policy::Policy;
use crate::request::normalize_path;
use crate::response_cache::RouteCache;
use crate::upstreams::Pool;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    fn parse(host: Option<&str>) -> Result<HostMatch, String> {
        let Some(h) = host else {
            return Ok(HostMatch::Any);
        };
        let h = h.trim().to_ascii_lowercase();
        let h = h.strip_suffix('.').unwrap_or(&h).to_string();
        if let Some(rest) = h.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(format!("`{h}` is not a host or a `*.domain` wildcard"));
            }
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
        if h.is_empty() || h.contains('*') || h.contains('/') || h.contains(' ') {
            return Err(format!("`{h}` is not a host or a `*.domain` wildcard"));
        }
        Ok(HostMatch::Exact(h))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Any => (0, 0),
            HostMatch::Suffix(s) => (1, s.len()),
            HostMatch::Exact(_) => (2, 0),
        }
    }
}

pub struct Route {
    host: HostMatch,
    /// Normalised, without a trailing `/` except for the root `/`.
    prefix: String,
    methods: Option<Box<[Method]>>,
    pub pool: Arc<Pool>,
    pub policy: Policy,
    /// With `Policy::Require`: the session must carry one of these roles (empty: any session).
    pub roles: Box<[String]>,
    /// Position in the file, for the last tie-break.
    pub index: usize,
    /// A 2xx answer drops the cached answer for the request's credentials.
    pub logout: bool,
    /// Responses are stored and served by the response cache.
    pub cache: Option<RouteCache>,
    /// Cross-origin requests: authgate answers preflights and grants allowed origins.
    pub cors: Option<Arc<CorsPolicy>>,
    /// `host/prefix` (`*` for any host), for logs and metrics.
    pub label: Arc<str>,
}

/// What a route is made from; checked by `Route::new`.
pub struct RouteSpec<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub methods: &'a [String],
    pub pool: Arc<Pool>,
    pub policy: Policy,
    pub roles: &'a [String],
    pub index: usize,
    pub logout: bool,
    pub cache: Option<RouteCache>,
    pub cors: Option<Arc<CorsPolicy>>,
}

/// What a route rule is made from: a route of the file, naming its upstream.
pub struct RuleSpec<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub methods: &'a [String],
    pub upstream: &'a str,
    pub policy: Policy,
    pub roles: &'a [String],
    pub index: usize,
    pub logout: bool,
    pub cache: Option<RouteCache>,
    pub cors: Option<Arc<CorsPolicy>>,
}

/// A checked route of the file, not yet bound to its pool (plain settings data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    host: HostMatch,
    prefix: String,
    methods: Option<Box<[Method]>>,
    /// The upstream pool's name.
    pub upstream: String,
    pub policy: Policy,
    pub roles: Box<[String]>,
    pub index: usize,
    pub logout: bool,
    pub cache: Option<RouteCache>,
    pub cors: Option<Arc<CorsPolicy>>,
    pub label: Arc<str>,
}

impl RouteRule {
    /// Checks a route; errors name the field (`host`, `path`, `methods`, `roles`) and why.
    pub fn new(spec: RuleSpec<'_>) -> Result<RouteRule, (&'static str, String)> {
        let host = HostMatch::parse(spec.host).map_err(|e| ("host", e))?;
        if !spec.path.starts_with('/') {
            return Err(("path", format!("`{}` must start with `/`", spec.path)));
        }
        let normal =
            normalize_path(spec.path).map_err(|e| ("path", format!("`{}`: {e}", spec.path)))?;
        let trimmed = normal.trim_end_matches('/');
        let prefix = if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        };
        let methods = if spec.methods.is_empty() {
            None
        } else {
            let mut list = Vec::with_capacity(spec.methods.len());
            for m in spec.methods {
                let upper = m.to_ascii_uppercase();
                list.push(
                    Method::from_bytes(upper.as_bytes())
                        .map_err(|_| ("methods", format!("`{m}` is not an HTTP method")))?,
                );
            }
            Some(list.into_boxed_slice())
        };
        if !spec.roles.is_empty() && spec.policy != Policy::Require {
            return Err(("roles", "roles only apply to `auth: require` routes".into()));
        }
        if spec.roles.iter().any(|r| r.is_empty() || r.contains(',')) {
            return Err(("roles", "a role is a non-empty name without commas".into()));
        }
        Ok(RouteRule {
            host,
            label: Arc::from(format!("{}{}", spec.host.unwrap_or("*"), prefix)),
            prefix,
            methods,
            upstream: spec.upstream.to_string(),
            policy: spec.policy,
            roles: spec.roles.to_vec().into_boxed_slice(),
            index: spec.index,
            logout: spec.logout,
            cache: spec.cache,
            cors: spec.cors,
        })
    }
}

impl Route {
    /// Builds and checks a route; errors name the field (`host`, `path`, `methods`, `roles`).
    pub fn new(spec: RouteSpec<'_>) -> Result<Route, (&'static str, String)> {
        let rule = RouteRule::new(RuleSpec {
            host: spec.host,
            path: spec.path,
            methods: spec.methods,
            upstream: spec.pool.name(),
            policy: spec.policy,
            roles: spec.roles,
            index: spec.index,
            logout: spec.logout,
            cache: spec.cache,
            cors: spec.cors,
        })?;
        Ok(Route::bind(&rule, spec.pool))
    }

    /// A checked rule served by `pool`.
    pub fn bind(rule: &RouteRule, pool: Arc<Pool>) -> Route {
        Route {
            host: rule.host.clone(),
            prefix: rule.prefix.clone(),
            methods: rule.methods.clone(),
            pool,
            policy: rule.policy,
            roles: rule.roles.clone(),
            index: rule.index,
            logout: rule.logout,
            cache: rule.cache,
            cors: rule.cors.clone(),
            label: rule.label.clone(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `/api` matches `/api`, `/api/x` and `/api;v=1`, never `/apix`. A `;` ends a segment
    /// for matching because servlet containers drop what follows it.
    fn matches_path(&self, path: &str) -> bool {
        if self.prefix == "/" {
            return true;
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with(';'),
            None => false,
        }
    }

    /// Whether passing this route asks more of the caller than passing `other`.
    fn stronger_than(&self, other: &Route) -> bool {
        let rank = |r: &Route| match r.policy {
            Policy::Public => 0,
            Policy::Identify => 1,
            Policy::Require if r.roles.is_empty() => 2,
            Policy::Require => 3,
        };
        rank(self) > rank(other)
            || (rank(self) == 3 && rank(other) == 3 && self.roles != other.roles)
    }

    fn matches(&self, host: &str, path: &str, method: &Method) -> bool {
        self.host.matches(host) && self.matches_path(path) && self.matches_method(method)
    }

    /// A route that names `GET` takes `HEAD` too: every framework serves a `HEAD` with its
    /// `GET` handler, so a `HEAD` must not fall through to a weaker route.
    fn matches_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|ms| {
            ms.contains(method) || (*method == Method::HEAD && ms.contains(&Method::GET))
        })
    }
}

/// Routes ordered once, most specific first (see the module documentation).
pub struct Routes {
    routes: Vec<Route>,
    /// Every route asks the same of the caller: no reading of a path can reach a stronger
    /// guard, so `find_checked` has nothing to look at (decided once, at load).
    one_guard: bool,
}

impl Routes {
    pub fn new(mut routes: Vec<Route>) -> Routes {
        routes.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(b.methods.is_some().cmp(&a.methods.is_some()))
                .then(a.index.cmp(&b.index))
        });
        let one_guard = routes
            .windows(2)
            .all(|w| w[0].policy == w[1].policy && w[0].roles == w[1].roles);
        Routes { routes, one_guard }
    }

    /// The route for a request; `host` without port, lower case; `path` normalised.
    pub fn find(&self, host: &str, path: &str, method: &Method) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path, method))
    }

    /// Like `find`, but refuses a path that a lenient backend could read as one under a
    /// stronger guard: case folded (Express routes and IIS ignore case), trailing dots and
    /// spaces of a segment dropped (IIS, Windows), or a `.ext` suffix dropped (Spring's
    /// suffix patterns). `/PRIVATE` must not pass the public route when `/private` needs a
    /// session; where both readings lead to the same guard, nothing changes.
    pub fn find_checked(
        &self,
        host: &str,
        path: &str,
        method: &Method,
    ) -> Result<Option<&Route>, Ambiguous> {
        let route = self.find(host, path, method);
        let Some(route) = route else {
            return Ok(None);
        };
        if self.one_guard {
            return Ok(Some(route));
        }
        for reading in lenient_readings(path) {
            if let Some(other) = self.find(host, &reading, method) {
                if other.stronger_than(route) {
                    return Err(Ambiguous {
                        prefix: other.prefix.clone(),
                    });
                }
            }
        }
        Ok(Some(route))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// A path that a lenient backend could read as one under a stronger route (see
/// `Routes::find_checked`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguous {
    /// The prefix of the stronger route.
    pub prefix: String,
}

impl std::fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client is not told which route: that would map the configuration out.
        f.write_str("ambiguous path (a backend could read it as a guarded one)")
    }
}

/// Other readings of a normalised path that some backends make: ASCII case folded (outside
/// percent-escapes), trailing `.` and space of each segment dropped, a `.ext` suffix of the
/// last segment dropped, and all three together. Only readings that differ from `path`.
fn lenient_readings(path: &str) -> Vec<String> {
    let b = path.as_bytes();
    let upper = b.iter().enumerate().any(|(i, c)| {
        c.is_ascii_uppercase() && !(i >= 1 && b[i - 1] == b'%') && !(i >= 2 && b[i - 2] == b'%')
    });
    // Bytes first: a path rarely has a `%`, and the substring search costs more than the rest.
    let space = b.contains(&b'%') && path.contains("%20");
    if !(upper || space || b.contains(&b'.')) {
        // The usual case: nothing to read another way.
        return Vec::new();
    }
    let fold = |p: &str| -> String {
        let mut out = String::with_capacity(p.len());
        let mut escape = 0;
        for c in p.chars() {
            if escape > 0 {
                escape -= 1;
                out.push(c);
            } else if c == '%' {
                escape = 2;
                out.push(c);
            } else {
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    };
    let trim = |p: &str| -> String {
        p.split('/')
            .map(|seg| {
                let mut s = seg;
                loop {
                    let t = s.trim_end_matches('.');
                    let t = t.strip_suffix("%20").unwrap_or(t);
                    if t.len() == s.len() {
                        break;
                    }
                    s = t;
                }
                if s.is_empty() {
                    seg
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let unsuffix = |p: &str| -> String {
        let start = p.rfind('/').map_or(0, |i| i + 1);
        match p[start..].find('.') {
            Some(dot) if dot > 0 => p[..start + dot].to_string(),
            _ => p.to_string(),
        }
    };
    let mut out: Vec<String> = Vec::new();
    for reading in [
        fold(path),
        trim(path),
        unsuffix(path),
        unsuffix(&trim(&fold(path))),
    ] {
        if reading != path && !out.contains(&reading) {
            out.push(reading);
        }
    }
    out
}

#[cfg(test)]
#[path = "routes/tests.rs"]
mod tests;
