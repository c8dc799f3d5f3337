//! Listener shutdown that serves what it accepted: the drain window of a graceful upgrade.
//!
//! When a Pingora listener stops (graceful upgrade or shutdown), the proxy app's cleanup
//! aborts every connection parked waiting for a request, so a connection the old process
//! accepted in the last instant, before its client's first bytes arrived, was closed with no
//! answer. Delaying that cleanup by a short window lets those connections send their request
//! and be served (with `Connection: close`, since the service is shutting down); idle
//! keep-alive connections get the same treatment on their next request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// How long a connection accepted just before the listener stopped has to send its request.
/// It must stay well below `grace_period_seconds`, after which the runtime is dropped.
pub const WINDOW: Duration = Duration::from_secs(1);

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
