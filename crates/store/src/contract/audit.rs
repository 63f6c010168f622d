//! The audit hash chain.

use super::new_tenant;
use crate::{AuditHead, Store};
use berth_audit::NewEntry;
use serde_json::json;
use std::sync::Arc;

/// The chain links, batches continue it, stale heads never fork it, per tenant.
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

/// Concurrent single and batch appends leave one gapless chain.
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
