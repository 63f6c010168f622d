//! Runs the storage contract against SQLite and PostgreSQL, plus each backend's own checks:
//! audit tampering is detected, and PostgreSQL row-level security holds without filters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use berth_audit::NewEntry;
use berth_core::Role;
use berth_store::contract::{self, new_key, new_tenant, pg_test_database};
use berth_store::{
    KeyStore, PgStore, PolicyStore, ProviderStore, SecretStore, SqliteStore, Store, UsageStore,
};
use serde_json::json;
use std::sync::Arc;

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("berth.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn sqlite_passes_the_contract() {
    let (_dir, store) = sqlite().await;
    contract::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_passes_the_contract() {
    let Some(db) = pg_test_database().await else {
        return;
    };
    let store = PgStore::open(&db.url).await.unwrap();
    contract::run_all(Arc::new(store)).await;
    db.drop_now().await;
}

async fn seed_chain(store: &dyn Store) -> berth_core::TenantScope {
    let a = new_tenant(store, "tamper").await;
    for i in 0..4 {
        store
            .append_audit(&a, &NewEntry::new("k", "x", "t", json!({"i": i})))
            .await
            .unwrap();
    }
    a
}

async fn verify(store: &dyn Store, scope: &berth_core::TenantScope) -> berth_audit::Verification {
    let entries = store.list_audit(scope, 0, 1000).await.unwrap();
    berth_audit::verify(scope.tenant_str(), &entries)
}

#[tokio::test]
async fn sqlite_detects_edited_and_deleted_audit_rows() {
    let (_dir, store) = sqlite().await;
    let a = seed_chain(&store).await;
    assert!(verify(&store, &a).await.ok);
    sqlx::query("UPDATE audit_log SET details = '{\"i\":99}' WHERE tenant_id = $1 AND seq = 3")
        .bind(a.tenant_str())
        .execute(store.raw_pool())
        .await
        .unwrap();
    let v = verify(&store, &a).await;
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(3));

    let b = seed_chain_named(&store, "tamper-del").await;
    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 2")
        .bind(b.tenant_str())
        .execute(store.raw_pool())
        .await
        .unwrap();
    assert_eq!(verify(&store, &b).await.first_bad_seq, Some(2));
}

async fn seed_chain_named(store: &dyn Store, name: &str) -> berth_core::TenantScope {
    let a = new_tenant(store, name).await;
    store
        .append_audit(&a, &NewEntry::new("k", "x", "t", json!(1)))
        .await
        .unwrap();
    store
        .append_audit(&a, &NewEntry::new("k", "x", "t", json!(2)))
        .await
        .unwrap();
    a
}

#[tokio::test]
async fn postgres_row_level_security_hides_other_tenants_without_a_filter() {
    let Some(db) = pg_test_database().await else {
        return;
    };
    let store = PgStore::open(&db.url).await.unwrap();
    let a = new_tenant(&store, "rls-a").await;
    let b = new_tenant(&store, "rls-b").await;
    store
        .create_key(&a, &new_key("rls-hash-a", Role::Admin), &contract_audit())
        .await
        .unwrap();
    store
        .create_key(&b, &new_key("rls-hash-b", Role::Admin), &contract_audit())
        .await
        .unwrap();
    let sealed = berth_store::SealedSecret {
        name: "S".into(),
        nonce: vec![0; 24],
        ciphertext: vec![0; 32],
        binding: None,
        writer_role: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    store
        .put_secret(&a, &sealed, &contract_audit())
        .await
        .unwrap();
    store
        .put_secret(&b, &sealed, &contract_audit())
        .await
        .unwrap();

    for scope in [&a, &b] {
        let ev = berth_store::UsageEvent {
            id: "evt_rls".into(),
            kind: "llm".into(),
            status: "ok".into(),
            ..Default::default()
        };
        store.insert_usage(scope, &[ev]).await.unwrap();
        store
            .put_policy(scope, "{}", None, &contract_audit())
            .await
            .unwrap();
        let p = berth_store::TenantProvider {
            name: "p".into(),
            kind: "openai".into(),
            base_url: None,
            api_key_secret: "K".into(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        store
            .put_provider(scope, &p, &contract_audit())
            .await
            .unwrap();
        let dk = berth_store::WrappedKey {
            nonce: vec![1; 24],
            wrapped: vec![1; 48],
        };
        store.insert_data_key(scope, &dk).await.unwrap();
    }

    // The application "forgets" its tenant filter: RLS still shows tenant B only.
    let mut tx = store.scoped_transaction(&b).await.unwrap();
    for table in [
        "api_keys",
        "secrets",
        "audit_log",
        "usage_events",
        "policies",
        "providers",
        "tenant_data_keys",
    ] {
        let tenants: Vec<String> =
            sqlx::query_scalar(&format!("SELECT DISTINCT tenant_id FROM {table}"))
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        assert_eq!(tenants, vec![b.tenant_str().to_owned()], "table {table}");
    }
    let visible_tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible_tenants, 1);
    // Writing a row for another tenant is refused by the policy's WITH CHECK.
    let err = sqlx::query("UPDATE secrets SET tenant_id = $1")
        .bind(a.tenant_str())
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);

    // With no tenant set at all, nothing is visible.
    let mut tx = store.unscoped_transaction().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // And the application role is neither superuser nor able to bypass RLS nor the owner.
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'secrets'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_ne!(owner, me);
    drop(tx);
    db.drop_now().await;
}

#[tokio::test]
async fn postgres_detects_edited_audit_rows() {
    let Some(db) = pg_test_database().await else {
        return;
    };
    let store = PgStore::open(&db.url).await.unwrap();
    let a = seed_chain(&store).await;
    assert!(verify(&store, &a).await.ok);
    // Tamper as the database owner, bypassing the application entirely.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('berth.tenant_id', $1, false)")
        .bind(a.tenant_str())
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 4")
        .execute(&mut conn)
        .await
        .unwrap();
    let v = verify(&store, &a).await;
    assert_eq!((v.ok, v.first_bad_seq), (false, Some(4)));
    drop(conn);
    db.drop_now().await;
}

fn contract_audit() -> NewEntry {
    NewEntry::new("operator", "x", "y", json!({}))
}

/// A NUL byte in a usage row's text is refused by PostgreSQL for its content (a row the
/// background writers set aside after cleaning fails), and told apart from an outage.
#[tokio::test]
async fn postgres_refusing_a_nul_byte_is_a_refused_row_not_an_outage() {
    let Some(db) = pg_test_database().await else {
        return;
    };
    let store = PgStore::open(&db.url).await.unwrap();
    let a = new_tenant(&store, "nul").await;
    let ev = berth_store::UsageEvent {
        id: "evt_nul".into(),
        kind: "llm".into(),
        status: "ok".into(),
        model: Some("mock/echo\u{0}".into()),
        ..Default::default()
    };
    let e = store.insert_usage(&a, &[ev]).await.unwrap_err();
    assert!(e.is_refused_row(), "{e}");
    assert!(!e.is_unavailable(), "{e}");
    db.drop_now().await;
}
