//! `berth policy`: print the tenant's policy document, or replace it from a JSON or TOML
//! file.

use super::ClientOpts;
use super::client::ClientError;
use super::output::text_of;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print the policy document as JSON (its revision on stderr).
    Get,
    /// Replace the policy with FILE, JSON or TOML (`-`: standard input).
    Set { file: PathBuf },
}

pub(super) async fn run(opts: &ClientOpts, cmd: PolicyCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    match cmd {
        PolicyCmd::Get => {
            let p = client.call(Method::GET, "/v1/policy", None).await?;
            out.show(&p, |p, o| {
                // The document alone on stdout, so that `policy get > f; policy set f` works.
                o.line(serde_json::to_string_pretty(&p["policy"]).unwrap_or_default());
                o.note(format!(
                    "revision {}, updated {}",
                    text_of(p, "revision"),
                    text_of(p, "updated_at")
                ));
            });
        }
        PolicyCmd::Set { file } => {
            let doc = read_document(&file)?;
            let p = client.call(Method::PUT, "/v1/policy", Some(&doc)).await?;
            out.show(&p, |p, o| {
                o.line(format!("Policy set: revision {}", text_of(p, "revision")))
            });
        }
    }
    Ok(())
}

/// A policy document from FILE (`-`: standard input): JSON, or TOML turned into the same
/// JSON; the extension decides, else whichever parses.
fn read_document(file: &Path) -> Result<Value, ClientError> {
    let name = file.display();
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| ClientError::Usage(format!("cannot read {name}: {e}")))?
    };
    // An empty document would clear the whole policy: far more likely a mistake.
    if text.trim().is_empty() {
        return Err(ClientError::Usage(format!(
            "{name} is empty; to clear the policy, set {{}}"
        )));
    }
    let as_json = |t: &str| serde_json::from_str::<Value>(t).map_err(|e| e.to_string());
    let as_toml = |t: &str| {
        toml::from_str::<toml::Table>(t)
            .map(|t| toml_to_json(toml::Value::Table(t)))
            .map_err(|e| e.to_string())
    };
    let parsed = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => as_json(&text),
        Some("toml") => as_toml(&text),
        _ => as_json(&text).or_else(|json_err| {
            as_toml(&text).map_err(|toml_err| {
                format!("neither JSON ({json_err}) nor TOML ({})", toml_err.trim())
            })
        }),
    };
    parsed.map_err(|e| ClientError::Usage(format!("{name}: {e}")))
}

/// TOML as JSON; dates and times become their RFC 3339 text.
fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}
