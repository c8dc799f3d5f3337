//! Named backend pools with load balancing (pingora-load-balancing).

use std::net::SocketAddr;

use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::upstreams::peer::HttpPeer;

pub struct Pool {
    name: String,
    lb: LoadBalancer<RoundRobin>,
}

/// How many backends `select` may look at before giving up.
const MAX_SELECT_ITERATIONS: usize = 256;

impl Pool {
    pub fn new(name: &str, addrs: &[SocketAddr]) -> Result<Pool, String> {
        let lb = LoadBalancer::try_from_iter(addrs.iter().copied())
            .map_err(|e| format!("cannot build the backend set: {e}"))?;
        Ok(Pool {
            name: name.to_string(),
            lb,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next backend, round robin.
    pub fn select(&self) -> Option<HttpPeer> {
        let backend = self.lb.select(b"", MAX_SELECT_ITERATIONS)?;
        let addr = *backend.addr.as_inet()?;
        Some(HttpPeer::new(addr, false, String::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_backend_in_turn() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let pool = Pool::new("app", &addrs).unwrap();
        let picks: Vec<u16> = (0..6)
            .map(|_| pool.select().unwrap()._address.as_inet().unwrap().port())
            .collect();
        let mut first = picks[..3].to_vec();
        first.sort();
        assert_eq!(first, [1, 2, 3]);
        assert_eq!(picks[..3], picks[3..]);
    }
}
