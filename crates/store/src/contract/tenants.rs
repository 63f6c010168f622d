//! Tenants (the operator's registry) and their API keys.

use super::{audit, new_key, new_tenant, sealed};
use crate::model::*;
use crate::{Store, StoreError};
use berth_core::clock::now_ms;
use berth_core::{Role, TenantId, TenantScope};

/// Create, read, rename, suspend, unique names, pagination.
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

/// Keys are created, looked up by hash, listed and revoked per tenant.
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

/// Deleting a tenant removes every row it owns and nothing of another tenant's.
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
