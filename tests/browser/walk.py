"""The browser walk of tests/browser.rs, in headless Chromium driven by Selenium.

tests/browser.rs starts the stack and says where it is (APP: authgate, IDP: the stand-in
with its login pages, SPA_ALLOWED / SPA_OTHER: a single-page app served from an origin the
/api route's CORS policy allows, and from one it does not; OUT: where the screenshot goes).
Each step prints what it checked; the first failed check ends the walk with exit status 1.
"""

import json
import os
import shutil
import sys
import tempfile
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

APP = os.environ["APP"]
IDP = os.environ["IDP"]
SPA_ALLOWED = os.environ["SPA_ALLOWED"]
SPA_OTHER = os.environ["SPA_OTHER"]
OUT = os.environ["OUT"]
ALICE = "2b6e2d4a-alice"


def check(ok, what, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        raise SystemExit(1)


def until(d, condition, what):
    """What `condition` returns once it is truthy; a check that fails after 10 s otherwise."""
    try:
        return WebDriverWait(d, 10).until(condition)
    except TimeoutException:
        check(False, what, f"still at {d.current_url}: {d.find_element(By.TAG_NAME, 'body').text[:300]!r}")


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    # Headless on a machine without a display or a network beyond loopback: without the
    # background-networking flags Chromium keeps trying to reach Google's hosts.
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=900,640",
        f"--user-data-dir={profile}",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


def on_login_page(d, wanted_return_to):
    url = urllib.parse.urlsplit(d.current_url)
    query = urllib.parse.parse_qs(url.query)
    return (
        f"{url.scheme}://{url.netloc}{url.path}" == f"{IDP}/login"
        and query.get("return_to") == [wanted_return_to]
    )


def walk(d):
    # 1. No session: /account sends the browser to the login page, with the way back.
    d.get(f"{APP}/account")
    until(d, lambda d: d.current_url.startswith(f"{IDP}/login"), "/account redirects to the login page")
    check(on_login_page(d, f"{APP}/account"), "/account redirects to the login page with return_to", d.current_url)

    # 2. Choose alice: the stand-in sets the session cookie and sends the browser back.
    d.find_element(By.CSS_SELECTOR, f'button[value="{ALICE}"]').click()
    until(d, lambda d: d.current_url == f"{APP}/account", "the login returns to /account")
    user = until(d, lambda d: d.find_elements(By.ID, "user"), "/account shows a signed-in user")
    check(user[0].text == ALICE, "back on /account, signed in as alice", user[0].text)
    cookie = d.get_cookie("session")
    check(cookie is not None, "the session cookie is set")
    check(
        cookie["httpOnly"] and cookie.get("sameSite") == "Lax" and cookie["path"] == "/",
        "the cookie is HttpOnly, SameSite=Lax, Path=/",
        json.dumps(cookie),
    )
    table = d.find_element(By.ID, "identity").text
    check("x-authgear-session-valid true" in table.lower(), "the backend received the identity headers", table)
    d.save_screenshot(os.path.join(OUT, "account.png"))
    print("     screenshot: " + os.path.join(OUT, "account.png"), flush=True)

    # 3. The page's own fetch forges identity headers: the backend never sees them.
    echo = d.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch("/account", {headers: {
            "Accept": "application/json",
            "X-Authgear-User-Id": "forged",
            "X_Authgear_User_Roles": "forged",
        }}).then(r => r.json()).then(done, e => done({error: String(e)}));
        """
    )
    headers = echo.get("headers", [])
    ids = [v for n, v in headers if n.lower() == "x-authgear-user-id"]
    check(ids == [ALICE], "a forged X-Authgear-User-Id never reaches the backend", json.dumps(echo))
    check(all(v != "forged" for _, v in headers), "no forged value reaches the backend", json.dumps(headers))

    # 4. The single-page app on an allowed origin calls the require API with the cookie.
    d.get(f"{SPA_ALLOWED}/")
    found = until(d, lambda d: d.find_elements(By.ID, "result") or d.find_elements(By.ID, "error"), "the SPA's call ends")
    check(found[0].get_attribute("id") == "result", "the allowed SPA's call passes the preflight", found[0].text)
    check(found[0].get_attribute("data-status") == "200", "the API answers 200", found[0].get_attribute("data-status"))
    api = json.loads(found[0].text)
    ids = [v for n, v in api["headers"] if n.lower() == "x-authgear-user-id"]
    check(api["method"] == "POST" and ids == [ALICE], "alice's identity reaches the backend from the SPA", found[0].text)

    # 5. The same page on an origin the policy does not list: the browser itself blocks it.
    d.get(f"{SPA_OTHER}/")
    found = until(d, lambda d: d.find_elements(By.ID, "result") or d.find_elements(By.ID, "error"), "the SPA's call ends")
    check(found[0].get_attribute("id") == "error", "another origin's call is blocked by the browser", found[0].text)
    logs = " ".join(e.get("message", "") for e in d.get_log("browser"))
    check("CORS" in logs, "Chromium reports the CORS refusal", logs)

    # 6. Sign out: authgate drops the cached answer, the stand-in ends the session and clears
    #    the cookie, and the browser lands on the login page again.
    d.get(f"{APP}/account")
    until(d, lambda d: d.find_elements(By.ID, "user"), "/account shows a signed-in user")
    d.find_element(By.ID, "logout").click()
    until(d, lambda d: d.current_url.startswith(f"{IDP}/login"), "sign-out ends on the login page")
    check(on_login_page(d, f"{APP}/account"), "sign-out ends on the login page", d.current_url)
    check(d.get_cookie("session") is None, "the session cookie is gone")

    # 7. The old cookie, replayed: the session is over at the resolver, and authgate must not
    #    serve its cached answer (the logout route dropped it), so /account redirects again.
    d.add_cookie({"name": "session", "value": cookie["value"], "path": "/", "httpOnly": True})
    d.get(f"{APP}/account")
    until(d, lambda d: d.current_url.startswith(f"{IDP}/login") or d.find_elements(By.ID, "user"), "/account answers")
    check(on_login_page(d, f"{APP}/account"), "after sign-out, /account redirects again (cached answer dropped)", d.current_url)


def main():
    profile = tempfile.mkdtemp(prefix="authgate-chromium-")
    d = browser(profile)
    try:
        walk(d)
    except BaseException:
        d.save_screenshot(os.path.join(OUT, "failed.png"))
        print("     page at failure: " + d.current_url + " (screenshot: failed.png)", flush=True)
        raise
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print("browser walk: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
