//! `berth tenants`: the operator's commands over tenants.

use super::ClientOpts;
use super::client::{ClientError, seg};
use super::output::text_of;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

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

/// The columns of a tenant, in lists and alone.
const COLUMNS: &[&str] = &["id", "name", "plan", "suspended", "created_at"];

pub(super) async fn run(opts: &ClientOpts, cmd: TenantsCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    match cmd {
        TenantsCmd::Create { name, plan } => {
            let body = json!({"name": name, "plan": plan});
            let t = client
                .call(Method::POST, "/v1/tenants", Some(&body))
                .await?;
            out.show(&t, |t, o| {
                o.line(format!(
                    "Created tenant {} ({}, plan {})",
                    text_of(t, "name"),
                    text_of(t, "id"),
                    text_of(t, "plan")
                ))
            });
        }
        TenantsCmd::List => out.table(&client.list_all("/v1/tenants").await?, COLUMNS),
        TenantsCmd::Show { id } => {
            let path = format!("/v1/tenants/{}", seg(&id));
            let t = client.call(Method::GET, &path, None).await?;
            out.show(&t, |t, o| o.table(std::slice::from_ref(t), COLUMNS));
        }
        TenantsCmd::Delete { id } => {
            let path = format!("/v1/tenants/{}", seg(&id));
            client.call(Method::DELETE, &path, None).await?;
            out.show(&json!({"deleted": id}), |_, o| {
                o.line(format!("Deleted tenant {id} and all of its data"))
            });
        }
    }
    Ok(())
}
