//! The node's background tasks and their lifecycle: the run workers, heartbeat and sweeper
//! (supervised: restarted after a panic) and the MCP health checks start together, and on
//! stop the runs in flight finish before the background writers drain.

use crate::Platform;
use crate::runner;
use futures_util::FutureExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Platform {
    /// Starts every background task of this node as a tracked task that ends on
    /// [`Platform::stop`]: the run workers, the heartbeat and the sweeper (supervised), and
    /// the MCP servers' health checks.
    pub fn start(&self) {
        for _ in 0..self.runner.settings.workers.max(1) {
            supervise(self, "run worker", runner::executor::worker);
        }
        supervise(self, "run heartbeat", runner::lease::heartbeat);
        supervise(self, "run sweeper", runner::sweeper::sweeper);
        let stop = self.shutdown.clone();
        self.tasks.spawn(self.mcp.clone().run_health_checks(stop));
    }

    /// Cancelled when the node begins to close: workers take no new runs and event streams
    /// end, so the connections serving them can drain.
    pub fn closing(&self) -> CancellationToken {
        self.runner.closing.clone()
    }

    /// Stops the node: the runs still executing finish (for at most one lease, and are
    /// metered) before the background writers are told to stop, then every tracked task
    /// is awaited. Call after [`Platform::closing`] was cancelled and requests drained.
    pub async fn stop(&self) {
        self.runner.drain().await;
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Runs `task` on a tracked task and starts it again (after a second) if it panics, so a
/// bug met by one tenant's data cannot take a node's workers, heartbeat or sweeper away
/// for good. A task that returns (on shutdown) is not restarted.
fn supervise<F, Fut>(platform: &Platform, name: &'static str, task: F)
where
    F: Fn(Platform) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let p = platform.clone();
    platform.tasks.spawn(async move {
        loop {
            match std::panic::AssertUnwindSafe(task(p.clone()))
                .catch_unwind()
                .await
            {
                Ok(()) => return,
                Err(_) => {
                    tracing::error!(task = name, "background task panicked; restarting it");
                    metrics::counter!("berth_task_panics_total", "task" => name).increment(1);
                }
            }
            tokio::select! {
                _ = p.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}
