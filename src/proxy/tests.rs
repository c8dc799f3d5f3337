//! Unit tests of `proxy`.

use super::*;

use pingora::modules::http::compression::ResponseCompression;

#[test]
fn no_downstream_module_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    std::fs::write(&path, crate::testutil::CONFIG).unwrap();
    let settings = crate::config::load(&path).unwrap();
    let runtime = Arc::new(ArcSwap::from_pointee(
        Runtime::build(&settings, None).unwrap(),
    ));
    let gate = AuthGate::new(runtime, Readiness::default());
    let mut modules = HttpModules::new();
    gate.init_downstream_modules(&mut modules);
    assert!(modules.build_ctx().get::<ResponseCompression>().is_none());
}
