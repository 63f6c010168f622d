//! Properties of ids and names at the edge: a valid id parses to itself and displays as it
//! was written, and no name, alias or model reference with a control character (NUL
//! included) is ever accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_core::policy::{is_alias_name, is_model_ref};
use berth_core::{AgentName, Id, IdKind, ResourceName, TenantId};
use proptest::prelude::*;

const KINDS: [IdKind; 7] = [
    IdKind::Tenant,
    IdKind::Key,
    IdKind::Run,
    IdKind::Thread,
    IdKind::Approval,
    IdKind::Event,
    IdKind::Request,
];

fn kind() -> impl Strategy<Value = IdKind> {
    prop::sample::select(KINDS.to_vec())
}

/// The random part of an id as the server writes it: 20 characters of lower-case base32.
fn random_part() -> impl Strategy<Value = String> {
    "[a-z2-7]{20}"
}

/// Any control character: C0 (NUL among them), DEL and C1.
fn control() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        Just('\u{7f}'),
        (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
    ]
}

/// `valid` with `c` inserted at a char boundary chosen by `at`.
fn insert_at(valid: &str, c: char, at: usize) -> String {
    let bounds: Vec<usize> = valid
        .char_indices()
        .map(|(i, _)| i)
        .chain([valid.len()])
        .collect();
    let i = bounds[at % bounds.len()];
    format!("{}{c}{}", &valid[..i], &valid[i..])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_valid_id_parses_to_itself_and_displays_unchanged(kind in kind(), rest in random_part()) {
        let raw = format!("{}{rest}", kind.prefix());
        let id = Id::parse(kind, &raw).expect("a well-formed id");
        prop_assert_eq!(id.to_string(), raw.clone());
        prop_assert_eq!(Id::parse(kind, &id.to_string()), Some(id.clone()));
        // Another kind's prefix never reads it.
        for other in KINDS.iter().filter(|k| **k != kind) {
            prop_assert_eq!(Id::parse(*other, &raw), None);
        }
        if kind == IdKind::Tenant {
            let t = TenantId::parse(&raw).expect("a tenant id");
            prop_assert_eq!(t.to_string(), raw.clone());
            prop_assert_eq!(TenantId::parse(&t.to_string()), Some(t));
        }
    }

    #[test]
    fn fresh_ids_parse_back(kind in kind()) {
        let id = Id::new(kind);
        prop_assert_eq!(Id::parse(kind, &id.to_string()), Some(id));
        let t = TenantId::new();
        prop_assert_eq!(TenantId::parse(&t.to_string()), Some(t));
    }

    #[test]
    fn an_id_with_a_control_character_is_refused(
        kind in kind(), rest in random_part(), c in control(), at in any::<usize>(),
    ) {
        let raw = insert_at(&format!("{}{rest}", kind.prefix()), c, at);
        prop_assert_eq!(Id::parse(kind, &raw), None);
        prop_assert_eq!(TenantId::parse(&raw), None);
    }

    #[test]
    fn names_with_a_control_character_are_always_refused(
        agent in "[a-z0-9][a-z0-9-]{0,61}",
        resource in "[A-Za-z0-9][A-Za-z0-9_.-]{0,126}",
        alias in "[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}",
        model in ("[a-z0-9._-]{1,20}", "[!-~]{1,40}"),
        c in control(),
        at in any::<usize>(),
    ) {
        let model = format!("{}/{}", model.0, model.1);
        // The valid ones are accepted, so that what follows tests the character alone.
        prop_assert!(AgentName::parse(&agent).is_ok());
        prop_assert!(ResourceName::parse("secret name", &resource).is_ok());
        prop_assert!(is_alias_name(&alias));
        prop_assert!(is_model_ref(&model), "{}", model);

        prop_assert!(AgentName::parse(&insert_at(&agent, c, at)).is_err());
        prop_assert!(ResourceName::parse("secret name", &insert_at(&resource, c, at)).is_err());
        prop_assert!(!is_alias_name(&insert_at(&alias, c, at)));
        let bad_model = insert_at(&model, c, at);
        prop_assert!(!is_model_ref(&bad_model), "{:?}", bad_model);
        // And the same at either end, where a trim might hide it.
        for bad in [format!("{c}{model}"), format!("{model}{c}")] {
            prop_assert!(!is_model_ref(&bad), "{:?}", bad);
        }
    }

    #[test]
    fn whatever_a_name_parser_accepts_has_no_control_character(s in "\\PC{0,3}[\\x00-\\x1f\\x7f]?\\PC{0,3}") {
        let clean = |v: &str| !v.chars().any(char::is_control);
        if let Ok(n) = AgentName::parse(&s) { prop_assert!(clean(n.as_str())); }
        if let Ok(n) = ResourceName::parse("x", &s) { prop_assert!(clean(n.as_str())); }
        if is_alias_name(&s) || is_model_ref(&s) { prop_assert!(clean(&s)); }
    }
}
