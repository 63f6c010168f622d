//! The command line: `berth serve` and the client commands of API.md.

use crate::client::{Client, ClientError, SavedLogin, save_login};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

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

fn text_of(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
                        return Err(ClientError::Usage("the audit chain does not verify".into()));
                    }
                }
            }
            Ok(())
        }
    }
}
