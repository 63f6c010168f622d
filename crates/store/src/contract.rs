//! The storage contract: one suite every backend must pass, plus PostgreSQL test databases.
//!
//! Compiled only with the `contract` feature, which tests enable; it panics on failure
//! like any test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::model::*;
use crate::{AuditHead, Store, StoreError};
use berth_audit::NewEntry;
use berth_core::clock::now_ms;
use berth_core::{Id, IdKind, Role, TenantId, TenantScope};
use serde_json::json;
use std::sync::Arc;

fn audit(action: &str) -> NewEntry {
    NewEntry::new("operator", action, "test", json!({}))
}

pub async fn new_tenant(store: &dyn Store, name: &str) -> TenantScope {
    let tenant = Tenant {
        id: TenantId::new(),
        name: name.to_owned(),
        plan: "free".to_owned(),
        suspended: false,
        created_at_ms: now_ms(),
    };
    store
        .create_tenant(&tenant, &audit("tenant.create"))
        .await
        .unwrap();
    TenantScope::for_operator(tenant.id)
}

pub fn new_key(hash: &str, role: Role) -> NewApiKey {
    NewApiKey {
        id: Id::new(IdKind::Key).into_string(),
        name: "k".to_owned(),
        role,
        agent: None,
        prefix: "bk_1234".to_owned(),
        hash: hash.to_owned(),
        expires_at_ms: None,
        created_at_ms: now_ms(),
    }
}

fn sealed(name: &str, byte: u8) -> SealedSecret {
    SealedSecret {
        name: name.to_owned(),
        nonce: vec![byte; 24],
        ciphertext: vec![byte; 40],
        binding: None,
        writer_role: Some("developer".to_owned()),
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
    }
}

/// Runs every contract check against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    tenants(store.as_ref()).await;
    keys(store.as_ref()).await;
    secrets(store.as_ref()).await;
    audit_chain(store.as_ref()).await;
    concurrent_audit_appends(store.clone()).await;
    delete_tenant_removes_everything(store.as_ref()).await;
    policies(store.as_ref()).await;
    providers(store.as_ref()).await;
    usage(store.as_ref()).await;
    agents(store.as_ref()).await;
    runs(store.as_ref()).await;
    run_queue(store.as_ref()).await;
    approvals(store.as_ref()).await;
    budgets(store.as_ref()).await;
    kv(store.as_ref()).await;
    mcp_servers(store.as_ref()).await;
    call_approvals(store.as_ref()).await;
    concurrent_reservations_never_overspend(store.clone()).await;
}

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

