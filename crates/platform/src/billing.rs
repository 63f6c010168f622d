//! What a tenant owes: the month so far and its projection with every budget's state
//! (`/v1/usage/summary`), and monthly invoices whose lines come from the usage ledger
//! (exact nano-USD sums), with unit prices, the plan's markup and totals that add up.

use crate::Platform;
use crate::error::Error;
use crate::{budgets, policy, usage};
use berth_core::clock::{now_ms, parse_rfc3339, rfc3339};
use berth_core::{NanoUsd, TenantScope};
use berth_store::{Tenant, UsageDim, UsageQuery};
use serde_json::{Value, json};

/// `[start, end)` of month `YYYY-MM`, in ms.
pub fn month_range(month: &str) -> Result<(i64, i64), Error> {
    let bad = || {
        Error::bad_request(
            "invalid_month",
            format!("{month:?} is not a month like 2026-11"),
        )
        .with_param("month")
    };
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y.to_string().len() != 4 || !(1..=12).contains(&m) || month.len() != 7 {
        return Err(bad());
    }
    let start = parse_rfc3339(&format!("{y:04}-{m:02}-01T00:00:00Z")).ok_or_else(bad)?;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end = parse_rfc3339(&format!("{ny:04}-{nm:02}-01T00:00:00Z")).ok_or_else(bad)?;
    Ok((start, end))
}

fn current_month() -> String {
    rfc3339(now_ms()).get(..7).unwrap_or_default().to_owned()
}

/// `/v1/usage/summary`: this month's cost so far, a straight-line projection to its end,
/// and every budget in force with what it has spent and holds.
pub async fn summary(
    state: &Platform,
    scope: &TenantScope,
    tenant: &Tenant,
) -> Result<Value, Error> {
    let month = current_month();
    let (start, end) = month_range(&month)?;
    let rows = usage::query(
        state,
        scope,
        &UsageQuery {
            from_ms: Some(start),
            to_ms: Some(end),
            group_by: vec![],
        },
    )
    .await?;
    let cost = NanoUsd(rows.iter().map(|r| r.cost_nano).sum());
    let elapsed = (now_ms() - start).max(1) as f64 / (end - start) as f64;
    let projected = NanoUsd((cost.0 as f64 / elapsed.min(1.0)).round() as i64);
    let policy = policy::effective(state, scope).await?;
    let all = match budgets::plan_of(state, &tenant.plan) {
        Some(plan) => berth_meter::budget::all(&policy.budgets, plan, now_ms()),
        None => Vec::new(),
    };
    let budget_states = budgets::states(state, scope, &all).await?;
    let stored_bytes = state.store.stored_bytes(scope).await?;
    Ok(
        json!({"period": month, "cost_usd": cost.as_usd(), "projected_cost_usd": projected.as_usd(),
              "stored_bytes": stored_bytes, "budgets": budget_states}),
    )
}

/// One invoice line.
struct Line {
    meter: &'static str,
    provider: Option<String>,
    model: Option<String>,
    quantity: i64,
    unit: &'static str,
    input_tokens: i64,
    output_tokens: i64,
    price_input: Option<f64>,
    price_output: Option<f64>,
    amount: NanoUsd,
}

