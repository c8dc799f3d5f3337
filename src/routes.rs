//! Request paths to upstream pools: segment-aware prefixes, the longest one wins.

use std::sync::Arc;

use crate::upstreams::Pool;

pub struct Route {
    /// Without a trailing `/`, except for the root route `/`.
    prefix: String,
    pub pool: Arc<Pool>,
}

impl Route {
    pub fn new(prefix: &str, pool: Arc<Pool>) -> Route {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.is_empty() { "/" } else { trimmed };
        Route {
            prefix: prefix.to_string(),
            pool,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `/api` matches `/api` and `/api/x`, never `/apix`.
    fn matches(&self, path: &str) -> bool {
        if self.prefix == "/" {
            return true;
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// Routes ordered once at load time: longest prefix first, file order among equals.
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn new(mut routes: Vec<Route>) -> Routes {
        // A stable sort keeps the operator's order among routes of equal length.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Routes { routes }
    }

    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> Arc<Pool> {
        Arc::new(Pool::new(name, &["127.0.0.1:1".parse().unwrap()]).unwrap())
    }

    #[test]
    fn longest_segment_prefix_wins() {
        let routes = Routes::new(vec![
            Route::new("/", pool("root")),
            Route::new("/api/", pool("api")),
            Route::new("/api/admin", pool("admin")),
        ]);
        let at = |p: &str| routes.find(p).map(|r| r.pool.name().to_string());
        assert_eq!(at("/").as_deref(), Some("root"));
        assert_eq!(at("/api").as_deref(), Some("api"));
        assert_eq!(at("/api/x").as_deref(), Some("api"));
        assert_eq!(at("/apix").as_deref(), Some("root"));
        assert_eq!(at("/api/admin/users").as_deref(), Some("admin"));
        assert_eq!(at("/api/administrator").as_deref(), Some("api"));
    }

    #[test]
    fn no_match_is_none() {
        let routes = Routes::new(vec![Route::new("/api", pool("api"))]);
        assert!(routes.find("/other").is_none());
    }
}
