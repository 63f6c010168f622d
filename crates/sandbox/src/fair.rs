//! Fair shares of the node's sandboxes: one tenant holds at most a share of them (half,
//! at least one), and its further calls wait in its own line, so a tenant that sends
//! many calls at once cannot take every sandbox while the others wait behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-tenant lines in front of the node's sandboxes.
pub struct FairSlots {
    share: usize,
    lines: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Lines kept for tenants with nothing running or waiting, before they are dropped.
const IDLE_LINES: usize = 1024;

impl FairSlots {
    /// For a node of `max_concurrent` sandboxes.
    pub fn new(max_concurrent: usize) -> Self {
        FairSlots {
            share: (max_concurrent / 2).max(1),
            lines: Mutex::new(HashMap::new()),
        }
    }

    /// The most sandboxes one tenant holds at once.
    pub fn share(&self) -> usize {
        self.share
    }

    /// Waits for a place of `tenant`'s share; held until the permit is dropped. (The
    /// sandbox then takes one of the node's slots, first come first served among the
    /// tenants' places, so every tenant with calls waiting is served in turn.)
    pub async fn acquire(&self, tenant: &str) -> Option<OwnedSemaphorePermit> {
        let line = {
            let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.len() > IDLE_LINES {
                // Idle lines: nobody holds or waits for them (this map holds the only Arc).
                let share = self.share;
                lines.retain(|_, l| Arc::strong_count(l) > 1 || l.available_permits() < share);
            }
            lines
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                .clone()
        };
        line.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_and_others_get_theirs() {
        let slots = FairSlots::new(4);
        assert_eq!(slots.share(), 2);
        let a1 = slots.acquire("a").await.unwrap();
        let _a2 = slots.acquire("a").await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire("a"));
        assert!(
            third.await.is_err(),
            "a third place for the same tenant waits"
        );
        let _b = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire("b"))
            .await
            .expect("another tenant is not behind the first one's line");
        drop(a1);
        assert!(slots.acquire("a").await.is_some());
    }
}
