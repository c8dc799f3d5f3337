//! The binary's configuration checks: every error names the file, the field and the reason,
//! and authgate exits non-zero before it listens. The matrix of every field's errors runs in
//! process (`src/config/tests.rs`); these cases need the binary.

mod common;

use std::process::Command;

use common::*;

struct Outcome {
    code: Option<i32>,
    stderr: String,
    stdout: String,
}

fn run(args: &[&str]) -> Outcome {
    run_with(args, &[])
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let out = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run authgate");
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

const GOOD: &str = r#"
listen:
  - addr: 127.0.0.1:1
resolver:
  url: http://127.0.0.1:2/_resolver/resolve
  timeout: 2s
upstreams:
  app:
    backends: [127.0.0.1:3]
routes:
  - path: /
    upstream: app
"#;

/// Writes `yaml`, checks it with `-t`, and returns the outcome.
fn check(yaml: &str) -> (Outcome, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.display().to_string();
    (run(&["-t", "-c", &p]), p)
}

fn assert_error(yaml: &str, field: &str, reason: &str) {
    assert!(!reason.is_empty(), "every case names its reason");
    let (o, file) = check(yaml);
    assert_eq!(o.code, Some(2), "{yaml}\nstderr: {}", o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("configuration error"))
        .unwrap_or_else(|| panic!("no error line in {}", o.stderr));
    assert!(
        line.contains(&format!("{file}: {field}: ")),
        "want `{file}: {field}:` in {line}"
    );
    assert!(line.contains(reason), "want `{reason}` in {line}");
}

#[test]
fn good_file_checks_ok() {
    let (o, file) = check(GOOD);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains(&file) && o.stdout.contains("ok"),
        "{}",
        o.stdout
    );
}

#[test]
fn shipped_default_config_is_valid() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/authgate.yaml");
    let o = run(&["-t", "-c", conf]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn missing_file() {
    let o = run(&["-t", "-c", "/nonexistent/authgate.yaml"]);
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr
            .contains("/nonexistent/authgate.yaml: cannot read file"),
        "{}",
        o.stderr
    );
}

#[test]
fn bad_yaml() {
    let (o, file) = check(
        r#"
listen: [
  - addr: 1
resolver: {"#,
    );
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr.contains(&file) && o.stderr.contains("line"),
        "{}",
        o.stderr
    );
}

#[test]
fn undefined_upstream() {
    assert_error(
        &GOOD.replace("upstream: app", "upstream: api"),
        "routes[0].upstream",
        "no upstream named `api`",
    );
}

#[test]
fn shipped_example_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            // The secrets the examples read from the environment (never from the YAML).
            let o = run_with(
                &["-t", "-c", &path.display().to_string()],
                &[
                    ("AUTHGATE_FLEET_SECRET", &"ab".repeat(32)),
                    ("AUTHGATE_ADMIN_TOKEN", "an-admin-token-of-some-length"),
                ],
            );
            assert_eq!(o.code, Some(0), "{}: {}", path.display(), o.stderr);
            checked += 1;
        }
    }
    assert!(checked > 0, "no example in {dir}");
}

#[test]
fn a_bad_file_stops_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    let port = closed_port();
    std::fs::write(
        &path,
        GOOD.replace("127.0.0.1:1", &port.to_string())
            .replace("upstream: app", "upstream: nope"),
    )
    .unwrap();
    let o = run(&["-c", &path.display().to_string()]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        std::net::TcpStream::connect(port).is_err(),
        "something listens on {port}"
    );
}
