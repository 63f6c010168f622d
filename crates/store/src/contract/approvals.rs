//! Approvals: a paused run's, and those of calls through `/mcp`.

use super::runs::queued_run;
use super::{audit, new_tenant};
use crate::Store;
use crate::model::*;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use serde_json::json;

/// A pending approval of `run` for tool `t`.
fn approval(id: &str, run: &str, expires_at_ms: i64) -> ApprovalRecord {
    ApprovalRecord {
        id: id.into(),
        run_id: Some(run.into()),
        agent: "bot".into(),
        tool: "crm__refund".into(),
        call_id: format!("call_{id}"),
        arguments: "{}".into(),
        key_id: Some("key_1".into()),
        status: "pending".into(),
        reason: None,
        decided_by: None,
        created_at_ms: now_ms(),
        expires_at_ms,
        decided_at_ms: None,
        started_by: None,
    }
}

/// A paused run waits for all its approvals, then is queued again; expiry and cancel.
pub async fn approvals(store: &dyn Store) {
    let a = new_tenant(store, "approvals-a").await;
    let b = new_tenant(store, "approvals-b").await;
    store.insert_run(&a, &queued_run("run_p")).await.unwrap();
    let mut run = store
        .claim_run(&a, "run_p", now_ms() + 60_000)
        .await
        .unwrap()
        .unwrap();
    run.checkpoint = Some("{\"step\":1}".into());
    run.usage = "{\"llm_calls\":1}".into();
    let steps = [RunStep {
        seq: 1,
        kind: "approval".into(),
        at_ms: now_ms(),
        data: "{}".into(),
    }];
    let two = [
        approval("apr_1", "run_p", now_ms() + 60_000),
        approval("apr_2", "run_p", now_ms() - 1),
    ];
    assert!(store.pause_run(&a, &run, &steps, &two).await.unwrap());
    let paused = store.get_run(&a, "run_p").await.unwrap().unwrap();
    assert_eq!(paused.status, "waiting_approval");
    assert_eq!(paused.checkpoint.as_deref(), Some("{\"step\":1}"));
    // Pausing again is refused: the run is not running any more.
    assert!(!store.pause_run(&a, &run, &[], &[]).await.unwrap());
    let pending = ApprovalFilter {
        status: Some("pending".into()),
        ..Default::default()
    };
    let listed = store
        .list_approvals(&a, &pending, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    assert!(
        store
            .list_approvals(&b, &pending, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(store.get_approval(&b, "apr_1").await.unwrap().is_none());
    let expired = store.expired_approvals(&a, now_ms()).await.unwrap();
    assert_eq!(
        expired.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        ["apr_2"]
    );
    let entry = NewEntry::new("key_1", "approval.approve", "apr_1", json!({}));
    assert!(
        store
            .decide_approval(&b, "apr_1", "approved", None, "key_1", &entry)
            .await
            .unwrap()
            .is_none()
    );
    let decided = store
        .decide_approval(&a, "apr_1", "approved", Some("fine"), "key_1", &entry)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (decided.status.as_str(), decided.reason.as_deref()),
        ("approved", Some("fine"))
    );
    assert!(
        store
            .decide_approval(&a, "apr_1", "denied", None, "key_1", &entry)
            .await
            .unwrap()
            .is_none(),
        "decided once"
    );
    assert_eq!(
        store.get_run(&a, "run_p").await.unwrap().unwrap().status,
        "waiting_approval",
        "one approval still pending"
    );
    store
        .decide_approval(&a, "apr_2", "expired", None, "system", &entry)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.get_run(&a, "run_p").await.unwrap().unwrap().status,
        "queued",
        "resumable"
    );
    // Cancelling a waiting run cancels its pending approvals.
    store.insert_run(&a, &queued_run("run_c")).await.unwrap();
    let run_c = store
        .claim_run(&a, "run_c", now_ms() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .pause_run(
                &a,
                &run_c,
                &[],
                &[approval("apr_3", "run_c", now_ms() + 60_000)]
            )
            .await
            .unwrap()
    );
    let cancel = NewEntry::new("key_1", "run.cancel", "run_c", json!({}));
    store
        .cancel_run(&a, "run_c", &cancel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .get_approval(&a, "apr_3")
            .await
            .unwrap()
            .unwrap()
            .status,
        "cancelled"
    );
}

/// An approval of an `/mcp` call: no run, decided like any other, used once, by its key,
/// for exactly its tool and arguments.
pub async fn call_approvals(store: &dyn Store) {
    let a = new_tenant(store, "call-approvals-a").await;
    let b = new_tenant(store, "call-approvals-b").await;
    let mut call = approval("apr_mcp1", "unused", now_ms() + 60_000);
    call.run_id = None;
    call.arguments = r#"{"amount":10}"#.into();
    store
        .create_call_approval(&a, &call, &audit("approval.request"))
        .await
        .unwrap();
    let args = r#"{"amount":10}"#;
    let try_use = |scope, key, tool, args| {
        store.use_call_approval(scope, key, "key:key_1", tool, args, now_ms())
    };
    // Pending: not usable yet.
    assert!(
        try_use(&a, Some("key_1"), "crm__refund", args)
            .await
            .unwrap()
            .is_none()
    );
    let decided = store
        .decide_approval(
            &a,
            "apr_mcp1",
            "approved",
            None,
            "admin",
            &audit("approval.approve"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decided.run_id, None);
    assert!(
        try_use(&b, Some("key_1"), "crm__refund", args)
            .await
            .unwrap()
            .is_none(),
        "other tenant"
    );
    assert!(
        try_use(&a, Some("key_2"), "crm__refund", args)
            .await
            .unwrap()
            .is_none(),
        "other key"
    );
    assert!(
        try_use(&a, Some("key_1"), "crm__delete", args)
            .await
            .unwrap()
            .is_none(),
        "other tool"
    );
    assert!(
        try_use(&a, Some("key_1"), "crm__refund", r#"{"amount":99}"#)
            .await
            .unwrap()
            .is_none(),
        "other arguments"
    );
    let used = try_use(&a, Some("key_1"), "crm__refund", args)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (used.id.as_str(), used.status.as_str()),
        ("apr_mcp1", "used")
    );
    assert!(
        try_use(&a, Some("key_1"), "crm__refund", args)
            .await
            .unwrap()
            .is_none(),
        "used once"
    );

    // An approved call approval past its expiry is not usable.
    let mut late = approval("apr_mcp2", "unused", now_ms() - 1);
    late.run_id = None;
    store
        .create_call_approval(&a, &late, &audit("approval.request"))
        .await
        .unwrap();
    store
        .decide_approval(
            &a,
            "apr_mcp2",
            "approved",
            None,
            "admin",
            &audit("approval.approve"),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        try_use(&a, Some("key_1"), "crm__refund", "{}")
            .await
            .unwrap()
            .is_none()
    );
}
