//! `berth keys`: create, list and revoke API keys (in another tenant with the operator token).

use super::ClientOpts;
use super::client::{ClientError, seg};
use super::output::text_of;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

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

pub(super) async fn run(opts: &ClientOpts, cmd: KeysCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
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
            let body =
                json!({"name": name, "role": role, "agent": agent, "expires_at": expires_at});
            let k = client.call(Method::POST, &path, Some(&body)).await?;
            out.show(&k, |k, o| {
                o.line(format!(
                    "Created key {} ({}) with role {}",
                    text_of(k, "name"),
                    text_of(k, "id"),
                    text_of(k, "role")
                ));
                // The key alone on its line of stdout, for `$(berth keys create …)`.
                o.line(text_of(k, "key"));
                o.note("This is the only time the key is shown; store it now.");
            });
        }
        KeysCmd::List => {
            let all = client.list_all("/v1/keys").await?;
            let cols = [
                "id",
                "name",
                "role",
                "agent",
                "prefix",
                "expires_at",
                "revoked_at",
            ];
            out.table(&all, &cols);
        }
        KeysCmd::Revoke { id } => {
            let path = format!("/v1/keys/{}", seg(&id));
            let k = client.call(Method::DELETE, &path, None).await?;
            out.show(&k, |k, o| {
                o.line(format!(
                    "Revoked key {} ({})",
                    text_of(k, "name"),
                    text_of(k, "id")
                ))
            });
        }
    }
    Ok(())
}
