//! Threads, through the run that uses them: a finished run's steps and messages land in
//! its thread, and neither is visible to another tenant.

use super::new_tenant;
use crate::Store;
use crate::model::*;
use berth_core::clock::now_ms;

/// A run finishes into its thread (steps, messages); runs and threads are per tenant.
pub async fn runs(store: &dyn Store) {
    let a = new_tenant(store, "runs-a").await;
    let b = new_tenant(store, "runs-b").await;
    let thread = ThreadRecord {
        id: "thr_1".into(),
        agent: "bot".into(),
        version: 1,
        created_at_ms: now_ms(),
        messages: vec![],
    };
    store.create_thread(&a, &thread).await.unwrap();
    let mut run = RunRecord {
        id: "run_1".into(),
        agent: "bot".into(),
        version: 1,
        thread_id: Some("thr_1".into()),
        key_id: None,
        status: "running".into(),
        output: None,
        error: None,
        usage: "{}".into(),
        created_at_ms: now_ms(),
        finished_at_ms: None,
        request: None,
        checkpoint: None,
        lease_until_ms: Some(now_ms() + 60_000),
        started_by: None,
    };
    store.insert_run(&a, &run).await.unwrap();
    run.status = "succeeded".into();
    run.output = Some("hi".into());
    let steps = [RunStep {
        seq: 1,
        kind: "llm_call".into(),
        at_ms: now_ms(),
        data: "{}".into(),
    }];
    store
        .finish_run(
            &a,
            &run,
            &steps,
            &[
                "{\"role\":\"user\"}".to_owned(),
                "{\"role\":\"assistant\"}".to_owned(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_run(&a, "run_1").await.unwrap().unwrap().status,
        "succeeded"
    );
    assert_eq!(store.run_steps(&a, "run_1").await.unwrap().len(), 1);
    assert_eq!(
        store
            .get_thread(&a, "thr_1")
            .await
            .unwrap()
            .unwrap()
            .messages
            .len(),
        2
    );
    let page = store
        .list_runs(
            &a,
            &RunFilter {
                agent: Some("bot".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // Tenant B sees none of it.
    assert!(store.get_run(&b, "run_1").await.unwrap().is_none());
    assert!(store.get_thread(&b, "thr_1").await.unwrap().is_none());
    assert!(store.run_steps(&b, "run_1").await.unwrap().is_empty());
    assert!(
        store
            .list_runs(&b, &RunFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(!store.delete_thread(&b, "thr_1").await.unwrap());
    assert!(store.delete_thread(&a, "thr_1").await.unwrap());
}
