//! A constant-rate HTTP/1.1 load generator with coordinated-omission correction, for
//! `benches/load/latency.py` (issue 22, item 3): latency at a fixed load, as users feel it.
//!
//! Each of `LG_CONNS` connections has its own schedule (request `j` of connection `k` is due at
//! `start + (k + j * conns) / rate`) and a request's latency runs from when it was *due*, not
//! from when it was sent: a stall delays the requests behind it, and their latency counts the
//! wait, as a user's would (wrk2's model; a closed-loop tool such as wrk would just send fewer
//! requests and hide it). Blocking sockets on one thread per connection, woken by
//! `nanosleep` with the timer slack at 1 µs: no 1 ms timer wheel between a due time and the
//! send. Not a criterion bench: `cargo bench --bench loadgen` runs it with settings from the
//! environment and prints one JSON line.
//!
//! `LG_ADDR` (127.0.0.1:port, loopback only), `LG_PATH` (/), `LG_RATE` (requests/s),
//! `LG_SECS` (measured seconds), `LG_WARM` (seconds sent first and not counted), `LG_CONNS`
//! (64), `LG_COOKIE` (a Cookie header sent with every request), `LG_MISS` (a prefix: every
//! request carries `Cookie: session=<prefix><connection>-<n>`, a session never sent before).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn num<T: std::str::FromStr>(name: &str, default: &str) -> T {
    let text = env(name, default);
    text.parse()
        .unwrap_or_else(|_| fail(&format!("{name}={text}: not a number")))
}

fn fail(why: &str) -> ! {
    eprintln!("loadgen: {why}");
    std::process::exit(2)
}

struct Plan {
    addr: SocketAddr,
    path: String,
    cookie: Option<String>,
    miss: Option<String>,
    rate: f64,
    conns: usize,
    warm: Duration,
    secs: Duration,
}

/// What one connection saw: latencies (µs) of the measured requests, and failures.
#[derive(Default)]
struct Seen {
    micros: Vec<u64>,
    errors: u64,
    non_2xx: u64,
}

/// Reads one response (Content-Length or chunked body) and returns its status.
fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("closed before a response header"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut body: Vec<u8> = buf[head_end..].to_vec();
    let mut fill = |body: &mut Vec<u8>| -> std::io::Result<()> {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("closed in a body"));
        }
        body.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    if chunked {
        // Chunk sizes until the last (0) chunk and its empty trailer.
        let mut at = 0;
        loop {
            let Some(eol) = body[at..].windows(2).position(|w| w == b"\r\n") else {
                fill(&mut body)?;
                continue;
            };
            let size_text = String::from_utf8_lossy(&body[at..at + eol]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            let need = at + eol + 2 + size + 2;
            while body.len() < need {
                fill(&mut body)?;
            }
            at = need;
            if size == 0 {
                return Ok(status);
            }
        }
    }
    let length = length.unwrap_or(0);
    while body.len() < length {
        fill(&mut body)?;
    }
    Ok(status)
}

fn connection(plan: &Plan, k: usize, start: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let gap = plan.conns as f64 / plan.rate;
    let first = k as f64 / plan.rate;
    let end = plan.warm + plan.secs;
    for j in 0u64.. {
        let due_at = Duration::from_secs_f64(first + j as f64 * gap);
        if due_at >= end {
            break;
        }
        let due = start + due_at;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let cookie = match (&plan.miss, &plan.cookie) {
            (Some(prefix), _) => format!("Cookie: session={prefix}{k}-{j}\r\n"),
            (None, Some(c)) => format!("Cookie: {c}\r\n"),
            (None, None) => String::new(),
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n{cookie}\r\n",
            plan.path, plan.addr
        );
        let answer = (|| -> std::io::Result<u16> {
            if conn.is_none() {
                let c = TcpStream::connect(plan.addr)?;
                c.set_nodelay(true)?;
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                conn = Some(c);
            }
            let c = conn
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no connection"))?;
            c.write_all(request.as_bytes())?;
            read_response(c, &mut buf)
        })();
        let done = Instant::now();
        if due_at < plan.warm {
            if answer.is_err() {
                conn = None;
            }
            continue;
        }
        match answer {
            Ok(status) => {
                if !(200..300).contains(&status) {
                    seen.non_2xx += 1;
                }
                seen.micros
                    .push(done.duration_since(due).as_micros() as u64);
            }
            Err(_) => {
                seen.errors += 1;
                conn = None;
            }
        }
    }
    seen
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let addr: SocketAddr = num("LG_ADDR", "127.0.0.1:8080");
    if !addr.ip().is_loopback() {
        fail(&format!("LG_ADDR={addr}: loopback addresses only"));
    }
    let plan = Plan {
        addr,
        path: env("LG_PATH", "/"),
        cookie: std::env::var("LG_COOKIE").ok(),
        miss: std::env::var("LG_MISS").ok(),
        rate: num("LG_RATE", "1000"),
        conns: num("LG_CONNS", "64"),
        warm: Duration::from_secs_f64(num("LG_WARM", "1")),
        secs: Duration::from_secs_f64(num("LG_SECS", "10")),
    };
    if plan.rate <= 0.0 || plan.conns == 0 || plan.secs.is_zero() {
        fail("LG_RATE, LG_CONNS and LG_SECS must be above zero");
    }
    // nanosleep's default slack (50 µs) would add to every due time.
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes plain integers and changes only this thread's
    // (and its future children's) timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let seen: Vec<Seen> = std::thread::scope(|scope| {
        let plan = &plan;
        let threads: Vec<_> = (0..plan.conns)
            .map(|k| scope.spawn(move || connection(plan, k, start)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let mut micros: Vec<u64> = seen.iter().flat_map(|s| s.micros.iter().copied()).collect();
    micros.sort_unstable();
    let errors: u64 = seen.iter().map(|s| s.errors).sum();
    let non_2xx: u64 = seen.iter().map(|s| s.non_2xx).sum();
    println!(
        "{{\"rate\":{},\"secs\":{},\"requests\":{},\"errors\":{errors},\"non_2xx\":{non_2xx},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        plan.rate,
        plan.secs.as_secs_f64(),
        micros.len(),
        percentile(&micros, 50.0),
        percentile(&micros, 90.0),
        percentile(&micros, 99.0),
        percentile(&micros, 99.9),
        micros.last().copied().unwrap_or(0),
    );
}
