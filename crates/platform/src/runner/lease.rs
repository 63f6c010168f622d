//! The heartbeat: every third of a lease, the runs this node executes renew their lease
//! together with their usage so far and the steps taken since the last beat, so a crash
//! loses at most one beat of trace and the sweeper can tell a dead process's runs.

use crate::Platform;
use berth_core::{TenantId, TenantScope};

/// Keeps the leases of the runs this node executes, with their usage so far.
pub(crate) async fn heartbeat(state: Platform) {
    let every = state.runner.settings.lease / 3;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for (tenant, run_id, live) in state.runner.hub.executing() {
            let Some(tenant) = TenantId::parse(&tenant) else {
                continue;
            };
            let scope = TenantScope::for_system(tenant);
            let usage = live.usage().to_string();
            // The steps taken since the last beat go with the lease: a crash keeps them.
            let steps = live.take_unsaved_steps();
            if let Err(e) = state
                .store
                .renew_lease(&scope, &run_id, state.runner.lease_until(), &usage, &steps)
                .await
            {
                tracing::warn!(run = %run_id, error = %e, "lease not renewed");
                live.return_unsaved_steps(steps);
            }
        }
    }
}
