//! The access log: one line per request (JSON by default, or a combined-log-like text line),
//! written by a thread of its own so that a slow disk never holds a request.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub format: Format,
    /// A file to append to; standard error when `None`.
    pub path: Option<PathBuf>,
    pub include_query: bool,
}

/// Lines waiting for the writer; beyond this, lines are dropped (and counted), not queued.
const QUEUE: usize = 16 * 1024;

pub struct AccessLog {
    settings: AccessLogSettings,
    tx: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

/// What one line says. Never tokens or cookies: the user is named by id only.
#[derive(Serialize)]
pub struct Entry<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<&'a str>,
    pub status: u16,
    pub route: Option<&'a str>,
    pub backend: Option<SocketAddr>,
    pub user_id: Option<&'a str>,
    pub resolver: &'a str,
    /// The resolver-answer cache: where the caller's identity came from.
    pub cache: &'a str,
    /// The response cache (routes with `cache:`): hit, miss, stale, revalidated, expired,
    /// uncacheable, bypass; `-` elsewhere.
    pub response_cache: &'a str,
    pub bytes: usize,
    pub total_ms: f64,
    pub resolver_ms: Option<f64>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

impl AccessLog {
    /// Opens the destination (creating the file if needed) and starts the writer.
    pub fn open(settings: AccessLogSettings) -> Result<AccessLog, String> {
        let out: Box<dyn Write + Send> = match &settings.path {
            None => Box::new(std::io::stderr()),
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open `{}` for appending: {e}", p.display()))?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(AccessLog {
            settings,
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &AccessLogSettings {
        &self.settings
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn log(&self, mut entry: Entry<'_>) {
        if !self.settings.include_query {
            entry.query = None;
        }
        let mut line = Vec::with_capacity(256);
        match self.settings.format {
            Format::Json => {
                if serde_json::to_writer(&mut line, &entry).is_err() {
                    return;
                }
            }
            Format::Text => text_line(&mut line, &entry),
        }
        line.push(b'\n');
        UNWRITTEN.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            UNWRITTEN.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Lines handed to a writer (of any configuration's log) and not yet flushed.
static UNWRITTEN: AtomicU64 = AtomicU64::new(0);

/// Whether every line logged so far has been written out: a process about to exit waits for
/// this, or it would lose the last requests' lines.
pub fn flushed() -> bool {
    UNWRITTEN.load(Ordering::Relaxed) == 0
}

/// `ip - user [time] "METHOD path" status bytes route backend resolver cache response_cache
/// total_ms resolver_ms`
fn text_line(out: &mut Vec<u8>, e: &Entry<'_>) {
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let path = match e.query {
        Some(q) => format!("{}?{q}", e.path),
        None => e.path.to_string(),
    };
    let _ = write!(
        out,
        "{} - {} [{}] \"{} {}\" {} {} {} {} {} {} {} {:.3} {}",
        dash(e.client_ip.map(|i| i.to_string())),
        e.user_id.unwrap_or("-"),
        humantime::format_rfc3339_millis(e.time),
        e.method,
        path.escape_default(),
        e.status,
        e.bytes,
        e.route.unwrap_or("-"),
        dash(e.backend.map(|b| b.to_string())),
        e.resolver,
        e.cache,
        e.response_cache,
        e.total_ms,
        dash(e.resolver_ms.map(|m| format!("{m:.3}"))),
    );
}

fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        let mut batch = 1;
        // Batch what is already queued, then flush: lines reach the file within one wakeup.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(&more);
            batch += 1;
        }
        let _ = out.flush();
        UNWRITTEN.fetch_sub(batch, Ordering::Relaxed);
    }
}

/// Milliseconds, for the log.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
