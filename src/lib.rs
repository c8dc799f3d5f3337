//! authgate: an authenticating edge proxy for Authgear's resolver endpoint, on Pingora.

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod cache;
pub mod config;
pub mod connections;
pub mod cors;
pub mod credentials;
pub mod devserver;
pub mod drain;
pub mod fleet;
pub mod forwarded;
pub mod identity;
pub mod jwt;
pub mod metrics;
pub mod outcome;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod resolver;
pub mod response_cache;
pub mod routes;
pub mod runtime;
pub mod throttle;
pub mod tls;
pub mod upstreams;
pub mod webhook;

#[cfg(test)]
#[path = "testutil/tests.rs"]
mod testutil;
