//! `berth mcp` (the tenant's MCP servers: add, list, refresh, remove) and `berth tools`
//! (every tool the token may use). `mcp add` parses `--header`/`--prefix` pairs itself:
//! headers name secrets, never literal values.

use super::ClientOpts;
use super::client::{ClientError, seg};
use super::output::{Text, rows, text_of};
use clap::{Args, FromArgMatches, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

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

/// What `mcp add` and `mcp refresh` print: a line about the server, then its tools.
fn server_tools(verb: &str, server: &Value, o: &mut Text) {
    o.line(format!(
        "{verb} MCP server {} ({}, protocol {}): {} tool(s)",
        text_of(server, "name"),
        text_of(server, "url"),
        text_of(server, "protocol_version"),
        text_of(server, "tool_count")
    ));
    let tools = server["tools"].as_array().map_or(&[][..], Vec::as_slice);
    if !tools.is_empty() {
        o.table(tools, &["name", "description"]);
    }
    // Tools left out (an unusable schema, too many tools).
    if let Some(note) = server["last_error"].as_str() {
        o.note(format!("note: {note}"));
    }
}

pub(super) async fn run(opts: &ClientOpts, cmd: McpCmd) -> Result<(), ClientError> {
    // Checked before anything else: a bad --header is a usage error even without a token.
    let headers = match &cmd {
        McpCmd::Add(args) => Some(header_refs(args)?),
        _ => None,
    };
    let (client, out) = (opts.client()?, opts.out());
    match cmd {
        McpCmd::Add(args) => {
            let body = json!({"name": args.name, "url": args.url,
                              "headers": headers.unwrap_or_default()});
            let s = client
                .call(Method::POST, "/v1/mcp-servers", Some(&body))
                .await?;
            out.show(&s, |s, o| server_tools("Added", s, o));
        }
        McpCmd::List => {
            let all = client.call(Method::GET, "/v1/mcp-servers", None).await?;
            out.show(&all, |v, o| {
                let table: Vec<Value> = rows(v)
                    .iter()
                    .map(|s| {
                        json!({"name": s["name"], "url": s["url"], "status": s["status"],
                               "tools": s["tool_count"], "checked_at": s["checked_at"],
                               "protocol": s["protocol_version"]})
                    })
                    .collect();
                o.table(
                    &table,
                    &["name", "url", "status", "tools", "checked_at", "protocol"],
                );
                for s in rows(v) {
                    if let Some(e) = s["last_error"].as_str() {
                        o.note(format!("{}: {e}", text_of(s, "name")));
                    }
                }
            });
        }
        McpCmd::Refresh { name } => {
            let path = format!("/v1/mcp-servers/{}/refresh", seg(&name));
            let s = client.call(Method::POST, &path, None).await?;
            out.show(&s, |s, o| server_tools("Refreshed", s, o));
        }
        McpCmd::Remove { name } => {
            let path = format!("/v1/mcp-servers/{}", seg(&name));
            client.call(Method::DELETE, &path, None).await?;
            out.show(&json!({"deleted": name}), |_, o| {
                o.line(format!("Removed MCP server {name}"))
            });
        }
    }
    Ok(())
}

/// `berth tools`: built-in tools and the tenant's MCP servers', as the policy allows them
/// to this token.
pub(super) async fn tools(opts: &ClientOpts) -> Result<(), ClientError> {
    let all = opts.client()?.call(Method::GET, "/v1/tools", None).await?;
    opts.out().table(&all, &["name", "server", "description"]);
    Ok(())
}