/// The invoice of `month` (`YYYY-MM`) as JSON.
pub async fn invoice(
    state: &Platform,
    scope: &TenantScope,
    tenant: &Tenant,
    month: &str,
) -> Result<Value, Error> {
    let (start, end) = month_range(month)?;
    let rows = usage::query(
        state,
        scope,
        &UsageQuery {
            from_ms: Some(start),
            to_ms: Some(end),
            group_by: vec![UsageDim::Provider, UsageDim::Model],
        },
    )
    .await?;
    let dim = |r: &berth_store::UsageRow, d: UsageDim| {
        r.dims
            .iter()
            .find(|(x, _)| *x == d)
            .and_then(|(_, v)| v.clone())
    };
    let mut lines = Vec::new();
    let (mut runs, mut tool_calls, mut compute_ms, mut other) = (0i64, 0i64, 0i64, 0i64);
    for r in &rows {
        runs += r.runs;
        tool_calls += r.tool_calls;
        compute_ms += r.compute_ms;
        if r.llm_calls > 0 {
            let model = dim(r, UsageDim::Model);
            let price = model.as_deref().and_then(|m| state.prices.lookup(m, None));
            lines.push(Line {
                meter: "llm",
                provider: dim(r, UsageDim::Provider),
                model,
                quantity: r.llm_calls,
                unit: "calls",
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                price_input: price.map(|p| NanoUsd(p.input).as_usd()),
                price_output: price.map(|p| NanoUsd(p.output).as_usd()),
                amount: NanoUsd(r.cost_nano),
            });
        } else {
            other += r.cost_nano;
        }
    }
    for (meter, quantity, unit) in [
        ("runs", runs, "runs"),
        ("tool_calls", tool_calls, "calls"),
        ("compute", compute_ms, "ms"),
    ] {
        if quantity > 0 {
            lines.push(Line {
                meter,
                provider: None,
                model: None,
                quantity,
                unit,
                input_tokens: 0,
                output_tokens: 0,
                price_input: None,
                price_output: None,
                // Their cost, if any, is in the events' own cost: it belongs to no model.
                amount: NanoUsd(0),
            });
        }
    }
    // Stored bytes are a level, not a flow: the invoice shows what is stored now.
    let stored = state.store.stored_bytes(scope).await?;
    if stored > 0 {
        lines.push(Line {
            meter: "storage",
            provider: None,
            model: None,
            quantity: stored,
            unit: "bytes",
            input_tokens: 0,
            output_tokens: 0,
            price_input: None,
            price_output: None,
            amount: NanoUsd(0),
        });
    }
    if other != 0 {
        // Priced usage that belongs to no model (none is recorded today): its own line, so
        // the total still adds up.
        lines.push(Line {
            meter: "other",
            provider: None,
            model: None,
            quantity: 1,
            unit: "items",
            input_tokens: 0,
            output_tokens: 0,
            price_input: None,
            price_output: None,
            amount: NanoUsd(other),
        });
    }
    let subtotal = NanoUsd(lines.iter().map(|l| l.amount.0).sum());
    let markup_percent = budgets::plan_of(state, &tenant.plan).map_or(0.0, |p| p.markup_percent);
    let markup = NanoUsd((subtotal.0 as f64 * markup_percent / 100.0).round() as i64);
    let total = NanoUsd(subtotal.0 + markup.0);
    let lines: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({"meter": l.meter, "provider": l.provider, "model": l.model, "quantity": l.quantity, "unit": l.unit,
                   "input_tokens": l.input_tokens, "output_tokens": l.output_tokens,
                   "unit_price_input_usd_per_million": l.price_input, "unit_price_output_usd_per_million": l.price_output,
                   "amount_usd": l.amount.as_usd(), "amount_nano_usd": l.amount.0})
        })
        .collect();
    Ok(
        json!({"tenant": {"id": tenant.id.as_str(), "name": tenant.name, "plan": tenant.plan},
              "period": month, "currency": "USD", "lines": lines,
              "subtotal_usd": subtotal.as_usd(), "subtotal_nano_usd": subtotal.0,
              "markup_percent": markup_percent, "markup_usd": markup.as_usd(), "markup_nano_usd": markup.0,
              "total_usd": total.as_usd(), "total_nano_usd": total.0,
              "final": now_ms() >= end}),
    )
}

/// The invoice as CSV: one row per line, then the subtotal, markup and total rows.
pub fn invoice_csv(inv: &Value) -> String {
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) if s.contains([',', '"', '\n']) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cols = [
        "meter",
        "provider",
        "model",
        "quantity",
        "unit",
        "input_tokens",
        "output_tokens",
        "unit_price_input_usd_per_million",
        "unit_price_output_usd_per_million",
        "amount_usd",
    ];
    let mut out = cols.join(",");
    out.push('\n');
    for l in inv["lines"].as_array().into_iter().flatten() {
        out.push_str(
            &cols
                .iter()
                .map(|c| cell(&l[*c]))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    for (label, key) in [
        ("subtotal", "subtotal_usd"),
        ("markup", "markup_usd"),
        ("total", "total_usd"),
    ] {
        out.push_str(&format!("{label},,,,,,,,,{}\n", cell(&inv[key])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        let (s, e) = month_range("2026-12").unwrap();
        assert_eq!(rfc3339(s), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(e), "2027-01-01T00:00:00Z");
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "2026-11-01", ""] {
            assert!(month_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_quotes_and_totals() {
        let inv = json!({"lines": [{"meter": "llm", "provider": "mock", "model": "a,b", "quantity": 2, "unit": "calls",
                                    "input_tokens": 5, "output_tokens": 6, "unit_price_input_usd_per_million": 1.0,
                                    "unit_price_output_usd_per_million": 2.0, "amount_usd": 0.5}],
                         "subtotal_usd": 0.5, "markup_usd": 0.05, "total_usd": 0.55});
        let csv = invoice_csv(&inv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[1], "llm,mock,\"a,b\",2,calls,5,6,1.0,2.0,0.5");
        assert_eq!(lines[4], "total,,,,,,,,,0.55");
    }
}
