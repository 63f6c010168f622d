//! The tenant's own LLM providers.

use super::{audit, new_tenant};
use crate::Store;
use crate::model::*;
use berth_core::clock::now_ms;

/// Put, replace, list, delete, per tenant.
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
