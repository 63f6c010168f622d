//! The command line: `berth serve` and the client commands of API.md.

use crate::client::{Client, ClientError, EventStream, SavedLogin, Streamed, save_login};
use crate::show::text_of;
use clap::{Args, FromArgMatches, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Berth: a multi-tenant platform that hosts AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a client command connects, and how it prints.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Server URL (default: the saved login, else http://127.0.0.1:7700).
    #[arg(long, env = "BERTH_URL", global = true)]
    pub url: Option<String>,
    /// Token: a tenant key, a JWT, or the operator token.
    #[arg(long, env = "BERTH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Save a server URL and token for later commands.
    Login {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
    },
    /// Show who the token belongs to.
    Me {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Manage tenants (operator token).
    Tenants {
        #[command(subcommand)]
        cmd: TenantsCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Manage secrets (values are write-only).
    Secrets {
        #[command(subcommand)]
        cmd: SecretsCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Pack DIR (agent.toml and its files, minus .berthignore) and deploy it as a new version.
    Deploy {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Keep traffic where it is.
        #[arg(long)]
        no_promote: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List agents, or show one.
    Agents {
        #[command(subcommand)]
        cmd: AgentsCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// An agent's versions.
    Versions {
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Show an agent's traffic, or set it: `berth traffic NAME 3=90 4=10`.
    Traffic {
        name: String,
        /// VERSION=WEIGHT pairs; weights sum to 100.
        split: Vec<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Send all traffic back to the version that held it before (or --to N).
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<i64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Run an agent and print its answer.
    Run {
        name: String,
        /// The input text.
        input: String,
        /// Continue this thread (`new` starts one; its id is printed after the answer).
        #[arg(long)]
        thread: Option<String>,
        /// Run this version instead of the one traffic picks (role developer).
        #[arg(long)]
        version: Option<i64>,
        /// Print the answer as it is written, with tool calls, until the run ends.
        #[arg(long, conflicts_with = "asynchronous")]
        stream: bool,
        /// Return at once with the queued run.
        #[arg(long = "async")]
        asynchronous: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List, inspect and cancel runs.
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// An agent's recent runs, one line each; `-f` keeps printing runs as they finish.
    Logs {
        name: String,
        /// Poll every second and print each run when it finishes, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// How many recent runs to show first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Runs paused for a human decision.
    Approvals {
        #[command(subcommand)]
        cmd: ApprovalsCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The tenant policy document.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The tenant's own LLM providers (bring your own key).
    Providers {
        #[command(subcommand)]
        cmd: ProvidersCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The tenant's MCP servers: add one (its tools are discovered), list, refresh, remove.
    Mcp {
        #[command(subcommand)]
        cmd: McpCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Every tool the token may use: built-in and the tenant's MCP servers', as the policy allows.
    Tools {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The invoice of a month: lines by meter and model, markup and total.
    Invoice {
        /// The month, YYYY-MM.
        month: String,
        /// Print the server's CSV instead of a table.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Usage and cost, grouped.
    Usage {
        /// Group by these, comma-separated: agent, model, provider, key, day.
        #[arg(long)]
        by: Option<String>,
        /// From this day (YYYY-MM-DD) or RFC 3339 time, inclusive.
        #[arg(long)]
        from: Option<String>,
        /// To this day or time, exclusive.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Check an agent manifest (DIR/agent.toml) offline.
    Validate {
        /// The agent's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read and verify the audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Config file (berth.toml).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub database_url: Option<String>,
    /// Create (once) a demo tenant with an admin key and print a ready curl line.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Subcommand, Debug)]
pub enum TenantsCmd {
    Create {
        name: String,
        #[arg(long)]
        plan: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// Restrict the key to one agent.
        #[arg(long)]
        agent: Option<String>,
        /// RFC 3339 expiry time.
        #[arg(long)]
        expires_at: Option<String>,
        /// Create the key in this tenant (operator token).
        #[arg(long)]
        tenant: Option<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    List,
    Show { name: String },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Set NAME to the value read from standard input.
    Set {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// Runs, newest first.
    List {
        #[arg(long)]
        agent: Option<String>,
        /// queued, running, waiting_approval, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        thread: Option<String>,
        /// At most this many (the server's default is 50, its maximum 500).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One run: status, usage, output or error.
    Show { id: String },
    /// A run's steps, one line each.
    Trace { id: String },
    /// Stop a run that has not finished.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    List {
        /// Only these, e.g. `pending`.
        #[arg(long)]
        status: Option<String>,
    },
    /// Let the paused call go ahead.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse the paused call.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print the policy document as JSON (its revision on stderr).
    Get,
    /// Replace the policy with FILE, JSON or TOML (`-`: standard input).
    Set { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum ProvidersCmd {
    /// Add or replace provider NAME; its models are then `NAME/<model>`.
    Set {
        name: String,
        /// openai, anthropic or openai-compatible.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        base_url: Option<String>,
        /// The secret holding the provider's API key (`berth secrets set`).
        #[arg(long)]
        key_secret: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum McpCmd {
    /// Register MCP server NAME at URL (Streamable HTTP) and list the tools it offers.
    ///
    /// Headers are filled from secrets only:
    /// `--header 'Authorization=secret:CRM_TOKEN' --prefix 'Bearer '` sends
    /// `Authorization: Bearer <value of CRM_TOKEN>`. A `--prefix` applies to the `--header`
    /// given just before it.
    Add(McpAddArgs),
    /// The servers with their health, tool count and protocol revision.
    List,
    /// Connect again and list the server's tools again.
    Refresh { name: String },
    /// Remove the server; its tools disappear at once.
    Remove { name: String },
}

/// `berth mcp add` as clap parses it; [`McpAddArgs`] adds which `--prefix` follows which
/// `--header`, which the derived parser does not keep.
#[derive(Args, Debug)]
struct McpAddRaw {
    /// Lowercase letters, digits and '-'; its tools are named NAME__tool.
    name: String,
    /// The server's endpoint, e.g. https://crm.example.com/mcp.
    // Not called `url`: that id is the global `--url` (Berth's own address), which a
    // positional of the same id would shadow.
    #[arg(value_name = "URL")]
    endpoint: String,
    /// HEADER=secret:SECRET: send request header HEADER with the value of secret SECRET
    /// (`berth secrets set SECRET`). Repeatable; literal values are refused.
    #[arg(long, value_name = "HEADER=secret:SECRET")]
    header: Vec<String>,
    /// Text sent before the secret's value in the header given just before, e.g. 'Bearer '.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    prefix: Vec<String>,
}

/// One `--header` and the `--prefix`es given after it, before the next `--header`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderArg {
    pub spec: String,
    pub prefixes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct McpAddArgs {
    pub name: String,
    pub url: String,
    pub headers: Vec<HeaderArg>,
    /// `--prefix`es given before any `--header`: a usage error.
    pub stray_prefixes: Vec<String>,
}

impl FromArgMatches for McpAddArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let raw = McpAddRaw::from_arg_matches(m)?;
        let at = |id: &str| -> Vec<usize> {
            m.indices_of(id)
                .map(|i| i.collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let mut headers: Vec<(usize, HeaderArg)> = at("header")
            .into_iter()
            .zip(raw.header)
            .map(|(i, spec)| {
                (
                    i,
                    HeaderArg {
                        spec,
                        prefixes: Vec::new(),
                    },
                )
            })
            .collect();
        headers.sort_by_key(|(i, _)| *i);
        let mut stray_prefixes = Vec::new();
        for (i, prefix) in at("prefix").into_iter().zip(raw.prefix) {
            match headers.iter_mut().rev().find(|(h, _)| *h < i) {
                Some((_, h)) => h.prefixes.push(prefix),
                None => stray_prefixes.push(prefix),
            }
        }
        Ok(McpAddArgs {
            name: raw.name,
            url: raw.endpoint,
            headers: headers.into_iter().map(|(_, h)| h).collect(),
            stray_prefixes,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for McpAddArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        McpAddRaw::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        McpAddRaw::augment_args_for_update(cmd)
    }
}

/// The `headers` object of `POST /v1/mcp-servers` from `--header`/`--prefix`: every value
/// names a secret (`HEADER=secret:SECRET`), never a literal, which is not echoed back.
fn header_refs(args: &McpAddArgs) -> Result<serde_json::Map<String, Value>, ClientError> {
    if let Some(p) = args.stray_prefixes.first() {
        return Err(ClientError::Usage(format!(
            "--prefix {p:?} comes before any --header; give it right after the --header it applies to"
        )));
    }
    let mut refs = serde_json::Map::new();
    for h in &args.headers {
        let (name, value) = h.spec.split_once('=').ok_or_else(|| {
            ClientError::Usage(format!(
                "--header {:?} is not HEADER=secret:SECRET, e.g. 'Authorization=secret:CRM_TOKEN'",
                h.spec
            ))
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(ClientError::Usage(
                "--header needs a header name before '=', e.g. 'Authorization=secret:CRM_TOKEN'"
                    .into(),
            ));
        }
        let secret = value
            .strip_prefix("secret:")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--header {name}: the value must be secret:SECRET, naming a secret stored with \
                     'berth secrets set SECRET'; literal header values are not accepted"
                ))
            })?;
        if refs.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(ClientError::Usage(format!(
                "--header {name} is given twice"
            )));
        }
        let prefix = match h.prefixes.as_slice() {
            [] => String::new(),
            [p] => p.clone(),
            _ => {
                return Err(ClientError::Usage(format!(
                    "--header {name} has more than one --prefix"
                )));
            }
        };
        refs.insert(name.to_owned(), json!({"secret": secret, "prefix": prefix}));
    }
    Ok(refs)
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    Verify,
}

fn seg(s: &str) -> String {
    // Path segments are validated by the server; encode the few characters that would
    // change the path's meaning.
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
}

fn print_rows(rows: &[Value], cols: &[&str]) {
    let mut widths: Vec<usize> = cols.iter().map(|c| c.len()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| text_of(r, c)).collect())
        .collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
    for row in cells {
        println!("{}", line(row));
    }
}

fn output(opts: &ClientOpts, value: &Value, human: impl FnOnce(&Value)) {
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        human(value);
    }
}

/// Fetches every page of a list endpoint.
async fn list_all(client: &Client, path: &str) -> Result<Value, ClientError> {
    let mut data = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=500&cursor={}", seg(c)),
            None => format!("{path}{sep}limit=500"),
        };
        let page = client.call(Method::GET, &url, None).await?;
        if let Some(items) = page["data"].as_array() {
            data.extend(items.iter().cloned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(json!({"data": data, "next_cursor": null})),
        }
    }
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

fn rows(v: &Value) -> &[Value] {
    v["data"].as_array().map_or(&[], Vec::as_slice)
}

/// `rows` with a `cost_usd` column in dollars, from the number `cost` finds in each row.
fn with_cost(rows: &[Value], cost: impl Fn(&Value) -> &Value) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut shown = r.clone();
            shown["cost_usd"] = Value::String(crate::show::usd(cost(r)));
            shown
        })
        .collect()
}

/// `path?k=v&…` with the pairs that have a value, each value percent-encoded.
fn query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

/// Runs a client command.
pub async fn run_client(command: Command) -> Result<(), ClientError> {
    match command {
        Command::Serve(_) => Err(ClientError::Usage("serve is not a client command".into())),
        Command::Deploy {
            dir,
            no_promote,
            opts,
        } => {
            let manifest = crate::validate::validate_dir(&dir).map_err(ClientError::Usage)?;
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            let packed = crate::pack::pack(&dir).map_err(ClientError::Usage)?;
            eprintln!(
                "packed {} file(s), {} KiB → {} KiB compressed; uploading…",
                packed.files,
                packed.raw_bytes.div_ceil(1024),
                (packed.bytes.len() as u64).div_ceil(1024)
            );
            let path = format!(
                "/v1/agents/{}/versions?promote={}",
                seg(&manifest.name),
                !no_promote
            );
            let d = client
                .upload(&path, "application/gzip", packed.bytes)
                .await?;
            output(&opts, &d, |d| {
                let what = if d["promoted"].as_bool() == Some(true) {
                    "serving 100% of traffic"
                } else {
                    "not promoted"
                };
                println!(
                    "Deployed {} v{} ({}), {what}",
                    text_of(d, "agent"),
                    text_of(d, "version"),
                    text_of(d, "digest")
                );
                println!(
                    "Run it: POST {}/v1/agents/{}/runs",
                    client.base(),
                    text_of(d, "agent")
                );
            });
            Ok(())
        }
        Command::Agents { cmd, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            match cmd {
                AgentsCmd::List => {
                    let all = client.call(Method::GET, "/v1/agents", None).await?;
                    output(&opts, &all, |v| {
                        let rows: Vec<Value> = rows(v)
                            .iter()
                            .map(|a| {
                                let mut a = a.clone();
                                a["traffic"] = Value::String(traffic_text(&a["traffic"]));
                                a
                            })
                            .collect();
                        print_rows(&rows, &["name", "latest_version", "traffic", "description"]);
                    });
                }
                AgentsCmd::Show { name } => {
                    let a = client
                        .call(Method::GET, &format!("/v1/agents/{}", seg(&name)), None)
                        .await?;
                    output(&opts, &a, |a| {
                        println!(
                            "{} (latest v{}): {}",
                            text_of(a, "name"),
                            text_of(a, "latest_version"),
                            text_of(a, "description")
                        );
                        println!("traffic: {}", traffic_text(&a["traffic"]));
                    });
                }
            }
            Ok(())
        }
        Command::Versions { name, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            let v = client
                .call(
                    Method::GET,
                    &format!("/v1/agents/{}/versions", seg(&name)),
                    None,
                )
                .await?;
            output(&opts, &v, |v| {
                print_rows(rows(v), &["version", "digest", "created_at", "created_by"])
            });
            Ok(())
        }
        Command::Traffic { name, split, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            let path = format!("/v1/agents/{}/traffic", seg(&name));
            let t = if split.is_empty() {
                client.call(Method::GET, &path, None).await?
            } else {
                let mut entries = Vec::new();
                for pair in &split {
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
                client
                    .call(
                        Method::PUT,
                        &path,
                        Some(&json!({"split": entries, "pins": current["pins"]})),
                    )
                    .await?
            };
            output(&opts, &t, |t| {
                println!("{name}: {}", traffic_text(&t["split"]))
            });
            Ok(())
        }
        Command::Rollback { name, to, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            let body = to.map(|v| json!({"to": v}));
            let t = client
                .call(
                    Method::POST,
                    &format!("/v1/agents/{}/rollback", seg(&name)),
                    body.as_ref(),
                )
                .await?;
            output(&opts, &t, |t| {
                println!("{name}: {}", traffic_text(&t["split"]))
            });
            Ok(())
        }
        Command::Run {
            name,
            input,
            thread,
            version,
            stream,
            asynchronous,
            opts,
        } => {
            let mut body = json!({"input": input});
            if let Some(t) = thread {
                body["thread"] = json!(t);
            }
            if let Some(v) = version {
                body["version"] = json!(v);
            }
            // Sent only when asked, so that a plain run is the plain synchronous request.
            if stream {
                body["stream"] = json!(true);
            }
            if asynchronous {
                body["async"] = json!(true);
            }
            run_agent(&opts, &name, &body, stream).await
        }
        Command::Runs { cmd, opts } => runs(&opts, cmd).await,
        Command::Logs {
            name,
            follow,
            limit,
            opts,
        } => logs(&opts, &name, follow, limit).await,
        Command::Approvals { cmd, opts } => approvals(&opts, cmd).await,
        Command::Policy { cmd, opts } => policy(&opts, cmd).await,
        Command::Providers { cmd, opts } => providers(&opts, cmd).await,
        Command::Mcp { cmd, opts } => mcp(&opts, cmd).await,
        Command::Tools { opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            let all = client.call(Method::GET, "/v1/tools", None).await?;
            output(&opts, &all, |v| {
                print_rows(rows(v), &["name", "server", "description"])
            });
            Ok(())
        }
        Command::Invoice { month, csv, opts } => invoice(&opts, &month, csv).await,
        Command::Usage { by, from, to, opts } => {
            usage(&opts, by.as_deref(), from.as_deref(), to.as_deref()).await
        }
        Command::Validate { dir, json } => {
            let manifest = crate::validate::validate_dir(&dir).map_err(ClientError::Usage)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&manifest).unwrap_or_default()
                );
            } else {
                println!(
                    "ok: agent {} (model {}, {} tool pattern(s), {})",
                    manifest.name,
                    manifest.model.name,
                    manifest.tools.use_.len(),
                    if manifest.component.is_some() {
                        "component"
                    } else {
                        "built-in loop"
                    }
                );
            }
            Ok(())
        }
        Command::Login { url, token } => {
            let client = Client::resolve(Some(url.clone()), Some(token.clone()))?;
            // Check the token before saving it: /v1/me for tenant tokens, /v1/tenants for the operator.
            let who = match client.call(Method::GET, "/v1/me", None).await {
                Ok(me) => format!(
                    "tenant {} as {}",
                    text_of(&me["tenant"], "name"),
                    text_of(&me["key"], "role")
                ),
                Err(ClientError::Server { code, .. }) if code == "tenant_credential_required" => {
                    client
                        .call(Method::GET, "/v1/tenants?limit=1", None)
                        .await?;
                    "the operator".to_owned()
                }
                Err(e) => return Err(e),
            };
            let path = save_login(&SavedLogin { url, token })?;
            println!("Logged in as {who}; saved to {}", path.display());
            Ok(())
        }
        Command::Me { opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            let me = client.call(Method::GET, "/v1/me", None).await?;
            output(&opts, &me, |v| {
                println!(
                    "tenant  {} ({}, plan {})",
                    text_of(&v["tenant"], "name"),
                    text_of(&v["tenant"], "id"),
                    text_of(&v["tenant"], "plan")
                );
                println!(
                    "key     {} ({}), role {}",
                    text_of(&v["key"], "name"),
                    text_of(&v["key"], "id"),
                    text_of(&v["key"], "role")
                );
            });
            Ok(())
        }
        Command::Tenants { cmd, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            match cmd {
                TenantsCmd::Create { name, plan } => {
                    let t = client
                        .call(
                            Method::POST,
                            "/v1/tenants",
                            Some(&json!({"name": name, "plan": plan})),
                        )
                        .await?;
                    output(&opts, &t, |t| {
                        println!(
                            "Created tenant {} ({}, plan {})",
                            text_of(t, "name"),
                            text_of(t, "id"),
                            text_of(t, "plan")
                        )
                    });
                }
                TenantsCmd::List => {
                    let all = list_all(&client, "/v1/tenants").await?;
                    output(&opts, &all, |v| {
                        print_rows(rows(v), &["id", "name", "plan", "suspended", "created_at"])
                    });
                }
                TenantsCmd::Show { id } => {
                    let t = client
                        .call(Method::GET, &format!("/v1/tenants/{}", seg(&id)), None)
                        .await?;
                    output(&opts, &t, |t| {
                        print_rows(
                            std::slice::from_ref(t),
                            &["id", "name", "plan", "suspended", "created_at"],
                        )
                    });
                }
                TenantsCmd::Delete { id } => {
                    client
                        .call(Method::DELETE, &format!("/v1/tenants/{}", seg(&id)), None)
                        .await?;
                    output(&opts, &json!({"deleted": id}), |_| {
                        println!("Deleted tenant {id} and all of its data")
                    });
                }
            }
            Ok(())
        }
        Command::Keys { cmd, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            match cmd {
                KeysCmd::Create {
                    name,
                    role,
                    agent,
                    expires_at,
                    tenant,
                } => {
                    let path = match &tenant {
                        Some(t) => format!("/v1/tenants/{}/keys", seg(t)),
                        None => "/v1/keys".to_owned(),
                    };
                    let body = json!({"name": name, "role": role, "agent": agent, "expires_at": expires_at});
                    let k = client.call(Method::POST, &path, Some(&body)).await?;
                    output(&opts, &k, |k| {
                        println!(
                            "Created key {} ({}) with role {}",
                            text_of(k, "name"),
                            text_of(k, "id"),
                            text_of(k, "role")
                        );
                        println!("{}", text_of(k, "key"));
                        eprintln!("This is the only time the key is shown; store it now.");
                    });
                }
                KeysCmd::List => {
                    let all = list_all(&client, "/v1/keys").await?;
                    output(&opts, &all, |v| {
                        print_rows(
                            rows(v),
                            &[
                                "id",
                                "name",
                                "role",
                                "agent",
                                "prefix",
                                "expires_at",
                                "revoked_at",
                            ],
                        )
                    });
                }
                KeysCmd::Revoke { id } => {
                    let k = client
                        .call(Method::DELETE, &format!("/v1/keys/{}", seg(&id)), None)
                        .await?;
                    output(&opts, &k, |k| {
                        println!("Revoked key {} ({})", text_of(k, "name"), text_of(k, "id"))
                    });
                }
            }
            Ok(())
        }
        Command::Secrets { cmd, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            match cmd {
                SecretsCmd::Set { name } => {
                    let mut value = String::new();
                    std::io::stdin().read_to_string(&mut value)?;
                    let value = value
                        .strip_suffix('\n')
                        .map(|v| v.strip_suffix('\r').unwrap_or(v))
                        .unwrap_or(&value);
                    client
                        .call(
                            Method::PUT,
                            &format!("/v1/secrets/{}", seg(&name)),
                            Some(&json!({"value": value})),
                        )
                        .await?;
                    output(&opts, &json!({"name": name}), |_| {
                        println!("Set secret {name}")
                    });
                }
                SecretsCmd::List => {
                    let all = list_all(&client, "/v1/secrets").await?;
                    output(&opts, &all, |v| {
                        print_rows(rows(v), &["name", "created_at", "updated_at"])
                    });
                }
                SecretsCmd::Delete { name } => {
                    client
                        .call(Method::DELETE, &format!("/v1/secrets/{}", seg(&name)), None)
                        .await?;
                    output(&opts, &json!({"deleted": name}), |_| {
                        println!("Deleted secret {name}")
                    });
                }
            }
            Ok(())
        }
        Command::Audit { cmd, opts } => {
            let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
            match cmd {
                AuditCmd::List { limit } => {
                    let page = client
                        .call(Method::GET, &format!("/v1/audit?limit={limit}"), None)
                        .await?;
                    output(&opts, &page, |v| {
                        print_rows(rows(v), &["seq", "at", "actor", "action", "target"])
                    });
                }
                AuditCmd::Verify => {
                    let v = client.call(Method::GET, "/v1/audit/verify", None).await?;
                    output(&opts, &v, |v| {
                        if v["ok"].as_bool() == Some(true) {
                            println!(
                                "ok: {} entries, head {}",
                                text_of(v, "entries"),
                                text_of(v, "head")
                            );
                        } else {
                            println!(
                                "BROKEN at seq {}: {}",
                                text_of(v, "seq"),
                                text_of(v, "reason")
                            );
                        }
                    });
                    if v["ok"].as_bool() != Some(true) {
                        return Err(ClientError::Failed(
                            "the audit chain does not verify".into(),
                        ));
                    }
                }
            }
            Ok(())
        }
    }
}

/// `berth run`: starts the run, then prints its answer (as it streams with `stream`).
async fn run_agent(
    opts: &ClientOpts,
    name: &str,
    body: &Value,
    stream: bool,
) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    let path = format!("/v1/agents/{}/runs", seg(name));
    if !stream {
        let run = client.call(Method::POST, &path, Some(body)).await?;
        return print_run(opts, &run);
    }
    match client.open_events(Method::POST, &path, Some(body)).await? {
        Streamed::Events(events) => follow_run(opts, *events).await,
        // A server that answers a streamed request with the finished run as JSON.
        Streamed::Json(run) => print_run(opts, &run),
    }
}

/// Prints a run as `berth run` answers it, and fails if the run did.
fn print_run(opts: &ClientOpts, run: &Value) -> Result<(), ClientError> {
    let id = text_of(run, "id");
    let status = run["status"].as_str().unwrap_or_default().to_owned();
    output(opts, run, |run| match status.as_str() {
        "succeeded" => {
            if let Some(answer) = run["output"].as_str() {
                println!("{answer}");
            }
            eprintln!("{}", crate::show::run_trailer(run));
        }
        "waiting_approval" => {
            println!("Run {id} is waiting for approval: berth approvals list --status pending")
        }
        "queued" | "running" => println!("Run {id} is {status}: berth runs show {id}"),
        // failed and cancelled: said by the error below.
        _ => {}
    });
    match status.as_str() {
        "failed" | "cancelled" => Err(ClientError::Failed(crate::show::failure(run, &status))),
        _ => Ok(()),
    }
}

/// Prints a streamed run's events as they arrive: the answer's text on stdout, tool calls,
/// approvals and logs as lines on stderr; ends with the run's final event.
async fn follow_run(opts: &ClientOpts, mut events: EventStream) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout();
    // The answer printed so far does not end with a newline: end its line before a side
    // line, so that the two do not run into each other on a terminal.
    let mut mid_line = false;
    let mut run_id: Option<String> = None;
    // What the run waits for, while its last news is that it waits.
    let mut waiting: Option<String> = None;
    while let Some(ev) = events.next().await? {
        let data: Value =
            serde_json::from_str(&ev.data).unwrap_or_else(|_| Value::String(ev.data.clone()));
        if let Some(id) = data["run"]["id"].as_str() {
            run_id = Some(id.to_owned());
        }
        if opts.json {
            println!("{}", json!({"event": ev.event, "data": data}));
        }
        let ended = match ev.event.as_str() {
            "run.completed" => Some("succeeded"),
            "run.failed" => Some("failed"),
            "run.cancelled" => Some("cancelled"),
            _ => None,
        };
        if let Some(status) = ended {
            if mid_line {
                writeln!(stdout)?;
            }
            let run = &data["run"];
            if status != "succeeded" {
                return Err(ClientError::Failed(crate::show::failure(run, status)));
            }
            if !opts.json {
                eprintln!("{}", crate::show::run_trailer(run));
            }
            return Ok(());
        }
        match ev.event.as_str() {
            "approval.required" => {
                waiting = Some(
                    crate::show::approval_id(&data)
                        .map_or_else(|| "approval".to_owned(), |id| format!("approval {id}")),
                );
            }
            "log" => {}
            // Anything else means the run went on.
            _ => waiting = None,
        }
        if opts.json {
            continue;
        }
        if ev.event == "message.delta" {
            if let Some(t) = data["text"].as_str() {
                stdout.write_all(t.as_bytes())?;
                stdout.flush()?;
                if !t.is_empty() {
                    mid_line = !t.ends_with('\n');
                }
            }
        } else if let Some(line) = crate::show::event_line(&ev.event, &data) {
            if mid_line {
                writeln!(stdout)?;
                mid_line = false;
            }
            eprintln!("{line}");
        }
    }
    if mid_line {
        writeln!(stdout)?;
    }
    let run = run_id.as_deref().unwrap_or("the run");
    match waiting {
        // A server may end the stream while the run waits for a human.
        Some(which) if !opts.json => {
            println!("Run {run} is waiting for {which}: berth approvals list --status pending");
            Ok(())
        }
        Some(_) => Ok(()),
        None => Err(ClientError::Decode(format!(
            "the event stream of {run} ended before the run did"
        ))),
    }
}

async fn runs(opts: &ClientOpts, cmd: RunsCmd) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    match cmd {
        RunsCmd::List {
            agent,
            status,
            thread,
            limit,
        } => {
            let limit = limit.map(|l| l.to_string());
            let path = query(
                "/v1/runs",
                &[
                    ("agent", agent.as_deref()),
                    ("status", status.as_deref()),
                    ("thread", thread.as_deref()),
                    ("limit", limit.as_deref()),
                ],
            );
            let page = client.call(Method::GET, &path, None).await?;
            output(opts, &page, |v| {
                print_rows(
                    &with_cost(rows(v), |r| &r["usage"]["cost_usd"]),
                    &[
                        "id",
                        "agent",
                        "version",
                        "status",
                        "thread",
                        "cost_usd",
                        "created_at",
                    ],
                );
                if !v["next_cursor"].is_null() {
                    eprintln!("(more runs: raise --limit or narrow the filters)");
                }
            });
        }
        RunsCmd::Show { id } => {
            let run = client
                .call(Method::GET, &format!("/v1/runs/{}", seg(&id)), None)
                .await?;
            output(opts, &run, |r| {
                let u = &r["usage"];
                println!(
                    "{}  {} v{}  {}",
                    text_of(r, "id"),
                    text_of(r, "agent"),
                    text_of(r, "version"),
                    text_of(r, "status")
                );
                println!("thread    {}", text_of(r, "thread"));
                println!(
                    "time      {} → {}",
                    text_of(r, "created_at"),
                    text_of(r, "finished_at")
                );
                println!(
                    "usage     {} LLM call(s), {} tool call(s), {} in / {} out tokens, {}, {} ms compute",
                    u["llm_calls"].as_i64().unwrap_or(0),
                    u["tool_calls"].as_i64().unwrap_or(0),
                    u["input_tokens"].as_i64().unwrap_or(0),
                    u["output_tokens"].as_i64().unwrap_or(0),
                    crate::show::usd(&u["cost_usd"]),
                    u["compute_ms"].as_i64().unwrap_or(0)
                );
                if r["error"].is_object() {
                    println!(
                        "error     {} ({})",
                        text_of(&r["error"], "message"),
                        text_of(&r["error"], "code")
                    );
                }
                if let Some(answer) = r["output"].as_str() {
                    println!("output");
                    for line in answer.lines() {
                        println!("  {line}");
                    }
                }
            });
        }
        RunsCmd::Trace { id } => {
            let steps = client
                .call(Method::GET, &format!("/v1/runs/{}/trace", seg(&id)), None)
                .await?;
            output(opts, &steps, |v| {
                let table: Vec<Value> = rows(v)
                    .iter()
                    .map(|s| {
                        json!({"seq": s["seq"], "type": s["type"], "step": crate::show::step_essence(s)})
                    })
                    .collect();
                print_rows(&table, &["seq", "type", "step"]);
            });
        }
        RunsCmd::Cancel { id } => {
            let run = client
                .call(Method::POST, &format!("/v1/runs/{}/cancel", seg(&id)), None)
                .await?;
            output(opts, &run, |r| {
                println!("Run {}: {}", text_of(r, "id"), text_of(r, "status"))
            });
        }
    }
    Ok(())
}

/// How many runs each poll of `berth logs -f` reads: runs that finish while more than this
/// many newer ones started in between are not printed.
const FOLLOW_PAGE: u32 = 100;

/// `berth logs`: the agent's recent runs, oldest first; with `follow`, then every run as it
/// finishes, until Ctrl-C.
async fn logs(opts: &ClientOpts, name: &str, follow: bool, limit: u32) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    let page_of = |n: u32| {
        let n = n.to_string();
        query("/v1/runs", &[("agent", Some(name)), ("limit", Some(&n))])
    };
    let print = |run: &Value| {
        if opts.json {
            println!("{run}");
        } else {
            println!("{}", crate::show::run_line(run));
        }
    };
    if !follow {
        let page = client.call(Method::GET, &page_of(limit), None).await?;
        output(opts, &page, |v| {
            for run in rows(v).iter().rev() {
                println!("{}", crate::show::run_line(run));
            }
        });
        return Ok(());
    }
    let id_of = |r: &Value| r["id"].as_str().unwrap_or_default().to_owned();
    let page = client
        .call(Method::GET, &page_of(FOLLOW_PAGE.max(limit)), None)
        .await?;
    let recent = rows(&page);
    for run in recent.iter().take(limit as usize).rev() {
        print(run);
    }
    // Runs already printed as finished; one still going is printed again when it ends.
    let mut printed: HashSet<String> = recent
        .iter()
        .filter(|r| crate::show::finished(r))
        .map(id_of)
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the listing above was this poll
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let page = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            page = async {
                tick.tick().await;
                client.call(Method::GET, &page_of(FOLLOW_PAGE), None).await
            } => page?,
        };
        let recent = rows(&page);
        for run in recent.iter().rev() {
            if crate::show::finished(run) && !printed.contains(&id_of(run)) {
                print(run);
            }
        }
        // Runs are listed newest first, so one that left the page never comes back: keeping
        // only the page's ids bounds what is remembered.
        printed = recent
            .iter()
            .filter(|r| crate::show::finished(r))
            .map(id_of)
            .collect();
    }
}

async fn approvals(opts: &ClientOpts, cmd: ApprovalsCmd) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    let (id, decision, reason) = match cmd {
        ApprovalsCmd::List { status } => {
            let all = list_all(
                &client,
                &query("/v1/approvals", &[("status", status.as_deref())]),
            )
            .await?;
            output(opts, &all, |v| {
                print_rows(
                    rows(v),
                    &["id", "run", "agent", "tool", "status", "created_at"],
                )
            });
            return Ok(());
        }
        ApprovalsCmd::Approve { id, reason } => (id, "approve", reason),
        ApprovalsCmd::Deny { id, reason } => (id, "deny", reason),
    };
    let mut body = json!({"decision": decision});
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let answer = client
        .call(
            Method::POST,
            &format!("/v1/approvals/{}", seg(&id)),
            Some(&body),
        )
        .await?;
    output(opts, &answer, |a| {
        let verb = if decision == "approve" {
            "Approved"
        } else {
            "Denied"
        };
        match a["run"].as_str() {
            Some(run) => println!("{verb} {id} (run {run})"),
            None => println!("{verb} {id}"),
        }
    });
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

async fn policy(opts: &ClientOpts, cmd: PolicyCmd) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    match cmd {
        PolicyCmd::Get => {
            let p = client.call(Method::GET, "/v1/policy", None).await?;
            output(opts, &p, |p| {
                // The document alone on stdout, so that `policy get > f; policy set f` works.
                println!(
                    "{}",
                    serde_json::to_string_pretty(&p["policy"]).unwrap_or_default()
                );
                eprintln!(
                    "revision {}, updated {}",
                    text_of(p, "revision"),
                    text_of(p, "updated_at")
                );
            });
        }
        PolicyCmd::Set { file } => {
            let doc = read_document(&file)?;
            let p = client.call(Method::PUT, "/v1/policy", Some(&doc)).await?;
            output(opts, &p, |p| {
                println!("Policy set: revision {}", text_of(p, "revision"))
            });
        }
    }
    Ok(())
}

async fn providers(opts: &ClientOpts, cmd: ProvidersCmd) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    match cmd {
        ProvidersCmd::Set {
            name,
            kind,
            base_url,
            key_secret,
        } => {
            let mut body = json!({"kind": kind, "api_key_secret": key_secret});
            if let Some(u) = base_url {
                body["base_url"] = json!(u);
            }
            let p = client
                .call(
                    Method::PUT,
                    &format!("/v1/providers/{}", seg(&name)),
                    Some(&body),
                )
                .await?;
            output(opts, &p, |p| {
                println!(
                    "Set provider {} ({}, key from secret {}); its models are {}/<model>",
                    text_of(p, "name"),
                    text_of(p, "kind"),
                    text_of(p, "api_key_secret"),
                    text_of(p, "name")
                )
            });
        }
        ProvidersCmd::List => {
            let all = client.call(Method::GET, "/v1/providers", None).await?;
            output(opts, &all, |v| {
                print_rows(
                    rows(v),
                    &["name", "kind", "base_url", "api_key_secret", "updated_at"],
                )
            });
        }
        ProvidersCmd::Delete { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/providers/{}", seg(&name)),
                    None,
                )
                .await?;
            output(opts, &json!({"deleted": name}), |_| {
                println!("Deleted provider {name}")
            });
        }
    }
    Ok(())
}

/// What `mcp add` and `mcp refresh` print: a line about the server, then its tools.
fn print_server_tools(verb: &str, server: &Value) {
    println!(
        "{verb} MCP server {} ({}, protocol {}): {} tool(s)",
        text_of(server, "name"),
        text_of(server, "url"),
        text_of(server, "protocol_version"),
        text_of(server, "tool_count")
    );
    let tools = server["tools"].as_array().map_or(&[][..], Vec::as_slice);
    if !tools.is_empty() {
        print_rows(tools, &["name", "description"]);
    }
    // Tools left out (an unusable schema, too many tools).
    if let Some(note) = server["last_error"].as_str() {
        eprintln!("note: {note}");
    }
}

async fn mcp(opts: &ClientOpts, cmd: McpCmd) -> Result<(), ClientError> {
    // Checked before anything else: a bad --header is a usage error even without a token.
    let headers = match &cmd {
        McpCmd::Add(args) => Some(header_refs(args)?),
        _ => None,
    };
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    match cmd {
        McpCmd::Add(args) => {
            let body = json!({"name": args.name, "url": args.url,
                              "headers": headers.unwrap_or_default()});
            let s = client
                .call(Method::POST, "/v1/mcp-servers", Some(&body))
                .await?;
            output(opts, &s, |s| print_server_tools("Added", s));
        }
        McpCmd::List => {
            let all = client.call(Method::GET, "/v1/mcp-servers", None).await?;
            output(opts, &all, |v| {
                let table: Vec<Value> = rows(v)
                    .iter()
                    .map(|s| {
                        json!({"name": s["name"], "url": s["url"], "status": s["status"],
                               "tools": s["tool_count"], "checked_at": s["checked_at"],
                               "protocol": s["protocol_version"]})
                    })
                    .collect();
                print_rows(
                    &table,
                    &["name", "url", "status", "tools", "checked_at", "protocol"],
                );
                for s in rows(v) {
                    if let Some(e) = s["last_error"].as_str() {
                        eprintln!("{}: {e}", text_of(s, "name"));
                    }
                }
            });
        }
        McpCmd::Refresh { name } => {
            let s = client
                .call(
                    Method::POST,
                    &format!("/v1/mcp-servers/{}/refresh", seg(&name)),
                    None,
                )
                .await?;
            output(opts, &s, |s| print_server_tools("Refreshed", s));
        }
        McpCmd::Remove { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/mcp-servers/{}", seg(&name)),
                    None,
                )
                .await?;
            output(opts, &json!({"deleted": name}), |_| {
                println!("Removed MCP server {name}")
            });
        }
    }
    Ok(())
}

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

async fn invoice(opts: &ClientOpts, month: &str, csv: bool) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    let path = format!("/v1/invoices/{month}");
    if csv {
        print!("{}", client.get_text(&path, "text/csv").await?);
        return Ok(());
    }
    let inv = client.call(Method::GET, &path, None).await?;
    output(opts, &inv, |v| {
        println!(
            "Invoice {} for {} (plan {}){}",
            v["period"].as_str().unwrap_or_default(),
            v["tenant"]["name"].as_str().unwrap_or_default(),
            v["tenant"]["plan"].as_str().unwrap_or_default(),
            if v["final"] == true {
                ""
            } else {
                ", month not over yet"
            }
        );
        let lines: Vec<serde_json::Value> = v["lines"].as_array().cloned().unwrap_or_default();
        print_rows(
            &lines,
            &[
                "meter",
                "provider",
                "model",
                "quantity",
                "unit",
                "input_tokens",
                "output_tokens",
                "amount_usd",
            ],
        );
        for (label, key) in [
            ("subtotal", "subtotal_usd"),
            ("markup", "markup_usd"),
            ("total", "total_usd"),
        ] {
            println!("{label:>9}  ${:.9}", v[key].as_f64().unwrap_or_default());
        }
    });
    Ok(())
}

async fn usage(
    opts: &ClientOpts,
    by: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), ClientError> {
    let client = Client::resolve(opts.url.clone(), opts.token.clone())?;
    let path = query("/v1/usage", &[("group_by", by), ("from", from), ("to", to)]);
    let u = client.call(Method::GET, &path, None).await?;
    output(opts, &u, |v| {
        let mut cols: Vec<&str> = by
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        cols.extend_from_slice(USAGE_SUMS);
        print_rows(&with_cost(rows(v), |r| &r["cost_usd"]), &cols);
    });
    Ok(())
}