fn queued_run(id: &str) -> RunRecord {
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

/// Component key-value data is per tenant and agent.
pub async fn kv(store: &dyn Store) {
    let a = new_tenant(store, "kv-a").await;
    let b = new_tenant(store, "kv-b").await;
    store.kv_set(&a, "bot", "k", b"one").await.unwrap();
    store.kv_set(&a, "bot", "k", b"two").await.unwrap();
    assert_eq!(
        store.kv_get(&a, "bot", "k").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert!(
        store.kv_get(&a, "other", "k").await.unwrap().is_none(),
        "another agent"
    );
    assert!(
        store.kv_get(&b, "bot", "k").await.unwrap().is_none(),
        "another tenant"
    );
    store.kv_delete(&b, "bot", "k").await.unwrap();
    assert!(
        store.kv_get(&a, "bot", "k").await.unwrap().is_some(),
        "B deletes nothing of A's"
    );
    store.kv_delete(&a, "bot", "k").await.unwrap();
    assert!(store.kv_get(&a, "bot", "k").await.unwrap().is_none());
    assert!(store.version_bundle(&a, "bot", 1).await.unwrap().is_none());
    let before = store.stored_bytes(&a).await.unwrap();
    store.kv_set(&a, "bot", "big", &[7u8; 1000]).await.unwrap();
    assert_eq!(store.stored_bytes(&a).await.unwrap(), before + 1000);
    assert_eq!(store.stored_bytes(&b).await.unwrap(), 0, "B stores nothing");
}

fn hard(budget: &str, limit: i64) -> BudgetLimit {
    BudgetLimit {
        budget: budget.into(),
        limit_nano: Some(limit),
    }
}

/// Reserve, settle, headroom capping, soft budgets, expiry, and tenant separation.
pub async fn budgets(store: &dyn Store) {
    let a = new_tenant(store, "budget-a").await;
    let b = new_tenant(store, "budget-b").await;
    let month = [
        hard("tenant|2026-12", 100),
        BudgetLimit {
            budget: "agent:x|2026-12".into(),
            limit_nano: None,
        },
    ];
    let far = now_ms() + 60_000;
    assert_eq!(
        store
            .reserve_budget(&a, "h1", &month, 30, 10, far)
            .await
            .unwrap(),
        Some(30)
    );
    // Capped to the headroom: 70 left, 100 wanted.
    assert_eq!(
        store
            .reserve_budget(&a, "h2", &month, 100, 10, far)
            .await
            .unwrap(),
        Some(70)
    );
    // Nothing left: refused, nothing held.
    assert_eq!(
        store
            .reserve_budget(&a, "h3", &month, 5, 1, far)
            .await
            .unwrap(),
        None
    );
    let states = store
        .budget_states(&a, &["tenant|2026-12".into(), "agent:x|2026-12".into()])
        .await
        .unwrap();
    assert_eq!(
        states[0],
        BudgetState {
            spent_nano: 0,
            reserved_nano: 100
        }
    );
    assert_eq!(states[1].reserved_nano, 100, "soft budgets count too");
    // Settling releases the hold and charges the real cost, once.
    let settled = store.settle_budget(&a, "h1", 12, &[]).await.unwrap();
    assert_eq!(settled.len(), 2);
    assert_eq!(
        (settled[0].spent_before_nano, settled[0].spent_after_nano),
        (0, 12)
    );
    assert!(
        store
            .settle_budget(&a, "h1", 12, &["tenant|2026-12".into()])
            .await
            .unwrap()
            .is_empty(),
        "settled once"
    );
    let s = store
        .budget_states(&a, &["tenant|2026-12".into()])
        .await
        .unwrap()[0];
    assert_eq!(
        s,
        BudgetState {
            spent_nano: 12,
            reserved_nano: 70
        }
    );
    // Tenant B's budget of the same name is its own.
    assert_eq!(
        store
            .reserve_budget(&b, "h1", &month, 100, 1, far)
            .await
            .unwrap(),
        Some(100)
    );
    assert!(
        store
            .settle_budget(&b, "h2", 50, &[])
            .await
            .unwrap()
            .is_empty()
    );
    // A counter starts from what its period already spent, once.
    store.init_budget(&a, "tenant|2026-11", 40).await.unwrap();
    store.init_budget(&a, "tenant|2026-11", 99).await.unwrap();
    assert_eq!(
        store
            .reserve_budget(&a, "h6", &[hard("tenant|2026-11", 100)], 100, 1, far)
            .await
            .unwrap(),
        Some(60)
    );
    // A hold never settled expires and gives its headroom back.
    assert_eq!(
        store
            .reserve_budget(&a, "h4", &[hard("day|1", 10)], 10, 1, now_ms() - 1)
            .await
            .unwrap(),
        Some(10)
    );
    assert_eq!(
        store
            .reserve_budget(&a, "h5", &[hard("day|1", 10)], 1, 1, far)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.release_expired_holds(&b, now_ms()).await.unwrap(), 0);
    assert_eq!(store.release_expired_holds(&a, now_ms()).await.unwrap(), 1);
    assert_eq!(
        store
            .reserve_budget(&a, "h5", &[hard("day|1", 10)], 10, 1, far)
            .await
            .unwrap(),
        Some(10)
    );
    // The expired hold's call ends after all: its cost is still charged, once.
    let late = store
        .settle_budget(&a, "h4", 7, &["day|1".into()])
        .await
        .unwrap();
    assert_eq!(
        late.iter()
            .map(|s| (s.budget.as_str(), s.spent_before_nano, s.spent_after_nano))
            .collect::<Vec<_>>(),
        vec![("day|1", 0, 7)]
    );
    assert!(
        store
            .settle_budget(&a, "h4", 7, &["day|1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let s = store.budget_states(&a, &["day|1".into()]).await.unwrap()[0];
    assert_eq!((s.spent_nano, s.reserved_nano), (7, 10));
}

/// 200 concurrent calls of worst case 10 against a hard budget of 100: exactly 10 hold at
/// once, and with each settling at its worst case, spend ends at the limit, never above.
pub async fn concurrent_reservations_never_overspend(store: Arc<dyn Store>) {
    let a = new_tenant(store.as_ref(), "budget-race").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, a) = (store.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("race{i}");
            let got = store
                .reserve_budget(
                    &a,
                    &id,
                    &[hard("tenant|race", 100)],
                    10,
                    10,
                    now_ms() + 60_000,
                )
                .await
                .unwrap();
            if got.is_some() {
                store.settle_budget(&a, &id, 10, &[]).await.unwrap();
            }
            got.is_some()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 10);
    let s = store
        .budget_states(&a, &["tenant|race".into()])
        .await
        .unwrap()[0];
    assert_eq!(
        s,
        BudgetState {
            spent_nano: 100,
            reserved_nano: 0
        }
    );
}

fn new_version<'a>(agent: &'a str, digest: &'a str, promote: bool) -> NewVersion<'a> {
    NewVersion {
        agent,
        description: "d",
        digest,
        manifest: "{}",
        bundle: Some(b"bundle"),
        created_by: "key:k",
        promote,
    }
}

pub async fn agents(store: &dyn Store) {
    let a = new_tenant(store, "agents-a").await;
    let b = new_tenant(store, "agents-b").await;
    let (v1, created) = store
        .create_version(
            &a,
            &new_version("support", "sha256:1", true),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!((v1.version, created), (1, true));
    // The same digest again is the same version.
    let (again, created) = store
        .create_version(
            &a,
            &new_version("support", "sha256:1", true),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!((again.version, created), (1, false));
    let (v2, _) = store
        .create_version(
            &a,
            &new_version("support", "sha256:2", false),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let agent = store.get_agent(&a, "support").await.unwrap().unwrap();
    assert_eq!(
        (agent.latest_version, agent.traffic.full_version()),
        (2, Some(1))
    );
    // A split, then everything to v2: v1 becomes the rollback target.
    let split = [
        SplitEntry {
            version: 1,
            weight: 90,
        },
        SplitEntry {
            version: 2,
            weight: 10,
        },
    ];
    let pins = [Pin {
        key: "key_x".into(),
        version: 2,
    }];
    let t = store
        .set_traffic(&a, "support", &split, &pins, &audit("agent.traffic"))
        .await
        .unwrap();
    assert_eq!((t.previous_full, t.pins.len()), (Some(1), 1));
    let t = store
        .set_traffic(
            &a,
            "support",
            &[SplitEntry {
                version: 2,
                weight: 100,
            }],
            &[],
            &audit("agent.traffic"),
        )
        .await
        .unwrap();
    assert_eq!(t.previous_full, Some(1));
    let t = store
        .set_traffic(
            &a,
            "support",
            &[SplitEntry {
                version: 1,
                weight: 100,
            }],
            &[],
            &audit("agent.traffic"),
        )
        .await
        .unwrap();
    assert_eq!((t.full_version(), t.previous_full), (Some(1), Some(2)));
    // Unknown versions are refused and change nothing.
    assert!(matches!(
        store
            .set_traffic(
                &a,
                "support",
                &[SplitEntry {
                    version: 9,
                    weight: 100
                }],
                &[],
                &audit("x")
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .get_agent(&a, "support")
            .await
            .unwrap()
            .unwrap()
            .traffic
            .full_version(),
        Some(1)
    );
    assert_eq!(store.list_versions(&a, "support").await.unwrap().len(), 2);
    assert_eq!(
        store
            .get_version(&a, "support", 2)
            .await
            .unwrap()
            .unwrap()
            .digest,
        "sha256:2"
    );
    // Tenant B sees none of it, and its own agent of the same name numbers from 1.
    assert!(store.get_agent(&b, "support").await.unwrap().is_none());
    assert!(store.list_versions(&b, "support").await.unwrap().is_empty());
    assert!(matches!(
        store
            .set_traffic(
                &b,
                "support",
                &[SplitEntry {
                    version: 1,
                    weight: 100
                }],
                &[],
                &audit("x")
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !store
            .delete_agent(&b, "support", &audit("x"))
            .await
            .unwrap()
    );
    let (bv, _) = store
        .create_version(
            &b,
            &new_version("support", "sha256:1", true),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!(bv.version, 1);
    assert!(
        store
            .delete_agent(&a, "support", &audit("agent.delete"))
            .await
            .unwrap()
    );
    assert!(store.get_agent(&a, "support").await.unwrap().is_none());
    assert!(store.list_versions(&a, "support").await.unwrap().is_empty());
    assert_eq!(store.list_agents(&b).await.unwrap().len(), 1);
}

pub async fn policies(store: &dyn Store) {
    let a = new_tenant(store, "policy-a").await;
    let b = new_tenant(store, "policy-b").await;
    assert!(store.get_policy(&a).await.unwrap().is_none());
    let p1 = store
        .put_policy(&a, "{\"v\":1}", None, &audit("policy.update"))
        .await
        .unwrap();
    assert_eq!(p1.revision, 1);
    // Optimistic concurrency: a stale revision is refused, the current one accepted.
    assert!(matches!(
        store
            .put_policy(&a, "{\"v\":2}", Some(0), &audit("policy.update"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let p2 = store
        .put_policy(&a, "{\"v\":2}", Some(1), &audit("policy.update"))
        .await
        .unwrap();
    assert_eq!(p2.revision, 2);
    assert_eq!(
        store.get_policy(&a).await.unwrap().unwrap().document,
        "{\"v\":2}"
    );
    assert!(store.get_policy(&b).await.unwrap().is_none());
    // "No policy yet" is revision 0.
    assert_eq!(
        store
            .put_policy(&b, "{}", Some(0), &audit("policy.update"))
            .await
            .unwrap()
            .revision,
        1
    );
}

pub async fn providers(store: &dyn Store) {
    let a = new_tenant(store, "providers-a").await;
    let b = new_tenant(store, "providers-b").await;
    let p = TenantProvider {
        name: "myopenai".into(),
        kind: "openai".into(),
        base_url: Some("https://api.example.com/v1".into()),
        api_key_secret: "OPENAI_KEY".into(),
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
    };
    store
        .put_provider(&a, &p, &audit("provider.put"))
        .await
        .unwrap();
    let mut p2 = p.clone();
    p2.kind = "openai-compatible".into();
    store
        .put_provider(&a, &p2, &audit("provider.put"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_provider(&a, "myopenai")
            .await
            .unwrap()
            .unwrap()
            .kind,
        "openai-compatible"
    );
    assert_eq!(store.list_providers(&a).await.unwrap().len(), 1);
    assert!(store.get_provider(&b, "myopenai").await.unwrap().is_none());
    assert!(store.list_providers(&b).await.unwrap().is_empty());
    assert!(
        !store
            .delete_provider(&b, "myopenai", &audit("provider.delete"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_provider(&a, "myopenai", &audit("provider.delete"))
            .await
            .unwrap()
    );
    assert!(store.get_provider(&a, "myopenai").await.unwrap().is_none());
}

fn event(id: &str, at_ms: i64, model: &str, input: i64, cost: i64) -> UsageEvent {
    UsageEvent {
        id: id.to_owned(),
        at_ms,
        kind: "llm".into(),
        key_id: Some("key_x".into()),
        agent: Some("support".into()),
        provider: Some("mock".into()),
        model: Some(model.to_owned()),
        input_tokens: input,
        output_tokens: 2 * input,
        cost_nano: cost,
        status: "ok".into(),
        ..Default::default()
    }
}

pub async fn usage(store: &dyn Store) {
    let a = new_tenant(store, "usage-a").await;
    let b = new_tenant(store, "usage-b").await;
    let day = 86_400_000;
    let events = vec![
        event("evt_1", 10 * day + 5, "mock/echo", 10, 100),
        event("evt_2", 10 * day + 6, "mock/echo", 20, 200),
        event("evt_3", 11 * day + 1, "mock/tools", 5, 50),
    ];
    assert_eq!(store.insert_usage(&a, &events).await.unwrap(), 3);
    // Retried events count once.
    assert_eq!(store.insert_usage(&a, &events[..2]).await.unwrap(), 0);
    assert_eq!(
        store
            .insert_usage(&b, &[event("evt_1", 10 * day, "mock/echo", 1000, 1)])
            .await
            .unwrap(),
        1
    );

    let total = store.query_usage(&a, &UsageQuery::default()).await.unwrap();
    assert_eq!(total.len(), 1);
    assert_eq!(
        (
            total[0].requests,
            total[0].input_tokens,
            total[0].output_tokens,
            total[0].cost_nano
        ),
        (3, 35, 70, 350)
    );
    assert_eq!(total[0].llm_calls, 3);

    let by_model = store
        .query_usage(
            &a,
            &UsageQuery {
                group_by: vec![UsageDim::Model],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let summary: Vec<_> = by_model
        .iter()
        .map(|r| (r.dims[0].1.clone().unwrap(), r.requests, r.cost_nano))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("mock/echo".to_owned(), 2, 300),
            ("mock/tools".to_owned(), 1, 50)
        ]
    );

    let by_day = store
        .query_usage(
            &a,
            &UsageQuery {
                group_by: vec![UsageDim::Day, UsageDim::Agent],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_day.len(), 2);
    assert_eq!(by_day[0].dims[0].1.as_deref(), Some("10"));
    assert_eq!(by_day[0].dims[1].1.as_deref(), Some("support"));

    let window = store
        .query_usage(
            &a,
            &UsageQuery {
                from_ms: Some(11 * day),
                to_ms: Some(12 * day),
                group_by: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(window[0].requests, 1);
    assert!(
        store
            .query_usage(
                &a,
                &UsageQuery {
                    from_ms: Some(20 * day),
                    to_ms: None,
                    group_by: vec![]
                }
            )
            .await
            .unwrap()
            .is_empty()
    );
    let b_total = store.query_usage(&b, &UsageQuery::default()).await.unwrap();
    assert_eq!((b_total[0].requests, b_total[0].input_tokens), (1, 1000));

    // Whole-minute ranges read the one-minute rollups, others the events: both agree, and
    // a retried event was not added to its minute twice.
    let by = |from: i64, to: i64| UsageQuery {
        from_ms: Some(from),
        to_ms: Some(to),
        group_by: vec![UsageDim::Model, UsageDim::Day],
    };
    let from_rollups = store
        .query_usage(&a, &by(10 * day, 12 * day))
        .await
        .unwrap();
    let from_events = store
        .query_usage(&a, &by(10 * day + 1, 12 * day))
        .await
        .unwrap();
    assert_eq!(from_rollups, from_events);
    assert_eq!(from_rollups[0].cost_nano, 300);
    // An event inside the first minute is cut off only by an unaligned range.
    let cut = store
        .query_usage(&a, &by(10 * day + 6, 12 * day))
        .await
        .unwrap();
    assert_eq!(cut[0].requests, 1);
}

pub async fn tenants(store: &dyn Store) {
    let a = new_tenant(store, "contract-a").await;
    let got = store.get_tenant(a.tenant()).await.unwrap().unwrap();
    assert_eq!(got.name, "contract-a");
    assert_eq!(got.plan, "free");
    assert_eq!(
        store
            .find_tenant_by_name("contract-a")
            .await
            .unwrap()
            .map(|t| t.id),
        Some(a.tenant().clone())
    );
    // Names are unique.
    let dup = Tenant {
        id: TenantId::new(),
        name: "contract-a".to_owned(),
        plan: "free".to_owned(),
        suspended: false,
        created_at_ms: now_ms(),
    };
    assert!(matches!(
        store.create_tenant(&dup, &audit("tenant.create")).await,
        Err(StoreError::Conflict(_))
    ));
    // Pagination walks every tenant once.
    for i in 0..4 {
        new_tenant(store, &format!("contract-page-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let p = store.list_tenants(&page).await.unwrap();
        assert!(p.items.len() <= 2);
        seen.extend(p.items.into_iter().map(|t| t.name));
        match p.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    for i in 0..4 {
        assert_eq!(
            seen.iter()
                .filter(|n| **n == format!("contract-page-{i}"))
                .count(),
            1
        );
    }
    let patched = store
        .update_tenant(
            &a,
            &TenantPatch {
                plan: Some("pro".to_owned()),
                suspended: Some(true),
                name: None,
            },
            &audit("tenant.update"),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            patched.plan.as_str(),
            patched.suspended,
            patched.name.as_str()
        ),
        ("pro", true, "contract-a")
    );
    let ghost = TenantScope::for_operator(TenantId::new());
    assert!(matches!(
        store
            .update_tenant(&ghost, &TenantPatch::default(), &audit("x"))
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn keys(store: &dyn Store) {
    let a = new_tenant(store, "keys-a").await;
    let b = new_tenant(store, "keys-b").await;
    let hash_a = format!("hash-a-{}", now_ms());
    let key_a = store
        .create_key(&a, &new_key(&hash_a, Role::Admin), &audit("key.create"))
        .await
        .unwrap();
    let key_b = store
        .create_key(
            &b,
            &new_key(&format!("hash-b-{}", now_ms()), Role::Viewer),
            &audit("key.create"),
        )
        .await
        .unwrap();
    let grant = store.lookup_key_hash(&hash_a).await.unwrap().unwrap();
    assert_eq!(grant.tenant.id, *a.tenant());
    assert_eq!(grant.key.id, key_a.id);
    assert_eq!(grant.key.role, Role::Admin);
    assert!(
        store
            .lookup_key_hash("no-such-hash")
            .await
            .unwrap()
            .is_none()
    );

    let listed_a = store.list_keys(&a, &PageRequest::default()).await.unwrap();
    assert_eq!(
        listed_a.items.iter().map(|k| &k.id).collect::<Vec<_>>(),
        vec![&key_a.id]
    );
    // Tenant B cannot revoke A's key: it does not exist for B.
    assert!(matches!(
        store.revoke_key(&b, &key_a.id, &audit("key.revoke")).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.lookup_key_hash(&hash_a).await.unwrap().is_some());
    let revoked = store
        .revoke_key(&a, &key_a.id, &audit("key.revoke"))
        .await
        .unwrap();
    assert!(revoked.revoked_at_ms.is_some());
    assert!(store.lookup_key_hash(&hash_a).await.unwrap().is_none());
    assert_eq!(
        store
            .list_keys(&b, &PageRequest::default())
            .await
            .unwrap()
            .items[0]
            .id,
        key_b.id
    );
}

pub async fn secrets(store: &dyn Store) {
    let a = new_tenant(store, "secrets-a").await;
    let b = new_tenant(store, "secrets-b").await;
    assert!(store.data_key(&a).await.unwrap().is_none());
    let first = WrappedKey {
        nonce: vec![1; 24],
        wrapped: vec![1; 48],
    };
    let second = WrappedKey {
        nonce: vec![2; 24],
        wrapped: vec![2; 48],
    };
    assert_eq!(store.insert_data_key(&a, &first).await.unwrap(), first);
    // The first data key stays: a racing second insert gets the stored one back.
    assert_eq!(store.insert_data_key(&a, &second).await.unwrap(), first);
    assert!(store.data_key(&b).await.unwrap().is_none());

    store
        .put_secret(&a, &sealed("API_KEY", 3), &audit("secret.put"))
        .await
        .unwrap();
    store
        .put_secret(&a, &sealed("API_KEY", 4), &audit("secret.put"))
        .await
        .unwrap();
    store
        .put_secret(&a, &sealed("OTHER", 5), &audit("secret.put"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_secret(&a, "API_KEY")
            .await
            .unwrap()
            .unwrap()
            .ciphertext,
        vec![4; 40]
    );
    assert!(store.get_secret(&b, "API_KEY").await.unwrap().is_none());
    // A binding is kept, changed alone, and reset by writing the value again.
    let bound = SealedSecret {
        binding: Some(r#"["provider:openai"]"#.to_owned()),
        writer_role: Some("admin".to_owned()),
        ..sealed("BOUND", 6)
    };
    store
        .put_secret(&a, &bound, &audit("secret.put"))
        .await
        .unwrap();
    let got = store.get_secret(&a, "BOUND").await.unwrap().unwrap();
    assert_eq!(
        (got.binding.as_deref(), got.writer_role.as_deref()),
        (Some(r#"["provider:openai"]"#), Some("admin"))
    );
    assert!(
        store
            .set_secret_binding(&a, "BOUND", Some(r#"["mcp:crm"]"#), &audit("secret.bind"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_secret_binding(&b, "BOUND", None, &audit("secret.bind"))
            .await
            .unwrap(),
        "another tenant's secret is not found"
    );
    let got = store.get_secret(&a, "BOUND").await.unwrap().unwrap();
    assert_eq!(
        (got.binding.as_deref(), got.ciphertext.clone()),
        (Some(r#"["mcp:crm"]"#), vec![6; 40])
    );
    store
        .put_secret(&a, &sealed("BOUND", 7), &audit("secret.put"))
        .await
        .unwrap();
    let got = store.get_secret(&a, "BOUND").await.unwrap().unwrap();
    assert_eq!(
        (got.binding, got.writer_role.as_deref()),
        (None, Some("developer"))
    );
    store
        .delete_secret(&a, "BOUND", &audit("secret.delete"))
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_secrets(&a, &PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["API_KEY", "OTHER"]);
    assert!(
        store
            .list_secrets(&b, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        !store
            .delete_secret(&b, "API_KEY", &audit("secret.delete"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_secret(&a, "API_KEY", &audit("secret.delete"))
            .await
            .unwrap()
    );
    assert!(store.get_secret(&a, "API_KEY").await.unwrap().is_none());
}

pub async fn audit_chain(store: &dyn Store) {
    let a = new_tenant(store, "audit-a").await;
    let b = new_tenant(store, "audit-b").await;
    for i in 0..3 {
        store
            .append_audit(
                &a,
                &NewEntry::new("key:x", "thing.do", format!("t{i}"), json!({"i": i})),
            )
            .await
            .unwrap();
    }
    let entries = store.list_audit(&a, 0, 100).await.unwrap();
    // seq 1 is the tenant's creation.
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(entries[0].action, "tenant.create");
    assert_eq!(entries[3].details, json!({"i": 2}));
    assert!(berth_audit::verify(a.tenant_str(), &entries).ok);
    assert_eq!(store.list_audit(&b, 0, 100).await.unwrap().len(), 1);
    assert_eq!(store.list_audit(&a, 2, 100).await.unwrap().len(), 2);

    // A batch continues the chain in order, in one transaction; a stamped entry keeps its
    // time. 250 entries take more than one INSERT.
    assert!(store.append_audit_batch(&a, &[]).await.unwrap().is_empty());
    let mut batch: Vec<NewEntry> = (0..250)
        .map(|i| NewEntry::new("key:x", "tool.call", format!("b{i}"), json!({"i": i})))
        .collect();
    batch[0] = batch[0].clone().at(1234);
    let stored = store.append_audit_batch(&a, &batch).await.unwrap();
    assert_eq!(stored.first().map(|e| e.seq), Some(5));
    assert_eq!(stored.last().map(|e| e.seq), Some(254));
    let entries = store.list_audit(&a, 0, 1000).await.unwrap();
    assert_eq!(entries.len(), 254);
    assert_eq!(&entries[4..], &stored[..]);
    assert_eq!(entries[4].at_ms, 1234);
    assert_eq!(entries[253].target, "b249");
    assert!(berth_audit::verify(a.tenant_str(), &entries).ok);
    assert_eq!(store.list_audit(&b, 0, 100).await.unwrap().len(), 1);

    // After the true head, an append continues the chain; after a stale head (another
    // writer appended since) it either writes nothing (`None`) or continues the true chain,
    // and never forks it.
    let head = AuditHead::of(entries.last().unwrap());
    let next = NewEntry::new("key:x", "tool.call", "after", json!(1));
    let stored = store
        .append_audit_after(&a, &head, std::slice::from_ref(&next))
        .await
        .unwrap()
        .expect("the true head is not stale");
    assert_eq!(stored[0].seq, 255);
    assert_eq!(stored[0].prev_hash, head.hash);
    let stale = store
        .append_audit_after(&a, &head, std::slice::from_ref(&next))
        .await
        .unwrap();
    let entries = store.list_audit(&a, 0, 1000).await.unwrap();
    match stale {
        None => assert_eq!(entries.len(), 255, "a refused append writes nothing"),
        Some(s) => assert_eq!((s[0].seq, entries.len()), (256, 256)),
    }
    assert!(berth_audit::verify(a.tenant_str(), &entries).ok);
    let fresh = new_tenant(store, "audit-chain-empty").await;
    let wrong = AuditHead::genesis();
    let refused = store
        .append_audit_after(&fresh, &wrong, std::slice::from_ref(&next))
        .await
        .unwrap();
    let entries = store.list_audit(&fresh, 0, 10).await.unwrap();
    assert_eq!(entries.len(), 1 + usize::from(refused.is_some()));
    assert!(berth_audit::verify(fresh.tenant_str(), &entries).ok);
}

pub async fn concurrent_audit_appends(store: Arc<dyn Store>) {
    let a = new_tenant(store.as_ref(), "audit-concurrent").await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let entry = NewEntry::new("k", "x", format!("{i}"), json!(i));
                if i % 3 == 0 {
                    store.append_audit(&a, &entry).await.unwrap();
                } else if i % 3 == 1 {
                    // A stale head: the chain holds at least the creation.
                    let head = AuditHead::genesis();
                    let stored = match store
                        .append_audit_after(&a, &head, &[entry.clone(), entry.clone()])
                        .await
                        .unwrap()
                    {
                        Some(s) => s,
                        None => store
                            .append_audit_batch(&a, &[entry.clone(), entry])
                            .await
                            .unwrap(),
                    };
                    assert_eq!(stored.len(), 2);
                } else {
                    store
                        .append_audit_batch(&a, &[entry.clone(), entry])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Singles and batches interleave without a gap or a fork: 7 singles (i % 3 == 0),
    // 2 × 13 in pairs, and the creation.
    let entries = store.list_audit(&a, 0, 100).await.unwrap();
    assert_eq!(entries.len(), 34);
    assert!(berth_audit::verify(a.tenant_str(), &entries).ok);
}

pub async fn delete_tenant_removes_everything(store: &dyn Store) {
    let a = new_tenant(store, "delete-a").await;
    let b = new_tenant(store, "delete-b").await;
    let hash = format!("hash-del-{}", now_ms());
    store
        .create_key(&a, &new_key(&hash, Role::Admin), &audit("key.create"))
        .await
        .unwrap();
    store
        .put_secret(&a, &sealed("S", 1), &audit("secret.put"))
        .await
        .unwrap();
    store
        .put_secret(&b, &sealed("S", 2), &audit("secret.put"))
        .await
        .unwrap();
    store
        .insert_data_key(
            &a,
            &WrappedKey {
                nonce: vec![1; 24],
                wrapped: vec![1; 48],
            },
        )
        .await
        .unwrap();
    store.delete_tenant(&a).await.unwrap();
    assert!(store.get_tenant(a.tenant()).await.unwrap().is_none());
    assert!(store.lookup_key_hash(&hash).await.unwrap().is_none());
    assert!(store.get_secret(&a, "S").await.unwrap().is_none());
    assert!(store.data_key(&a).await.unwrap().is_none());
    assert!(store.list_audit(&a, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .list_keys(&a, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The other tenant is untouched.
    assert!(store.get_secret(&b, "S").await.unwrap().is_some());
    assert!(matches!(
        store.delete_tenant(&a).await,
        Err(StoreError::NotFound)
    ));
}

/// Where test databases are created: `BERTH_TEST_PG_URL`, else the local server.
pub fn pg_admin_url() -> String {
    std::env::var("BERTH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty PostgreSQL database for one test, or `None` when no server answers.
/// Under `CI=true` an unreachable server fails the test instead of skipping it.
pub async fn pg_test_database() -> Option<PgTestDb> {
    use sqlx::Connection;
    let admin_url = pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL at {admin_url} is required under CI=true: {e}");
            }
            eprintln!("skipping PostgreSQL test: {admin_url} unreachable: {e}");
            return None;
        }
    };
    let name = format!(
        "berth_test_{}",
        Id::new(IdKind::Event).as_str().trim_start_matches("evt_")
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap();
    Some(PgTestDb {
        admin_url,
        url: format!("{base}/{name}"),
        name,
    })
}

/// A throwaway database; [`PgTestDb::drop_now`] removes it.
pub struct PgTestDb {
    admin_url: String,
    pub url: String,
    pub name: String,
}

impl PgTestDb {
    pub async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}

/// The MCP registry: replace by name, checks update status and tools, per tenant only.
pub async fn mcp_servers(store: &dyn Store) {
    let a = new_tenant(store, "mcp-a").await;
    let b = new_tenant(store, "mcp-b").await;
    let server = McpServerRecord {
        name: "crm".into(),
        url: "https://crm.example.com/mcp".into(),
        headers: r#"{"Authorization":{"secret":"CRM_TOKEN","prefix":"Bearer "}}"#.into(),
        tools: r#"[{"name":"lookup"}]"#.into(),
        status: "healthy".into(),
        protocol_version: Some("2025-11-25".into()),
        last_error: None,
        checked_at_ms: Some(now_ms()),
        registered_role: Some("developer".into()),
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
    };
    store
        .put_mcp_server(&a, &server, &audit("mcp_server.put"))
        .await
        .unwrap();
    let mut moved = server.clone();
    moved.url = "https://crm2.example.com/mcp".into();
    store
        .put_mcp_server(&a, &moved, &audit("mcp_server.put"))
        .await
        .unwrap();
    assert_eq!(
        store.list_mcp_servers(&a).await.unwrap(),
        vec![moved.clone()]
    );
    assert!(store.list_mcp_servers(&b).await.unwrap().is_empty());
    assert!(store.get_mcp_server(&b, "crm").await.unwrap().is_none());

    // A failed check keeps the tools it could not list; a later one replaces them.
    let down = McpServerCheck {
        status: "unreachable".into(),
        tools: None,
        protocol_version: None,
        last_error: Some("connection refused".into()),
        checked_at_ms: now_ms() + 1,
    };
    assert!(store.record_mcp_check(&a, "crm", &down).await.unwrap());
    assert!(!store.record_mcp_check(&b, "crm", &down).await.unwrap());
    let got = store.get_mcp_server(&a, "crm").await.unwrap().unwrap();
    assert_eq!(got.status, "unreachable");
    assert_eq!(got.tools, moved.tools);
    assert_eq!(got.protocol_version.as_deref(), Some("2025-11-25"));
    assert_eq!(got.last_error.as_deref(), Some("connection refused"));
    let up = McpServerCheck {
        status: "healthy".into(),
        tools: Some(r#"[{"name":"lookup"},{"name":"refund"}]"#.into()),
        protocol_version: Some("2026-07-28".into()),
        last_error: None,
        checked_at_ms: now_ms() + 2,
    };
    assert!(store.record_mcp_check(&a, "crm", &up).await.unwrap());
    let got = store.get_mcp_server(&a, "crm").await.unwrap().unwrap();
    assert_eq!(got.tools, r#"[{"name":"lookup"},{"name":"refund"}]"#);
    assert_eq!(got.protocol_version.as_deref(), Some("2026-07-28"));
    assert_eq!(got.last_error, None);

    assert!(
        !store
            .delete_mcp_server(&b, "crm", &audit("mcp_server.delete"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_mcp_server(&a, "crm", &audit("mcp_server.delete"))
            .await
            .unwrap()
    );
    assert!(store.list_mcp_servers(&a).await.unwrap().is_empty());
    assert!(!store.record_mcp_check(&a, "crm", &up).await.unwrap());
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
