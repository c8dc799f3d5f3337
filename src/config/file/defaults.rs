//! The file form's defaults, one function each (serde's `default = "..."` names a function).

use std::time::Duration;

pub fn connect_timeout() -> Duration {
    Duration::from_secs(1)
}
pub fn read_timeout() -> Duration {
    Duration::from_secs(2)
}
pub fn timeout() -> Duration {
    Duration::from_secs(3)
}
pub fn idle_timeout() -> Duration {
    Duration::from_secs(30)
}
pub fn header_prefix() -> String {
    "x-authgear-".into()
}
pub fn response_max_ttl() -> Duration {
    Duration::from_secs(86_400)
}
pub fn response_max_bytes() -> usize {
    64 << 20
}
pub fn response_max_object_bytes() -> usize {
    1 << 20
}
pub fn response_lock_timeout() -> Duration {
    Duration::from_secs(5)
}
pub fn route_path() -> String {
    "/".into()
}
pub fn capacity() -> usize {
    100_000
}
pub fn ttl() -> Duration {
    Duration::from_secs(600)
}
pub fn negative_ttl() -> Duration {
    Duration::from_secs(10)
}
pub fn refresh_after() -> Duration {
    Duration::from_secs(60)
}
pub fn fleet_prefix() -> String {
    "authgate:".into()
}
pub fn fleet_timeout() -> Duration {
    Duration::from_millis(20)
}
pub fn webhook_max_age() -> Duration {
    Duration::from_secs(300)
}
pub fn upstream_io_timeout() -> Duration {
    Duration::from_secs(60)
}
pub fn retries() -> usize {
    2
}
pub fn weight() -> usize {
    1
}
pub fn yes() -> bool {
    true
}
pub fn one() -> usize {
    1
}
pub fn expected_status() -> u16 {
    200
}
pub fn health_interval() -> Duration {
    Duration::from_secs(5)
}
pub fn watch_interval() -> Duration {
    Duration::from_secs(2)
}
pub fn return_to_param() -> String {
    "return_to".into()
}
pub fn credential_cookies() -> Vec<String> {
    ["session", "app_session", "app_access_token"]
        .map(String::from)
        .to_vec()
}

/// The methods a browser may send without a preflight; anything else is named.
pub fn cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

pub fn cors_max_age() -> Duration {
    Duration::from_secs(600)
}
pub fn jwt_leeway() -> Duration {
    Duration::from_secs(30)
}
pub fn jwt_refresh() -> Duration {
    Duration::from_secs(300)
}
pub fn jwt_unknown_kid_cooldown() -> Duration {
    Duration::from_secs(30)
}
pub fn jwt_max_token_bytes() -> usize {
    8 * 1024
}
pub fn jwt_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
