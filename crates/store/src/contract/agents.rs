//! Agents, their versions, and traffic.

use super::{audit, new_tenant};
use crate::model::*;
use crate::{Store, StoreError};

/// A version of `agent` with content `digest`, given all traffic if `promote`.
fn new_version<'a>(agent: &'a str, digest: &'a str, promote: bool) -> NewVersion<'a> {
    NewVersion {
        agent,
        description: "d",
        digest,
        manifest: "{}",
        bundle: Some(b"bundle"),
        created_by: "key:k",
        promote,
    }
}

/// Versions by digest, traffic splits and pins, rollback targets, deletion, per tenant.
pub async fn agents(store: &dyn Store) {
    let a = new_tenant(store, "agents-a").await;
    let b = new_tenant(store, "agents-b").await;
    let (v1, created) = store
        .create_version(
            &a,
            &new_version("support", "sha256:1", true),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!((v1.version, created), (1, true));
    // The same digest again is the same version.
    let (again, created) = store
        .create_version(
            &a,
            &new_version("support", "sha256:1", true),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!((again.version, created), (1, false));
    let (v2, _) = store
        .create_version(
            &a,
            &new_version("support", "sha256:2", false),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let agent = store.get_agent(&a, "support").await.unwrap().unwrap();
    assert_eq!(
        (agent.latest_version, agent.traffic.full_version()),
        (2, Some(1))
    );
    // A split, then everything to v2: v1 becomes the rollback target.
    let split = [
        SplitEntry {
            version: 1,
            weight: 90,
        },
        SplitEntry {
            version: 2,
            weight: 10,
        },
    ];
    let pins = [Pin {
        key: "key_x".into(),
        version: 2,
    }];
    let t = store
        .set_traffic(&a, "support", &split, &pins, &audit("agent.traffic"))
        .await
        .unwrap();
    assert_eq!((t.previous_full, t.pins.len()), (Some(1), 1));
    let t = store
        .set_traffic(
            &a,
            "support",
            &[SplitEntry {
                version: 2,
                weight: 100,
            }],
            &[],
            &audit("agent.traffic"),
        )
        .await
        .unwrap();
    assert_eq!(t.previous_full, Some(1));
    let t = store
        .set_traffic(
            &a,
            "support",
            &[SplitEntry {
                version: 1,
                weight: 100,
            }],
            &[],
            &audit("agent.traffic"),
        )
        .await
        .unwrap();
    assert_eq!((t.full_version(), t.previous_full), (Some(1), Some(2)));
    // Unknown versions are refused and change nothing.
    assert!(matches!(
        store
            .set_traffic(
                &a,
                "support",
                &[SplitEntry {
                    version: 9,
                    weight: 100
                }],
                &[],
                &audit("x")
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .get_agent(&a, "support")
            .await
            .unwrap()
            .unwrap()
            .traffic
            .full_version(),
        Some(1)
    );
    assert_eq!(store.list_versions(&a, "support").await.unwrap().len(), 2);
    assert_eq!(
        store
            .get_version(&a, "support", 2)
            .await
            .unwrap()
            .unwrap()
            .digest,
        "sha256:2"
    );
    // Tenant B sees none of it, and its own agent of the same name numbers from 1.
    assert!(store.get_agent(&b, "support").await.unwrap().is_none());
    assert!(store.list_versions(&b, "support").await.unwrap().is_empty());
    assert!(matches!(
        store
            .set_traffic(
                &b,
                "support",
                &[SplitEntry {
                    version: 1,
                    weight: 100
                }],
                &[],
                &audit("x")
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !store
            .delete_agent(&b, "support", &audit("x"))
            .await
            .unwrap()
    );
    let (bv, _) = store
        .create_version(
            &b,
            &new_version("support", "sha256:1", true),
            &audit("agent.deploy"),
        )
        .await
        .unwrap();
    assert_eq!(bv.version, 1);
    assert!(
        store
            .delete_agent(&a, "support", &audit("agent.delete"))
            .await
            .unwrap()
    );
    assert!(store.get_agent(&a, "support").await.unwrap().is_none());
    assert!(store.list_versions(&a, "support").await.unwrap().is_empty());
    assert_eq!(store.list_agents(&b).await.unwrap().len(), 1);
}
