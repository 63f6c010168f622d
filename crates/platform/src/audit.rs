//! Reading and verifying a tenant's audit chain.

use crate::Platform;
use crate::error::Error;
use berth_audit::{Entry, Verification, Verifier};
use berth_core::TenantScope;
use berth_store::{Page, PageRequest};

pub async fn list(
    state: &Platform,
    scope: &TenantScope,
    page: &PageRequest,
) -> Result<Page<Entry>, Error> {
    let after = match &page.cursor {
        None => 0,
        Some(c) => c.parse::<i64>().map_err(|_| {
            Error::bad_request("invalid_cursor", "cursor must be a sequence number")
                .with_param("cursor")
        })?,
    };
    // Entries written behind (tool calls) that were queued before this read are in it.
    state.audit.flush().await;
    let mut rows = state.store.list_audit(scope, after, page.limit + 1).await?;
    let next_cursor = if rows.len() as i64 > page.limit {
        rows.truncate(page.limit as usize);
        rows.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Page {
        items: rows,
        next_cursor,
    })
}

/// Verifies the whole chain, reading it in pages so memory stays flat however long it is.
pub async fn verify(state: &Platform, scope: &TenantScope) -> Result<Verification, Error> {
    const BATCH: i64 = 1000;
    let mut verifier = Verifier::new(scope.tenant_str());
    let mut after = 0;
    state.audit.flush().await;
    loop {
        let batch = state.store.list_audit(scope, after, BATCH).await?;
        for e in &batch {
            if !verifier.push(e) {
                return Ok(verifier.finish());
            }
        }
        match batch.last() {
            Some(last) if batch.len() as i64 == BATCH => after = last.seq,
            _ => return Ok(verifier.finish()),
        }
    }
}
