//! `berth secrets`: set (the value from standard input), list and delete; values are
//! write-only.

use super::ClientOpts;
use super::client::{ClientError, seg};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use std::io::Read;

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

pub(super) async fn run(opts: &ClientOpts, cmd: SecretsCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    match cmd {
        SecretsCmd::Set { name } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            // `echo` ends the value with a line end that is not part of the secret.
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            let path = format!("/v1/secrets/{}", seg(&name));
            client
                .call(Method::PUT, &path, Some(&json!({"value": value})))
                .await?;
            out.show(&json!({"name": name}), |_, o| {
                o.line(format!("Set secret {name}"))
            });
        }
        SecretsCmd::List => {
            let all = client.list_all("/v1/secrets").await?;
            out.table(&all, &["name", "created_at", "updated_at"]);
        }
        SecretsCmd::Delete { name } => {
            let path = format!("/v1/secrets/{}", seg(&name));
            client.call(Method::DELETE, &path, None).await?;
            out.show(&json!({"deleted": name}), |_, o| {
                o.line(format!("Deleted secret {name}"))
            });
        }
    }
    Ok(())
}
