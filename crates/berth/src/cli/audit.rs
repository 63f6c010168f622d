//! `berth audit`: read the tenant's hash-chained audit log and verify it.

use super::ClientOpts;
use super::client::ClientError;
use super::output::text_of;
use clap::Subcommand;
use reqwest::Method;

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    Verify,
}

pub(super) async fn run(opts: &ClientOpts, cmd: AuditCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    match cmd {
        AuditCmd::List { limit } => {
            let path = format!("/v1/audit?limit={limit}");
            let page = client.call(Method::GET, &path, None).await?;
            out.table(&page, &["seq", "at", "actor", "action", "target"]);
        }
        AuditCmd::Verify => {
            let v = client.call(Method::GET, "/v1/audit/verify", None).await?;
            let ok = v["ok"].as_bool() == Some(true);
            out.show(&v, |v, o| {
                o.line(if ok {
                    format!(
                        "ok: {} entries, head {}",
                        text_of(v, "entries"),
                        text_of(v, "head")
                    )
                } else {
                    format!(
                        "BROKEN at seq {}: {}",
                        text_of(v, "seq"),
                        text_of(v, "reason")
                    )
                })
            });
            // A broken chain is a failure a script must see, in either output.
            if !ok {
                return Err(ClientError::Failed(
                    "the audit chain does not verify".into(),
                ));
            }
        }
    }
    Ok(())
}
