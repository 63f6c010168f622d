//! The tenant's MCP servers.

use super::{audit, new_tenant};
use crate::Store;
use crate::model::*;
use berth_core::clock::now_ms;

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
