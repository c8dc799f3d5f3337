//! Unit tests of `routes`.

use super::*;

fn pool(name: &str) -> Arc<Pool> {
    Arc::new(Pool::for_tests(
        name,
        crate::upstreams::LbKind::RoundRobin,
        &[(1, 1)],
    ))
}

fn route(host: Option<&str>, path: &str, methods: &[&str], name: &str, index: usize) -> Route {
    let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
    Route::new(RouteSpec {
        host,
        path,
        methods: &methods,
        pool: pool(name),
        policy: Policy::Identify,
        roles: &[],
        index,
        logout: false,
        cache: None,
        cors: None,
    })
    .unwrap()
}

fn at(routes: &Routes, host: &str, path: &str, method: Method) -> Option<String> {
    routes
        .find(host, path, &method)
        .map(|r| r.pool.name().to_string())
}

#[test]
fn longest_segment_prefix_wins() {
    let routes = Routes::new(vec![
        route(None, "/", &[], "root", 0),
        route(None, "/api/", &[], "api", 1),
        route(None, "/api/admin", &[], "admin", 2),
    ]);
    let at = |p: &str| at(&routes, "a", p, Method::GET);
    assert_eq!(at("/").as_deref(), Some("root"));
    assert_eq!(at("/api").as_deref(), Some("api"));
    assert_eq!(at("/api/x").as_deref(), Some("api"));
    assert_eq!(at("/apix").as_deref(), Some("root"));
    assert_eq!(at("/api/admin/users").as_deref(), Some("admin"));
    assert_eq!(at("/api/administrator").as_deref(), Some("api"));
    assert_eq!(at("/api/admin;jsessionid=1").as_deref(), Some("admin"));
}

#[test]
fn host_beats_path_and_exact_beats_wildcard() {
    let routes = Routes::new(vec![
        route(None, "/deep/path", &[], "any-host", 0),
        route(Some("*.example.com"), "/", &[], "wild", 1),
        route(Some("*.eu.example.com"), "/", &[], "wild-eu", 2),
        route(Some("api.example.com"), "/", &[], "exact", 3),
    ]);
    assert_eq!(
        at(&routes, "api.example.com", "/deep/path", Method::GET).as_deref(),
        Some("exact")
    );
    assert_eq!(
        at(&routes, "www.example.com", "/deep/path", Method::GET).as_deref(),
        Some("wild")
    );
    assert_eq!(
        at(&routes, "a.b.eu.example.com", "/", Method::GET).as_deref(),
        Some("wild-eu")
    );
    assert_eq!(
        at(&routes, "example.com", "/deep/path", Method::GET).as_deref(),
        Some("any-host")
    );
    assert_eq!(at(&routes, "example.com", "/", Method::GET), None);
}

#[test]
fn methods_narrow_and_win_ties() {
    let routes = Routes::new(vec![
        route(None, "/items", &[], "read", 0),
        route(None, "/items", &["post", "DELETE"], "write", 1),
    ]);
    assert_eq!(
        at(&routes, "h", "/items", Method::POST).as_deref(),
        Some("write")
    );
    assert_eq!(
        at(&routes, "h", "/items", Method::GET).as_deref(),
        Some("read")
    );
}

#[test]
fn file_order_breaks_remaining_ties() {
    let routes = Routes::new(vec![
        route(None, "/a", &[], "first", 0),
        route(None, "/a/", &[], "second", 1),
    ]);
    assert_eq!(
        at(&routes, "h", "/a/b", Method::GET).as_deref(),
        Some("first")
    );
}

#[test]
fn bad_route_specs_are_refused() {
    let spec = |host: Option<&'static str>, path: &'static str| {
        Route::new(RouteSpec {
            host,
            path,
            methods: &[],
            pool: pool("p"),
            policy: Policy::Identify,
            roles: &[],
            index: 0,
            logout: false,
            cache: None,
            cors: None,
        })
        .err()
        .map(|(f, _)| f)
    };
    assert_eq!(spec(Some("*."), "/"), Some("host"));
    assert_eq!(spec(Some("a.*.com"), "/"), Some("host"));
    assert_eq!(spec(None, "api"), Some("path"));
    assert_eq!(spec(None, "/a%2Fb"), Some("path"));
}

#[test]
fn a_get_route_takes_head_too() {
    let routes = Routes::new(vec![
        route(None, "/", &[], "root", 0),
        route(None, "/admin", &["GET"], "admin", 1),
    ]);
    assert_eq!(
        at(&routes, "h", "/admin", Method::HEAD).as_deref(),
        Some("admin")
    );
    assert_eq!(
        at(&routes, "h", "/admin", Method::POST).as_deref(),
        Some("root")
    );
}

fn guarded(path: &str, policy: Policy, roles: &[&str], index: usize) -> Route {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    Route::new(RouteSpec {
        host: None,
        path,
        methods: &[],
        pool: pool(path),
        policy,
        roles: &roles,
        index,
        logout: false,
        cache: None,
        cors: None,
    })
    .unwrap()
}

#[test]
fn a_path_a_lenient_backend_reads_as_a_guarded_one_is_refused() {
    let routes = Routes::new(vec![
        guarded("/", Policy::Public, &[], 0),
        guarded("/private", Policy::Require, &[], 1),
        guarded("/admin", Policy::Require, &["admin"], 2),
    ]);
    let checked = |p: &str| {
        routes
            .find_checked("h", p, &Method::GET)
            .map(|r| r.map(|r| r.prefix().to_string()))
    };
    for p in [
        "/PRIVATE",
        "/Private/x",
        "/private.",
        "/private%20",
        "/private.json",
        "/private..%20./x",
        "/ADMIN.json",
    ] {
        assert!(checked(p).is_err(), "{p}");
    }
    for (p, want) in [
        ("/private", "/private"),
        ("/private/x.json", "/private"),
        ("/PRIVATE-not", "/"),
        ("/public.html", "/"),
        ("/Docs/Intro", "/"),
        ("/a%C3%A9", "/"),
        ("/.well-known/x", "/"),
    ] {
        assert_eq!(checked(p), Ok(Some(want.to_string())), "{p}");
    }
    // A lenient reading that leads to a weaker guard is no way around a stronger one.
    let routes = Routes::new(vec![
        guarded("/", Policy::Require, &[], 0),
        guarded("/public", Policy::Public, &[], 1),
    ]);
    assert!(routes.find_checked("h", "/PUBLIC", &Method::GET).is_ok());
}

#[test]
fn the_usual_path_has_no_other_reading() {
    assert!(lenient_readings("/api/v1/orders").is_empty());
    assert_eq!(lenient_readings("/A.b"), ["/a.b", "/A", "/a"]);
}

#[test]
fn one_guard_everywhere_leaves_nothing_ambiguous() {
    let routes = Routes::new(vec![
        guarded("/", Policy::Require, &[], 0),
        guarded("/private", Policy::Require, &[], 1),
    ]);
    assert!(routes.one_guard);
    assert_eq!(
        routes
            .find_checked("h", "/PRIVATE.json", &Method::GET)
            .map(|r| r.map(|r| r.prefix().to_string())),
        Ok(Some("/".to_string()))
    );
}
