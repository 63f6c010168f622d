//! Agents from the command line: `validate` (offline), `deploy`, `agents`, `versions`,
//! `traffic` and `rollback`.

use super::ClientOpts;
use super::client::{ClientError, seg};
use super::output::{Out, rows, text_of};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    List,
    Show { name: String },
}

/// `v3 90%, v4 10%`.
fn traffic_text(split: &Value) -> String {
    let parts: Vec<String> = split
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| format!("v{} {}%", text_of(s, "version"), text_of(s, "weight")))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `berth validate`: the manifest as the server would read it, without a server.
pub(super) fn validate(dir: &Path, json: bool) -> Result<(), ClientError> {
    let manifest = crate::validate::validate_dir(dir).map_err(ClientError::Usage)?;
    Out::new(json).show(&manifest, |m, o| {
        o.line(format!(
            "ok: agent {} (model {}, {} tool pattern(s), {})",
            m.name,
            m.model.name,
            m.tools.use_.len(),
            if m.component.is_some() {
                "component"
            } else {
                "built-in loop"
            }
        ))
    });
    Ok(())
}

/// `berth deploy`: validates and packs the directory, then uploads it as a new version.
pub(super) async fn deploy(
    opts: &ClientOpts,
    dir: &Path,
    no_promote: bool,
) -> Result<(), ClientError> {
    // Checked before the token: a broken manifest is worth fixing before anything else.
    let manifest = crate::validate::validate_dir(dir).map_err(ClientError::Usage)?;
    let client = opts.client()?;
    let packed = crate::pack::pack(dir).map_err(ClientError::Usage)?;
    let out = opts.out();
    // Progress, in either mode: the upload may take a while.
    out.text(|o| {
        o.note(format!(
            "packed {} file(s), {} KiB → {} KiB compressed; uploading…",
            packed.files,
            packed.raw_bytes.div_ceil(1024),
            (packed.bytes.len() as u64).div_ceil(1024)
        ))
    });
    let path = format!(
        "/v1/agents/{}/versions?promote={}",
        seg(&manifest.name),
        !no_promote
    );
    let d = client
        .upload(&path, "application/gzip", packed.bytes)
        .await?;
    out.show(&d, |d, o| {
        let what = if d["promoted"].as_bool() == Some(true) {
            "serving 100% of traffic"
        } else {
            "not promoted"
        };
        o.line(format!(
            "Deployed {} v{} ({}), {what}",
            text_of(d, "agent"),
            text_of(d, "version"),
            text_of(d, "digest")
        ));
        o.line(format!(
            "Run it: POST {}/v1/agents/{}/runs",
            client.base(),
            text_of(d, "agent")
        ));
    });
    Ok(())
}

pub(super) async fn run(opts: &ClientOpts, cmd: AgentsCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    match cmd {
        AgentsCmd::List => {
            let all = client.call(Method::GET, "/v1/agents", None).await?;
            out.show(&all, |v, o| {
                let rows: Vec<Value> = rows(v)
                    .iter()
                    .map(|a| {
                        let mut a = a.clone();
                        a["traffic"] = Value::String(traffic_text(&a["traffic"]));
                        a
                    })
                    .collect();
                o.table(&rows, &["name", "latest_version", "traffic", "description"]);
            });
        }
        AgentsCmd::Show { name } => {
            let path = format!("/v1/agents/{}", seg(&name));
            let a = client.call(Method::GET, &path, None).await?;
            out.show(&a, |a, o| {
                o.line(format!(
                    "{} (latest v{}): {}",
                    text_of(a, "name"),
                    text_of(a, "latest_version"),
                    text_of(a, "description")
                ));
                o.line(format!("traffic: {}", traffic_text(&a["traffic"])));
            });
        }
    }
    Ok(())
}

pub(super) async fn versions(opts: &ClientOpts, name: &str) -> Result<(), ClientError> {
    let path = format!("/v1/agents/{}/versions", seg(name));
    let v = opts.client()?.call(Method::GET, &path, None).await?;
    opts.out()
        .table(&v, &["version", "digest", "created_at", "created_by"]);
    Ok(())
}

/// `berth traffic NAME [V=W…]`: shows the split, or sets it and keeps the pins.
pub(super) async fn traffic(
    opts: &ClientOpts,
    name: &str,
    split: &[String],
) -> Result<(), ClientError> {
    let client = opts.client()?;
    let path = format!("/v1/agents/{}/traffic", seg(name));
    let t = if split.is_empty() {
        client.call(Method::GET, &path, None).await?
    } else {
        let mut entries = Vec::new();
        for pair in split {
            let (v, w) = pair
                .split_once('=')
                .and_then(|(v, w)| Some((v.parse::<i64>().ok()?, w.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    ClientError::Usage(format!("{pair:?} is not VERSION=WEIGHT, e.g. 3=90"))
                })?;
            entries.push(json!({"version": v, "weight": w}));
        }
        // Keep the pins as they are.
        let current = client.call(Method::GET, &path, None).await?;
        let body = json!({"split": entries, "pins": current["pins"]});
        client.call(Method::PUT, &path, Some(&body)).await?
    };
    show_split(opts.out(), name, &t);
    Ok(())
}

pub(super) async fn rollback(
    opts: &ClientOpts,
    name: &str,
    to: Option<i64>,
) -> Result<(), ClientError> {
    let body = to.map(|v| json!({"to": v}));
    let path = format!("/v1/agents/{}/rollback", seg(name));
    let t = opts
        .client()?
        .call(Method::POST, &path, body.as_ref())
        .await?;
    show_split(opts.out(), name, &t);
    Ok(())
}

/// `NAME: v3 90%, v4 10%`: what `traffic` and `rollback` answer.
fn show_split(out: Out, name: &str, traffic: &Value) {
    out.show(traffic, |t, o| {
        o.line(format!("{name}: {}", traffic_text(&t["split"])))
    });
}
