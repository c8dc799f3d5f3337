//! The echo backend's answer for a browser: a small HTML page naming the user and listing the
//! identity headers it received (what an app behind authgate would read).

use super::echo::Echo;
use super::login::escape;

/// The page for `echo`; `prefix` is the identity namespace (`x-authgear-`).
pub fn render(echo: &Echo, prefix: &str) -> String {
    let user = echo
        .header_values(&format!("{prefix}user-id"))
        .first()
        .map(|u| u.to_string());
    let who = match &user {
        Some(u) => format!("Signed in as <strong id=\"user\">{}</strong>", escape(u)),
        None => "Not signed in".to_string(),
    };
    let mut rows = String::new();
    for (name, value) in &echo.headers {
        if name.to_ascii_lowercase().starts_with(prefix) {
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(name),
                escape(value)
            ));
        }
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"2\">none</td></tr>\n");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>authgate echo</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}\
         table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.3em}}</style>\n\
         </head><body>\n<h1>{who}</h1>\n\
         <p><code>{method} {uri}</code> reached the backend with these identity headers:</p>\n\
         <table id=\"identity\">\n{rows}</table>\n\
         <p><a href=\"/account\">Account</a> · <a href=\"/\">Home</a> · <a id=\"logout\" href=\"/logout\">Sign out</a></p>\n\
         </body></html>\n",
        method = escape(&echo.method),
        uri = escape(&echo.uri),
    )
}
