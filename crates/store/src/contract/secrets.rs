//! Sealed secrets, bindings, and the tenant's data key.

use super::{audit, new_tenant, sealed};
use crate::Store;
use crate::model::*;

/// Data keys, secrets, bindings and pagination, per tenant.
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
