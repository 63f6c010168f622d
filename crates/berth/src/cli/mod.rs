//! The command line: `berth serve` and the client commands of API.md. This module holds
//! the grammar (every command and flag) and sends each client command to the module of its
//! group; they share one HTTP client (`client.rs`) and one output layer (`output.rs`).

mod agents;
mod approvals;
mod audit;
pub mod client;
mod keys;
mod login;
mod mcp;
pub mod output;
mod policy;
mod providers;
mod runs;
mod secrets;
pub mod show;
mod tenants;
mod usage;

pub use agents::AgentsCmd;
pub use approvals::ApprovalsCmd;
pub use audit::AuditCmd;
pub use keys::KeysCmd;
pub use mcp::{HeaderArg, McpAddArgs, McpCmd};
pub use policy::PolicyCmd;
pub use providers::ProvidersCmd;
pub use runs::RunsCmd;
pub use secrets::SecretsCmd;
pub use tenants::TenantsCmd;

use clap::{Args, Parser, Subcommand};
use client::{Client, ClientError};
use output::Out;
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

impl ClientOpts {
    /// The client for these flags (or the saved login); fails without a token.
    fn client(&self) -> Result<Client, ClientError> {
        Client::resolve(self.url.clone(), self.token.clone())
    }

    fn out(&self) -> Out {
        Out::new(self.json)
    }
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

/// Runs a client command.
pub async fn run_client(command: Command) -> Result<(), ClientError> {
    match command {
        Command::Serve(_) => Err(ClientError::Usage("serve is not a client command".into())),
        Command::Login { url, token } => login::login(url, token).await,
        Command::Me { opts } => login::me(&opts).await,
        Command::Tenants { cmd, opts } => tenants::run(&opts, cmd).await,
        Command::Keys { cmd, opts } => keys::run(&opts, cmd).await,
        Command::Secrets { cmd, opts } => secrets::run(&opts, cmd).await,
        Command::Deploy {
            dir,
            no_promote,
            opts,
        } => agents::deploy(&opts, &dir, no_promote).await,
        Command::Agents { cmd, opts } => agents::run(&opts, cmd).await,
        Command::Versions { name, opts } => agents::versions(&opts, &name).await,
        Command::Traffic { name, split, opts } => agents::traffic(&opts, &name, &split).await,
        Command::Rollback { name, to, opts } => agents::rollback(&opts, &name, to).await,
        Command::Validate { dir, json } => agents::validate(&dir, json),
        Command::Run {
            name,
            input,
            thread,
            version,
            stream,
            asynchronous,
            opts,
        } => {
            let how = runs::Start {
                thread,
                version,
                stream,
                asynchronous,
            };
            runs::start(&opts, &name, input, how).await
        }
        Command::Runs { cmd, opts } => runs::run(&opts, cmd).await,
        Command::Logs {
            name,
            follow,
            limit,
            opts,
        } => runs::logs(&opts, &name, follow, limit).await,
        Command::Approvals { cmd, opts } => approvals::run(&opts, cmd).await,
        Command::Policy { cmd, opts } => policy::run(&opts, cmd).await,
        Command::Providers { cmd, opts } => providers::run(&opts, cmd).await,
        Command::Mcp { cmd, opts } => mcp::run(&opts, cmd).await,
        Command::Tools { opts } => mcp::tools(&opts).await,
        Command::Invoice { month, csv, opts } => usage::invoice(&opts, &month, csv).await,
        Command::Usage { by, from, to, opts } => {
            usage::usage(&opts, by.as_deref(), from.as_deref(), to.as_deref()).await
        }
        Command::Audit { cmd, opts } => audit::run(&opts, cmd).await,
    }
}
