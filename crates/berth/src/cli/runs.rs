//! Runs from the command line: `berth run` (synchronous, streamed or queued), `berth runs`
//! (list, show, trace, cancel) and `berth logs` (recent runs, and `-f` to follow).

use super::ClientOpts;
use super::client::{ClientError, EventStream, Streamed, query, seg};
use super::output::{Out, rows, text_of, usd, with_cost};
use super::show;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

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

/// How `berth run` starts its run.
pub(super) struct Start {
    pub thread: Option<String>,
    pub version: Option<i64>,
    pub stream: bool,
    pub asynchronous: bool,
}

/// `berth run`: starts the run, then prints its answer (as it streams with `stream`).
pub(super) async fn start(
    opts: &ClientOpts,
    name: &str,
    input: String,
    how: Start,
) -> Result<(), ClientError> {
    let mut body = json!({"input": input});
    if let Some(t) = how.thread {
        body["thread"] = json!(t);
    }
    if let Some(v) = how.version {
        body["version"] = json!(v);
    }
    // Sent only when asked, so that a plain run is the plain synchronous request.
    if how.stream {
        body["stream"] = json!(true);
    }
    if how.asynchronous {
        body["async"] = json!(true);
    }
    let (client, out) = (opts.client()?, opts.out());
    let path = format!("/v1/agents/{}/runs", seg(name));
    if !how.stream {
        let run = client.call(Method::POST, &path, Some(&body)).await?;
        return print_run(out, &run);
    }
    match client.open_events(Method::POST, &path, Some(&body)).await? {
        Streamed::Events(events) => follow_run(out, *events).await,
        // A server that answers a streamed request with the finished run as JSON.
        Streamed::Json(run) => print_run(out, &run),
    }
}

/// Prints a run as `berth run` answers it, and fails if the run did.
fn print_run(out: Out, run: &Value) -> Result<(), ClientError> {
    let id = text_of(run, "id");
    let status = run["status"].as_str().unwrap_or_default().to_owned();
    out.show(run, |run, o| match status.as_str() {
        "succeeded" => {
            if let Some(answer) = run["output"].as_str() {
                o.line(answer);
            }
            o.note(show::run_trailer(run));
        }
        "waiting_approval" => o.line(format!(
            "Run {id} is waiting for approval: berth approvals list --status pending"
        )),
        "queued" | "running" => o.line(format!("Run {id} is {status}: berth runs show {id}")),
        // failed and cancelled: said by the error below.
        _ => {}
    });
    match status.as_str() {
        "failed" | "cancelled" => Err(ClientError::Failed(show::failure(run, &status))),
        _ => Ok(()),
    }
}

/// Prints a streamed run's events as they arrive: the answer's text on stdout, tool calls,
/// approvals and logs as lines on stderr; ends with the run's final event. With `--json`,
/// each event is one line `{"event": …, "data": …}`.
async fn follow_run(out: Out, mut events: EventStream) -> Result<(), ClientError> {
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
        let item = json!({"event": ev.event, "data": data});
        let ended = match ev.event.as_str() {
            "run.completed" => Some("succeeded"),
            "run.failed" => Some("failed"),
            "run.cancelled" => Some("cancelled"),
            _ => None,
        };
        if let Some(status) = ended {
            let run = &data["run"];
            out.item(&item, |_, o| {
                if mid_line {
                    o.raw("\n");
                }
                if status == "succeeded" {
                    o.note(show::run_trailer(run));
                }
            })?;
            if status != "succeeded" {
                return Err(ClientError::Failed(show::failure(run, status)));
            }
            return Ok(());
        }
        match ev.event.as_str() {
            "approval.required" => {
                waiting = Some(
                    show::approval_id(&data)
                        .map_or_else(|| "approval".to_owned(), |id| format!("approval {id}")),
                );
            }
            "log" => {}
            // Anything else means the run went on.
            _ => waiting = None,
        }
        out.item(&item, |_, o| {
            if ev.event == "message.delta" {
                if let Some(t) = data["text"].as_str() {
                    o.raw(t);
                    if !t.is_empty() {
                        mid_line = !t.ends_with('\n');
                    }
                }
            } else if let Some(line) = show::event_line(&ev.event, &data) {
                if mid_line {
                    o.raw("\n");
                    mid_line = false;
                }
                o.note(line);
            }
        })?;
    }
    let run = run_id.as_deref().unwrap_or("the run");
    out.human(|o| {
        if mid_line {
            o.raw("\n");
        }
        // A server may end the stream while the run waits for a human.
        if let Some(which) = &waiting {
            o.line(format!(
                "Run {run} is waiting for {which}: berth approvals list --status pending"
            ));
        }
    });
    match waiting {
        Some(_) => Ok(()),
        None => Err(ClientError::Decode(format!(
            "the event stream of {run} ended before the run did"
        ))),
    }
}

