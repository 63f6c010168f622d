//! Runs and the queue: claims, leases, heartbeats, finishing, cancelling.

use super::new_tenant;
use crate::Store;
use crate::model::*;
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use serde_json::json;

/// A queued run of agent `bot`, created now.
pub(super) fn queued_run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        agent: "bot".into(),
        version: 1,
        thread_id: None,
        key_id: Some("key_1".into()),
        status: "queued".into(),
        output: None,
        error: None,
        usage: "{}".into(),
        created_at_ms: now_ms(),
        finished_at_ms: None,
        request: Some("{\"input\":[]}".into()),
        checkpoint: None,
        lease_until_ms: None,
        started_by: None,
    }
}

/// Queued runs are claimed once, leases expire into `failed`, cancels win over finishes.
pub async fn run_queue(store: &dyn Store) {
    let a = new_tenant(store, "queue-a").await;
    let b = new_tenant(store, "queue-b").await;
    store.insert_run(&a, &queued_run("run_q1")).await.unwrap();
    store.insert_run(&a, &queued_run("run_q2")).await.unwrap();
    let queued = store.queued_runs(&a, 10).await.unwrap();
    assert_eq!(
        queued.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["run_q1", "run_q2"]
    );
    assert_eq!(queued[0].request.as_deref(), Some("{\"input\":[]}"));
    assert!(store.queued_runs(&b, 10).await.unwrap().is_empty());
    // Another tenant cannot claim it; the first claim wins, the second gets nothing.
    assert!(
        store
            .claim_run(&b, "run_q1", now_ms() + 1000)
            .await
            .unwrap()
            .is_none()
    );
    let claimed = store
        .claim_run(&a, "run_q1", now_ms() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.status, "running");
    assert!(
        store
            .claim_run(&a, "run_q1", now_ms() + 1000)
            .await
            .unwrap()
            .is_none()
    );
    // A lease in the past: the sweeper fails the run as interrupted; a live lease is kept.
    let q2 = store
        .claim_run(&a, "run_q2", now_ms() - 1)
        .await
        .unwrap()
        .unwrap();
    // The heartbeat stores the steps taken so far with the lease, once each however often
    // it is retried (and the run's end writes them again, below, keeping one copy).
    let first_step = [RunStep {
        seq: 1,
        kind: "llm_call".into(),
        at_ms: now_ms(),
        data: "{}".into(),
    }];
    for _ in 0..2 {
        store
            .renew_lease(
                &a,
                "run_q1",
                now_ms() + 60_000,
                "{\"llm_calls\":1}",
                &first_step,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.run_steps(&a, "run_q1").await.unwrap().len(), 1);
    let err = "{\"code\":\"interrupted\"}";
    assert!(
        store
            .fail_expired_leases(&b, now_ms(), err)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.fail_expired_leases(&a, now_ms(), err).await.unwrap(),
        vec![q2.id]
    );
    let failed = store.get_run(&a, "run_q2").await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error.as_deref()),
        ("failed", Some(err))
    );
    let live = store.get_run(&a, "run_q1").await.unwrap().unwrap();
    assert_eq!(
        (live.status.as_str(), live.usage.as_str()),
        ("running", "{\"llm_calls\":1}")
    );
    // Cancel: B cannot; A can once; a finish afterwards keeps `cancelled`.
    let audit_entry = NewEntry::new("key_1", "run.cancel", "run_q1", json!({}));
    assert!(
        store
            .cancel_run(&b, "run_q1", &audit_entry)
            .await
            .unwrap()
            .is_none()
    );
    let (cancelled, changed) = store
        .cancel_run(&a, "run_q1", &audit_entry)
        .await
        .unwrap()
        .unwrap();
    assert!(changed);
    assert_eq!(cancelled.status, "cancelled");
    assert!(cancelled.finished_at_ms.is_some());
    let (_, again) = store
        .cancel_run(&a, "run_q1", &audit_entry)
        .await
        .unwrap()
        .unwrap();
    assert!(!again, "a second cancel changes nothing");
    let mut finished = live.clone();
    finished.status = "succeeded".into();
    finished.output = Some("late".into());
    finished.finished_at_ms = Some(now_ms());
    let steps = [RunStep {
        seq: 1,
        kind: "llm_call".into(),
        at_ms: now_ms(),
        data: "{}".into(),
    }];
    assert_eq!(
        store.finish_run(&a, &finished, &steps, &[]).await.unwrap(),
        "cancelled"
    );
    assert_eq!(
        store.get_run(&a, "run_q1").await.unwrap().unwrap().status,
        "cancelled"
    );
    assert_eq!(
        store.run_steps(&a, "run_q1").await.unwrap().len(),
        1,
        "its steps are kept, once"
    );
    // A finished run cannot be cancelled.
    assert!(
        !store
            .cancel_run(&a, "run_q2", &audit_entry)
            .await
            .unwrap()
            .unwrap()
            .1
    );
}
