//! `berth providers`: the tenant's own LLM providers (bring your own key).

use super::ClientOpts;
use super::client::{ClientError, seg};
use super::output::text_of;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

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

pub(super) async fn run(opts: &ClientOpts, cmd: ProvidersCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
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
            let path = format!("/v1/providers/{}", seg(&name));
            let p = client.call(Method::PUT, &path, Some(&body)).await?;
            out.show(&p, |p, o| {
                o.line(format!(
                    "Set provider {} ({}, key from secret {}); its models are {}/<model>",
                    text_of(p, "name"),
                    text_of(p, "kind"),
                    text_of(p, "api_key_secret"),
                    text_of(p, "name")
                ))
            });
        }
        ProvidersCmd::List => {
            let all = client.call(Method::GET, "/v1/providers", None).await?;
            out.table(
                &all,
                &["name", "kind", "base_url", "api_key_secret", "updated_at"],
            );
        }
        ProvidersCmd::Delete { name } => {
            let path = format!("/v1/providers/{}", seg(&name));
            client.call(Method::DELETE, &path, None).await?;
            out.show(&json!({"deleted": name}), |_, o| {
                o.line(format!("Deleted provider {name}"))
            });
        }
    }
    Ok(())
}
