//! Budget reservations and settlements, alone and under concurrency.

use super::new_tenant;
use crate::Store;
use crate::model::*;
use berth_core::clock::now_ms;
use std::sync::Arc;

/// A hard budget of `limit` nano-USD.
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
