//! Stopping without failing requests: the readiness state, the delay between `SIGTERM` and
//! closing the listeners, and the window in which a stopping listener serves what it accepted.
//!
//! On `SIGTERM` a load balancer (a Kubernetes Service, say) still sends traffic for a few
//! seconds: it learns of the stop from the readiness probe or the endpoint update, not from
//! the signal. So readiness fails at once, every answer asks its client to close its
//! connection (clients move to other instances), and the listeners keep accepting and serving
//! for `shutdown.drain_delay`; only then does Pingora's graceful shutdown close them.
//!
//! When a Pingora listener stops (graceful upgrade or shutdown), the proxy app's cleanup
//! aborts every connection parked waiting for a request, so a connection the old process
//! accepted in the last instant, before its client's first bytes arrived, was closed with no
//! answer. Delaying that cleanup by a short window lets those connections send their request
//! and be served (with `Connection: close`, since the service is shutting down); idle
//! keep-alive connections get the same treatment on their next request.
//!
//! Pingora then waits out the whole grace period, even with nothing left to serve;
//! `exit_when_idle` ends the process as soon as nothing is.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::broadcast::{error::RecvError, Receiver};

use crate::access_log;
use crate::metrics::METRICS;

/// How long a connection accepted just before the listener stopped has to send its request
/// (`connections` owns the number: its wait for a first byte uses it too).
pub const WINDOW: Duration = crate::connections::DRAIN_WINDOW;

/// Whether this process still wants new traffic: no from `SIGTERM` on. The signal watcher
/// writes it; the admin's `/ready` and the proxy read it.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// `SIGTERM` arrived: the listeners are about to close.
    pub fn draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start_draining(&self) {
        self.0.store(true, Ordering::Relaxed);
        METRICS.draining.set(1);
    }
}

/// Pingora's shutdown signals (`SIGQUIT` upgrade, `SIGTERM` graceful, `SIGINT` fast), with
/// `SIGTERM` held for the drain delay while readiness fails.
pub struct Signals<D> {
    readiness: Readiness,
    /// Read when `SIGTERM` arrives, so a reload's value applies.
    delay: D,
}

impl<D: Fn() -> Duration + Send + Sync> Signals<D> {
    pub fn new(readiness: Readiness, delay: D) -> Self {
        Signals { readiness, delay }
    }
}

/// One signal's stream; a signal that cannot be watched never fires (and says so once).
fn watch(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|e| log::error!("cannot watch {name}: {e}"))
        .ok()
}

fn next(s: &mut Option<Signal>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(async move {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    })
}

#[async_trait]
impl<D: Fn() -> Duration + Send + Sync> ShutdownSignalWatch for Signals<D> {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = watch(SignalKind::quit(), "SIGQUIT");
        let mut term = watch(SignalKind::terminate(), "SIGTERM");
        let mut int = watch(SignalKind::interrupt(), "SIGINT");
        tokio::select! {
            _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
            _ = next(&mut int) => return ShutdownSignal::FastShutdown,
            _ = next(&mut term) => {}
        }
        let delay = (self.delay)();
        self.readiness.start_draining();
        if delay.is_zero() {
            return ShutdownSignal::GracefulTerminate;
        }
        log::info!(
            "SIGTERM: draining for {delay:?} (readiness 503, listeners still serving, answers close their connections); then graceful shutdown"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {
                log::info!("drain delay over: closing the listeners");
                ShutdownSignal::GracefulTerminate
            }
            _ = next(&mut term) => {
                log::info!("second SIGTERM: closing the listeners now");
                ShutdownSignal::GracefulTerminate
            }
            _ = next(&mut int) => ShutdownSignal::FastShutdown,
            _ = next(&mut quit) => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// Once Pingora's listeners have stopped (a shutdown or the old side of an upgrade), exits the
/// process as soon as no request is in flight, no client connection is open and the access
/// log is written out, instead of sleeping the rest of `grace_period_seconds` (which stays the
/// upper bound: Pingora ends the process then, whatever still runs).
pub fn exit_when_idle(mut phases: Receiver<ExecutionPhase>) {
    let watcher = move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
        // A connection accepted in the listeners' last instant is counted once its task
        // runs, and a parked one gets `WINDOW` to send its request: neither is missed after it.
        std::thread::sleep(WINDOW);
        loop {
            if METRICS.inflight.get() == 0
                && METRICS.client_connections.get() == 0
                && access_log::flushed()
            {
                log::info!("graceful shutdown: nothing left to serve, exiting");
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("exit-when-idle".into())
        .spawn(watcher)
    {
        log::warn!("cannot watch the shutdown ({e}): the whole grace period will be waited out");
    }
}

/// Wraps a server app so that its cleanup runs `window` after its listener stopped.
pub struct Draining<A> {
    app: Arc<A>,
    window: Duration,
}

impl<A> Draining<A> {
    pub fn new(app: A, window: Duration) -> Self {
        Draining {
            app: Arc::new(app),
            window,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Draining<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.window).await;
        self.app.cleanup().await
    }
}