pub(super) async fn run(opts: &ClientOpts, cmd: RunsCmd) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
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
            out.show(&page, |v, o| {
                o.table(
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
                    o.note("(more runs: raise --limit or narrow the filters)");
                }
            });
        }
        RunsCmd::Show { id } => {
            let path = format!("/v1/runs/{}", seg(&id));
            let run = client.call(Method::GET, &path, None).await?;
            out.show(&run, |r, o| {
                let u = &r["usage"];
                let n = |k: &str| u[k].as_i64().unwrap_or(0);
                o.line(format!(
                    "{}  {} v{}  {}",
                    text_of(r, "id"),
                    text_of(r, "agent"),
                    text_of(r, "version"),
                    text_of(r, "status")
                ));
                o.line(format!("thread    {}", text_of(r, "thread")));
                o.line(format!(
                    "time      {} → {}",
                    text_of(r, "created_at"),
                    text_of(r, "finished_at")
                ));
                o.line(format!(
                    "usage     {} LLM call(s), {} tool call(s), {} in / {} out tokens, {}, {} ms compute",
                    n("llm_calls"),
                    n("tool_calls"),
                    n("input_tokens"),
                    n("output_tokens"),
                    usd(&u["cost_usd"]),
                    n("compute_ms")
                ));
                if r["error"].is_object() {
                    o.line(format!(
                        "error     {} ({})",
                        text_of(&r["error"], "message"),
                        text_of(&r["error"], "code")
                    ));
                }
                if let Some(answer) = r["output"].as_str() {
                    o.line("output");
                    for line in answer.lines() {
                        o.line(format!("  {line}"));
                    }
                }
            });
        }
        RunsCmd::Trace { id } => {
            let path = format!("/v1/runs/{}/trace", seg(&id));
            let steps = client.call(Method::GET, &path, None).await?;
            out.show(&steps, |v, o| {
                let table: Vec<Value> = rows(v)
                    .iter()
                    .map(|s| json!({"seq": s["seq"], "type": s["type"], "step": show::step_essence(s)}))
                    .collect();
                o.table(&table, &["seq", "type", "step"]);
            });
        }
        RunsCmd::Cancel { id } => {
            let path = format!("/v1/runs/{}/cancel", seg(&id));
            let run = client.call(Method::POST, &path, None).await?;
            out.show(&run, |r, o| {
                o.line(format!(
                    "Run {}: {}",
                    text_of(r, "id"),
                    text_of(r, "status")
                ))
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
pub(super) async fn logs(
    opts: &ClientOpts,
    name: &str,
    follow: bool,
    limit: u32,
) -> Result<(), ClientError> {
    let (client, out) = (opts.client()?, opts.out());
    let page_of = |n: u32| {
        let n = n.to_string();
        query("/v1/runs", &[("agent", Some(name)), ("limit", Some(&n))])
    };
    if !follow {
        let page = client.call(Method::GET, &page_of(limit), None).await?;
        out.show(&page, |v, o| {
            for run in rows(v).iter().rev() {
                o.line(show::run_line(run));
            }
        });
        return Ok(());
    }
    let print = |run: &Value| out.item(run, |run, o| o.line(show::run_line(run)));
    let id_of = |r: &Value| r["id"].as_str().unwrap_or_default().to_owned();
    let page = client
        .call(Method::GET, &page_of(FOLLOW_PAGE.max(limit)), None)
        .await?;
    let recent = rows(&page);
    for run in recent.iter().take(limit as usize).rev() {
        print(run)?;
    }
    // Runs already printed as finished; one still going is printed again when it ends.
    let mut printed: HashSet<String> = recent
        .iter()
        .filter(|r| show::finished(r))
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
            if show::finished(run) && !printed.contains(&id_of(run)) {
                print(run)?;
            }
        }
        // Runs are listed newest first, so one that left the page never comes back: keeping
        // only the page's ids bounds what is remembered.
        printed = recent
            .iter()
            .filter(|r| show::finished(r))
            .map(id_of)
            .collect();
    }
}
