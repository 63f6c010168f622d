//! Usage events, their rollups, and the usage query.

use super::new_tenant;
use crate::Store;
use crate::model::*;

/// A model call of `input` tokens costing `cost` nano-USD.
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

/// Idempotent inserts, grouping, rollups against raw events, per tenant.
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
