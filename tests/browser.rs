//! The browser path, end to end, in real headless Chromium (Debian's `chromium`).
//!
//! This test starts the stack on loopback (the stand-in with its login pages, the echo backend,
//! authgate with the shipped routes' shape: `/` identify, `/account` require, `/logout`, and
//! `/api` require with a CORS policy; two single-page-app origins on their own ports) and hands
//! the walk to `tests/browser/walk.py`, which drives Chromium through chromedriver.
//!
//! The driver is Selenium's Python bindings with Debian's `chromium-driver`: Selenium is the
//! W3C WebDriver reference client, maintained by the Selenium project with releases every few
//! weeks, installs from PyPI without downloading a browser, and chromedriver from the same
//! Debian source as `chromium` always matches its version. A Rust DevTools client
//! (`chromiumoxide`) was the other candidate: its generated protocol crate would add minutes
//! to every clean build of the test suite, and it follows Chrome's protocol by hand-regenerated
//! releases. `make browser-deps` installs all three when missing.
//!
//! The screenshot of the signed-in page goes to `target/tmp/browser/account.png`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use authgate::devserver::{self, echo, standin};
use bytes::Bytes;
use common::*;

/// The single-page app: on load it calls the API with the user's cookie, as a JSON `POST`
/// (which needs a preflight), and shows what the backend received, or the browser's error.
const SPA: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>SPA</title></head><body>
<h1>single-page app</h1><pre id="out">calling</pre>
<script>
fetch("__API__/api/items", {
  method: "POST",
  credentials: "include",
  headers: {"Content-Type": "application/json", "Accept": "application/json"},
  body: "{}",
}).then(r => r.text().then(t => {
  const el = document.createElement("pre");
  el.id = "result";
  el.dataset.status = r.status;
  el.textContent = t;
  document.body.appendChild(el);
})).catch(e => {
  const el = document.createElement("pre");
  el.id = "error";
  el.textContent = String(e);
  document.body.appendChild(el);
});
</script></body></html>
"#;

fn missing_tools() -> Vec<&'static str> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let mut missing = Vec::new();
    for tool in ["chromium", "chromedriver", "python3"] {
        if !on_path(tool) {
            missing.push(tool);
        }
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    if !selenium {
        missing.push("selenium (Python)");
    }
    missing
}

async fn serve_page(html: String) -> SocketAddr {
    let (l, addr) = listener().await;
    let html = Bytes::from(html);
    tokio::spawn(devserver::serve(l, None, Arc::default(), move |_req| {
        let html = html.clone();
        async move {
            let mut resp = hyper::Response::new(http_body_util::Full::new(html));
            resp.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        }
    }));
    addr
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("output folder");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_sees_its_identity_logs_out_and_calls_an_api_across_origins() {
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run `make browser-deps` (as root), or \
         `sudo apt-get install -y chromium chromium-driver && python3 -m pip install selenium`",
        missing.join(", ")
    );
    let listen = closed_port();
    // Browsers share cookies across the ports of one host: every origin here is `localhost`.
    let app = format!("http://localhost:{}", listen.port());

    let users = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/users.yaml"))
        .expect("conf/users.yaml");
    let directory = standin::Directory::from_yaml(&users).expect("users");
    let standin = Arc::new(
        standin::Standin::new(directory, Duration::ZERO)
            .with_login(std::slice::from_ref(&app))
            .expect("login pages"),
    );
    let (l, resolver) = listener().await;
    let s = standin.clone();
    tokio::spawn(devserver::serve(
        l,
        None,
        standin.stats.connections.clone(),
        move |req| s.clone().handle(req),
    ));
    let idp = format!("http://localhost:{}", resolver.port());

    let (l, backend) = listener().await;
    // The app's sign-out hands over to the identity provider's, which sends the browser back.
    let back = format!("{app}/account");
    let back = percent_encoding::utf8_percent_encode(&back, percent_encoding::NON_ALPHANUMERIC);
    let logout_to = format!("{idp}/logout?return_to={back}");
    tokio::spawn(devserver::serve(
        l,
        None,
        Arc::default(),
        echo::handler_with("app", Some(logout_to)),
    ));

    let spa_allowed = serve_page(SPA.replace("__API__", &app)).await;
    let spa_other = serve_page(SPA.replace("__API__", &app)).await;
    let allowed_origin = format!("http://localhost:{}", spa_allowed.port());

    let stack = Stack::builder()
        .listen_on(listen)
        .resolver(resolver)
        .pool("app", Pool::at(&[backend]))
        .routes(&format!(
            r#"
            - path: /
              upstream: app
            - path: /account
              upstream: app
              auth: require
            - path: /logout
              upstream: app
              logout: true
            - path: /api
              upstream: app
              auth: require
              cors:
                allow_origins: ["{allowed_origin}"]
                allow_methods: [GET, POST]
                allow_headers: [content-type]
                allow_credentials: true
            "#
        ))
        .yaml(&format!(
            r#"
            login:
              url: {idp}/login
            "#
        ))
        .start()
        .await;

    let out = out_dir();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/walk.py"
        ))
        .env("APP", &app)
        .env("IDP", &idp)
        .env("SPA_ALLOWED", &allowed_origin)
        .env(
            "SPA_OTHER",
            format!("http://localhost:{}", spa_other.port()),
        )
        .env("OUT", &out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // The peers run on this runtime: wait for the walk off it, and never past two minutes.
    let walk = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().expect("the walk's output")
    })
    .await
    .expect("the walk");
    let stdout = String::from_utf8_lossy(&walk.stdout);
    let stderr = String::from_utf8_lossy(&walk.stderr);
    assert!(
        walk.status.success(),
        "browser walk failed\n--- walk ---\n{stdout}{stderr}\n--- authgate ---\n{}",
        stack.proxy.log()
    );
    println!("{stdout}");
    assert!(out.join("account.png").is_file());
}
