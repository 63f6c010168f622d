//! `berth approvals`: the tool calls waiting for a human, and the decision on one.

use super::ClientOpts;
use super::client::{ClientError, query, seg};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

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

pub(super) async fn run(opts: &ClientOpts, cmd: ApprovalsCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    let (id, decision, reason) = match cmd {
        ApprovalsCmd::List { status } => {
            let path = query("/v1/approvals", &[("status", status.as_deref())]);
            let all = client.list_all(&path).await?;
            out.table(
                &all,
                &["id", "run", "agent", "tool", "status", "created_at"],
            );
            return Ok(());
        }
        ApprovalsCmd::Approve { id, reason } => (id, "approve", reason),
        ApprovalsCmd::Deny { id, reason } => (id, "deny", reason),
    };
    let mut body = json!({"decision": decision});
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let path = format!("/v1/approvals/{}", seg(&id));
    let answer = client.call(Method::POST, &path, Some(&body)).await?;
    out.show(&answer, |a, o| {
        let verb = if decision == "approve" {
            "Approved"
        } else {
            "Denied"
        };
        o.line(match a["run"].as_str() {
            Some(run) => format!("{verb} {id} (run {run})"),
            None => format!("{verb} {id}"),
        })
    });
    Ok(())
}
