//! The stand-in's login and logout pages (development only): what Authgear's hosted pages do
//! for a browser, reduced to choosing a demo user.
//!
//! `GET /login?return_to=URL` lists the users; `POST /login` (`user`, `return_to`) starts a new
//! session for the user, sets the `session` cookie as Authgear does (HttpOnly, SameSite=Lax,
//! Path=/) and sends the browser back; `GET /logout?return_to=URL` ends the session (the
//! resolver then calls it invalid, as Authgear does after a sign-out) and clears the cookie.
//! `return_to` must be an address of a configured app origin: anything else is refused, so
//! the stand-in is no open redirect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use sha2::{Digest, Sha256};

use super::response;
use super::standin::User;

/// The app origins a login may return to, and the sessions the login page started.
pub struct Pages {
    origins: Vec<String>,
    /// Session cookie value -> index of the user.
    sessions: Mutex<HashMap<String, usize>>,
    issued: AtomicU64,
}

impl Pages {
    /// `origins` as `scheme://host[:port]`; each is checked.
    pub fn new(origins: &[String]) -> Result<Pages, String> {
        let origins = origins
            .iter()
            .map(|o| crate::cors::parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err("the login pages need at least one app origin".into());
        }
        Ok(Pages {
            origins,
            sessions: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
        })
    }

    /// The user of a session this page started and has not ended.
    pub fn user_of(&self, session: &str) -> Option<usize> {
        self.sessions.lock().ok()?.get(session).copied()
    }

    /// `return_to` when it is an address of one of the app origins: the origin exactly,
    /// followed by nothing or a path, query or fragment. Backslashes, whitespace and control
    /// characters are refused outright (browsers read `\` as `/`).
    pub fn allowed<'a>(&self, return_to: &'a str) -> Option<&'a str> {
        if return_to
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'\\')
        {
            return None;
        }
        self.origins.iter().find_map(|o| {
            let rest = return_to.strip_prefix(o.as_str())?;
            (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(return_to)
        })
    }

    fn home(&self) -> String {
        format!("{}/", self.origins[0])
    }

    /// A new session value: unguessable enough for a development stand-in.
    fn mint(&self, user: usize) -> String {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let digest = Sha256::digest(format!("{now}.{n}.{}", std::process::id()));
        let session = format!("login-{}", hex::encode(&digest[..16]));
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(session.clone(), user);
        }
        session
    }

    /// Answers `/login` and `/logout`; `None` for any other request.
    pub fn handle(
        &self,
        req: &http::request::Parts,
        body: &[u8],
        cookie: Option<String>,
        users: &[User],
        cookie_name: &str,
    ) -> Option<Response<Full<Bytes>>> {
        let (method, path) = (&req.method, req.uri.path());
        let query = req.uri.query().unwrap_or("");
        let return_to = |form: &str| match field(form, "return_to") {
            None => Ok(self.home()),
            Some(r) => self
                .allowed(&r)
                .map(str::to_string)
                .ok_or_else(|| Box::new(refused(&r))),
        };
        Some(match (method.as_str(), path) {
            ("GET", "/login") => match return_to(query) {
                Ok(to) => page(200, &login_page(users, &to)),
                Err(refusal) => *refusal,
            },
            ("POST", "/login") => {
                let form = String::from_utf8_lossy(body);
                let to = match return_to(&form) {
                    Ok(to) => to,
                    Err(refusal) => return Some(*refusal),
                };
                let wanted = field(&form, "user").unwrap_or_default();
                let Some(i) = users.iter().position(|u| u.id == wanted) else {
                    return Some(page(400, "<p>No such user.</p>"));
                };
                let cookie = format!(
                    "{cookie_name}={}; Path=/; HttpOnly; SameSite=Lax",
                    self.mint(i)
                );
                response(
                    303,
                    &[("location", to), ("set-cookie", cookie)],
                    Bytes::new(),
                )
            }
            ("GET", "/logout") => {
                let to = match return_to(query) {
                    Ok(to) => to,
                    Err(refusal) => return Some(*refusal),
                };
                if let (Some(c), Ok(mut s)) = (cookie, self.sessions.lock()) {
                    s.remove(&c);
                }
                let clear = format!(
                    "{cookie_name}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
                );
                response(
                    303,
                    &[("location", to), ("set-cookie", clear)],
                    Bytes::new(),
                )
            }
            (_, "/login" | "/logout") => response(405, &[], "method not allowed\n"),
            _ => return None,
        })
    }
}

fn refused(return_to: &str) -> Response<Full<Bytes>> {
    page(
        400,
        &format!(
            "<p>Refused: <code>{}</code> is not an address of the app.</p>",
            escape(return_to)
        ),
    )
}

/// The first value of `name` in a query string or form body.
fn field(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn login_page(users: &[User], return_to: &str) -> String {
    let mut buttons = String::new();
    for u in users {
        let mut about = Vec::new();
        if !u.roles.is_empty() {
            about.push(format!("roles: {}", u.roles.join(", ")));
        }
        if u.anonymous {
            about.push("anonymous".into());
        }
        if u.disabled {
            about.push("disabled: the resolver refuses this account".into());
        }
        buttons.push_str(&format!(
            "<li><button type=\"submit\" name=\"user\" value=\"{id}\">Sign in as {id}</button> {about}</li>\n",
            id = escape(&u.id),
            about = escape(&about.join("; "))
        ));
    }
    format!(
        "<h1>Sign in (authgate's resolver stand-in)</h1>\n\
         <p>Development only: choose a demo user of the users file.</p>\n\
         <form method=\"post\" action=\"/login\">\n\
         <input type=\"hidden\" name=\"return_to\" value=\"{}\">\n<ul>\n{buttons}</ul>\n</form>",
        escape(return_to)
    )
}

fn page(status: u16, body: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign in</title></head>\n<body>\n{body}\n</body></html>\n"
    );
    response(
        status,
        &[
            ("content-type", "text/html; charset=utf-8".into()),
            ("cache-control", "no-store".into()),
        ],
        html,
    )
}

/// Text for HTML content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_of_the_app_are_returned_to() {
        let p = Pages::new(&["http://localhost:8080".into()]).unwrap();
        for ok in [
            "http://localhost:8080",
            "http://localhost:8080/",
            "http://localhost:8080/account?x=1#top",
            "http://localhost:8080?x",
        ] {
            assert_eq!(p.allowed(ok), Some(ok), "{ok}");
        }
        for hostile in [
            "https://evil.example/",
            "//evil.example/",
            "https:evil.example",
            "http:evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "http://localhost:8080\\@evil.example",
            "http://localhost:8080/\\evil.example",
            "http://localhost:8080@evil.example/",
            "http://localhost:8080.evil.example/",
            "http://localhost:80800/",
            "http://localhost:8081/",
            "https://localhost:8080/",
            "http://LOCALHOST:8080/",
            "http%3A%2F%2Fevil.example",
            "%2F%2Fevil.example",
            "http://localhost:8080/\tx",
            " http://localhost:8080/",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(p.allowed(hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn fields_are_decoded_once() {
        assert_eq!(
            field("user=a+b&return_to=http%3A%2F%2Fx%2F", "return_to").as_deref(),
            Some("http://x/")
        );
        assert_eq!(field("user=a+b", "user").as_deref(), Some("a b"));
        assert_eq!(field("x=%252F", "x").as_deref(), Some("%2F"));
        assert_eq!(field("x=1", "y"), None);
    }
}
