//! `berth usage` (requests, tokens and cost, grouped) and `berth invoice` (a month's bill).

use super::ClientOpts;
use super::client::{ClientError, query};
use super::output::{rows, with_cost};
use reqwest::Method;
use serde_json::Value;

/// The sums of every usage row, after the grouped dimensions.
const USAGE_SUMS: &[&str] = &[
    "requests",
    "runs",
    "llm_calls",
    "tool_calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
];

/// The columns of an invoice's lines.
const INVOICE_COLUMNS: &[&str] = &[
    "meter",
    "provider",
    "model",
    "quantity",
    "unit",
    "input_tokens",
    "output_tokens",
    "amount_usd",
];

pub(super) async fn invoice(opts: &ClientOpts, month: &str, csv: bool) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    let path = format!("/v1/invoices/{month}");
    if csv {
        let text = client.get_text(&path, "text/csv").await?;
        out.text(|o| o.raw(&text));
        return Ok(());
    }
    let inv = client.call(Method::GET, &path, None).await?;
    out.show(&inv, |v, o| {
        o.line(format!(
            "Invoice {} for {} (plan {}){}",
            v["period"].as_str().unwrap_or_default(),
            v["tenant"]["name"].as_str().unwrap_or_default(),
            v["tenant"]["plan"].as_str().unwrap_or_default(),
            if v["final"] == true {
                ""
            } else {
                ", month not over yet"
            }
        ));
        let lines: Vec<Value> = v["lines"].as_array().cloned().unwrap_or_default();
        o.table(&lines, INVOICE_COLUMNS);
        for (label, key) in [
            ("subtotal", "subtotal_usd"),
            ("markup", "markup_usd"),
            ("total", "total_usd"),
        ] {
            o.line(format!(
                "{label:>9}  ${:.9}",
                v[key].as_f64().unwrap_or_default()
            ));
        }
    });
    Ok(())
}

pub(super) async fn usage(
    opts: &ClientOpts,
    by: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    let path = query("/v1/usage", &[("group_by", by), ("from", from), ("to", to)]);
    let u = client.call(Method::GET, &path, None).await?;
    out.show(&u, |v, o| {
        let mut cols: Vec<&str> = by
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        cols.extend_from_slice(USAGE_SUMS);
        o.table(&with_cost(rows(v), |r| &r["cost_usd"]), &cols);
    });
    Ok(())
}
