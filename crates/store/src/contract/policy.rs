//! The tenant's policy document and its revisions.

use super::{audit, new_tenant};
use crate::{Store, StoreError};

/// Revisions with optimistic concurrency, per tenant.
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
