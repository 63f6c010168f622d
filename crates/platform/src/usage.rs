//! Usage reports: grouped sums of the tenant's usage events.

use crate::Platform;
use crate::error::Error;
use berth_core::TenantScope;
use berth_core::clock::parse_rfc3339;
use berth_store::{UsageDim, UsageQuery, UsageRow};

/// Parses `from`/`to` (RFC 3339 or `YYYY-MM-DD`) and `group_by` (comma-separated).
pub fn parse_query(
    from: Option<&str>,
    to: Option<&str>,
    group_by: Option<&str>,
) -> Result<UsageQuery, Error> {
    let time = |raw: &str, param: &str| {
        parse_rfc3339(raw)
            .or_else(|| parse_rfc3339(&format!("{raw}T00:00:00Z")))
            .ok_or_else(|| {
                Error::bad_request(
                    "invalid_time",
                    format!("{param} must be RFC 3339 or YYYY-MM-DD"),
                )
                .with_param(param)
            })
    };
    let mut dims = Vec::new();
    for part in group_by
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let dim = UsageDim::parse(part).ok_or_else(|| {
            Error::bad_request(
                "invalid_group_by",
                format!("cannot group by {part:?}; use agent, model, provider, key, day"),
            )
            .with_param("group_by")
        })?;
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    Ok(UsageQuery {
        from_ms: from.map(|f| time(f, "from")).transpose()?,
        to_ms: to.map(|t| time(t, "to")).transpose()?,
        group_by: dims,
    })
}

pub async fn query(
    state: &Platform,
    scope: &TenantScope,
    q: &UsageQuery,
) -> Result<Vec<UsageRow>, Error> {
    // Usage recorded a moment ago may still be in the recorder's batch.
    state.usage.flush().await;
    Ok(state.store.query_usage(scope, q).await?)
}

/// Usage of every tenant (the operator's view): the same rows, each with its tenant.
pub async fn query_all(state: &Platform, q: &UsageQuery) -> Result<Vec<(String, UsageRow)>, Error> {
    state.usage.flush().await;
    let mut out = Vec::new();
    let mut page = berth_store::PageRequest::first(berth_store::PageRequest::MAX_LIMIT);
    loop {
        let tenants = state.store.list_tenants(&page).await?;
        for t in &tenants.items {
            // The operator's explicit act on each tenant, one scope at a time.
            let scope = TenantScope::for_operator(t.id.clone());
            for row in state.store.query_usage(&scope, q).await? {
                out.push((t.id.to_string(), row));
            }
        }
        match tenants.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(out),
        }
    }
}
