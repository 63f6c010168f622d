//! Component agents' key-value data.

use super::new_tenant;
use crate::Store;

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
