//! Billable usage events, their per-minute rollups, and the usage query that reads
//! whichever of the two answers it exactly.

use super::{Db, Store};
use crate::backend::{Backend, TxKind};
use crate::{Result, UsageEvent, UsageQuery, UsageRow, UsageStore};
use async_trait::async_trait;
use berth_core::TenantScope;
use sqlx::Row as _;

#[async_trait]
impl UsageStore for Store {
    async fn insert_usage(&self, scope: &TenantScope, events: &[UsageEvent]) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
        let mut inserted = 0;
        // Chunks keep each statement under the drivers' bind-parameter limits.
        for chunk in events.chunks(500) {
            let mut qb = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO usage_events (tenant_id, id, at, kind, key_id, agent, tags, \
                 provider, model, input_tokens, output_tokens, cached_input_tokens, cost_nano, \
                 latency_ms, status, streamed, estimated, run_id, agent_version) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(scope.tenant_str())
                    .push_bind(&e.id)
                    .push_bind(e.at_ms)
                    .push_bind(&e.kind)
                    .push_bind(e.key_id.as_deref())
                    .push_bind(e.agent.as_deref())
                    .push_bind(e.tags.as_deref())
                    .push_bind(e.provider.as_deref())
                    .push_bind(e.model.as_deref())
                    .push_bind(e.input_tokens)
                    .push_bind(e.output_tokens)
                    .push_bind(e.cached_input_tokens)
                    .push_bind(e.cost_nano)
                    .push_bind(e.latency_ms)
                    .push_bind(&e.status)
                    .push_bind(e.streamed)
                    .push_bind(e.estimated)
                    .push_bind(e.run_id.as_deref())
                    .push_bind(e.agent_version);
            });
            qb.push(" ON CONFLICT (tenant_id, id) DO NOTHING RETURNING id");
            let fresh: std::collections::HashSet<String> = qb
                .build_query_scalar::<String>()
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            inserted += fresh.len() as u64;
            // Only events stored just now are added to their minute: a retried
            // event is counted once in the rollups too.
            type Group = (i64, String, String, String, String, String);
            let mut groups: std::collections::BTreeMap<Group, [i64; 5]> =
                std::collections::BTreeMap::new();
            for e in chunk.iter().filter(|e| fresh.contains(&e.id)) {
                let key = (
                    e.at_ms.div_euclid(60_000) * 60_000,
                    e.kind.clone(),
                    e.key_id.clone().unwrap_or_default(),
                    e.agent.clone().unwrap_or_default(),
                    e.provider.clone().unwrap_or_default(),
                    e.model.clone().unwrap_or_default(),
                );
                let g = groups.entry(key).or_insert([0; 5]);
                g[0] += 1;
                g[1] += e.input_tokens;
                g[2] += e.output_tokens;
                g[3] += e.cost_nano;
                g[4] += e.latency_ms;
            }
            if groups.is_empty() {
                continue;
            }
            let mut up = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO usage_rollups (tenant_id, minute, kind, key_id, agent, provider, \
                 model, events, input_tokens, output_tokens, cost_nano, latency_ms) ",
            );
            up.push_values(groups.iter(), |mut b, (k, v)| {
                b.push_bind(scope.tenant_str())
                    .push_bind(k.0)
                    .push_bind(k.1.clone())
                    .push_bind(k.2.clone())
                    .push_bind(k.3.clone())
                    .push_bind(k.4.clone())
                    .push_bind(k.5.clone())
                    .push_bind(v[0])
                    .push_bind(v[1])
                    .push_bind(v[2])
                    .push_bind(v[3])
                    .push_bind(v[4]);
            });
            up.push(
                " ON CONFLICT (tenant_id, minute, kind, key_id, agent, provider, model) \
                 DO UPDATE SET events = usage_rollups.events + excluded.events, \
                 input_tokens = usage_rollups.input_tokens + excluded.input_tokens, \
                 output_tokens = usage_rollups.output_tokens + excluded.output_tokens, \
                 cost_nano = usage_rollups.cost_nano + excluded.cost_nano, \
                 latency_ms = usage_rollups.latency_ms + excluded.latency_ms",
            );
            up.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn query_usage(&self, scope: &TenantScope, q: &UsageQuery) -> Result<Vec<UsageRow>> {
        // Whole minutes are read from the rollups; a range that cuts a minute reads
        // the events themselves.
        let aligned = |t: Option<i64>| t.is_none_or(|t| t.rem_euclid(60_000) == 0);
        let rollups = aligned(q.from_ms) && aligned(q.to_ms);
        let (table, at, count) = if rollups {
            ("usage_rollups", "minute", "events")
        } else {
            ("usage_events", "at", "1")
        };
        let dims: Vec<String> = q
            .group_by
            .iter()
            .enumerate()
            .map(|(i, d)| {
                format!(
                    "{} AS d{i}",
                    if rollups {
                        d.rollup_column()
                    } else {
                        d.column()
                    }
                )
            })
            .collect();
        let group: Vec<String> = (0..q.group_by.len()).map(|i| format!("d{i}")).collect();
        let sum = |expr: &str| format!("CAST(COALESCE(SUM({expr}), 0) AS BIGINT)");
        let mut select = dims.clone();
        select.push(format!("{} AS events", sum(count)));
        // Requests are calls made (model and embedding calls); a run is counted as a run.
        select.push(format!(
            "{} AS requests",
            sum(&format!(
                "CASE WHEN kind = 'llm' OR kind = 'embedding' THEN {count} ELSE 0 END"
            ))
        ));
        select.push(format!("{} AS input_tokens", sum("input_tokens")));
        select.push(format!("{} AS output_tokens", sum("output_tokens")));
        select.push(format!(
            "{} AS llm_calls",
            sum(&format!(
                "CASE WHEN kind = 'llm' OR kind = 'embedding' THEN {count} ELSE 0 END"
            ))
        ));
        select.push(format!(
            "{} AS tool_calls",
            sum(&format!("CASE WHEN kind = 'tool' THEN {count} ELSE 0 END"))
        ));
        select.push(format!(
            "{} AS runs",
            sum(&format!("CASE WHEN kind = 'run' THEN {count} ELSE 0 END"))
        ));
        select.push(format!(
            "{} AS compute_ms",
            sum("CASE WHEN kind = 'compute' THEN latency_ms ELSE 0 END")
        ));
        select.push(format!("{} AS cost_nano", sum("cost_nano")));
        let mut sql = format!(
            "SELECT {} FROM {table} WHERE tenant_id = $1 AND {at} >= $2 AND {at} < $3",
            select.join(", ")
        );
        if !group.is_empty() {
            sql.push_str(&format!(" GROUP BY {g} ORDER BY {g}", g = group.join(", ")));
        }
        let mut tx = self
            .begin(TxKind::Tenant(scope.tenant_str()), false)
            .await?;
        let rows = sqlx::query(&sql)
            .bind(scope.tenant_str())
            .bind(q.from_ms.unwrap_or(i64::MIN))
            .bind(q.to_ms.unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let events: i64 = r.try_get("events")?;
            if events == 0 {
                continue; // an ungrouped query over no events
            }
            let mut dims = Vec::with_capacity(q.group_by.len());
            for (i, d) in q.group_by.iter().enumerate() {
                dims.push((
                    *d,
                    r.try_get::<Option<String>, _>(format!("d{i}").as_str())?,
                ));
            }
            out.push(UsageRow {
                dims,
                requests: r.try_get("requests")?,
                input_tokens: r.try_get("input_tokens")?,
                output_tokens: r.try_get("output_tokens")?,
                llm_calls: r.try_get("llm_calls")?,
                tool_calls: r.try_get("tool_calls")?,
                runs: r.try_get("runs")?,
                compute_ms: r.try_get("compute_ms")?,
                cost_nano: r.try_get("cost_nano")?,
            });
        }
        Ok(out)
    }
}
