//! Properties of `agent.toml`: a valid manifest rendered to TOML parses back equal (and
//! renders the same again), and one unknown key in any section is refused with an error
//! whose `field` names that key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_core::Manifest;
use berth_core::manifest::{
    ComponentSpec, LimitsSpec, MemorySpec, ModelSpec, PromptSpec, ToolsSpec,
};
use proptest::prelude::*;

fn model_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[a-z0-9][a-z0-9._-]{0,10}", "[a-zA-Z0-9][!-~]{0,30}")
            .prop_map(|(p, m)| format!("{p}/{m}")),
        "[a-z0-9][a-z0-9_.:-]{0,20}",
    ]
}

/// Free text as people write it in a manifest: any printable characters, quotes,
/// backslashes and newlines included, which the TOML renderer must escape.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[\\PC\"'\\\\\n\t]{{0,{max}}}")).unwrap()
}

fn pattern() -> impl Strategy<Value = String> {
    "[a-z0-9_*]{1,8}(__[a-z0-9_*]{1,8})?"
}

fn model() -> impl Strategy<Value = ModelSpec> {
    (
        model_ref(),
        prop::collection::vec(model_ref(), 0..3),
        prop::option::of(prop_oneof![
            (0u32..=200).prop_map(|n| f64::from(n) / 100.0),
            0.0f64..=2.0,
        ]),
        prop::option::of(1u32..=u32::MAX),
    )
        .prop_map(|(name, fallbacks, temperature, max_tokens)| ModelSpec {
            name,
            fallbacks,
            temperature,
            max_tokens,
        })
}

fn limits() -> impl Strategy<Value = LimitsSpec> {
    (
        1u32..=100,
        prop_oneof![
            (1u64..=3600).prop_map(|s| format!("{s}s")),
            (1u64..=60).prop_map(|m| format!("{m}m")),
            (1u64..=3_600_000).prop_map(|ms| format!("{ms}ms")),
            Just("1h".to_owned()),
        ],
        prop::option::of(prop_oneof![
            (1u32..=100_000).prop_map(|n| f64::from(n) / 1000.0),
            1e-9f64..1e9,
        ]),
    )
        .prop_map(|(max_steps, timeout, max_cost_usd)| LimitsSpec {
            max_steps,
            timeout,
            max_cost_usd,
        })
}

fn component() -> impl Strategy<Value = ComponentSpec> {
    (
        "[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,2}\\.wasm",
        1u32..=4096,
        1u64..=600_000,
        prop::collection::vec("https?://[a-z0-9.-]{1,20}(:[0-9]{2,5})?", 0..3),
        prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", text(20), 0..3),
    )
        .prop_map(
            |(path, memory_mb, cpu_ms, allowed_hosts, config)| ComponentSpec {
                path,
                memory_mb,
                cpu_ms,
                allowed_hosts,
                config,
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        ("[a-z0-9][a-z0-9-]{0,62}", text(200)),
        model(),
        text(300),
        (
            prop::collection::vec(pattern(), 0..4),
            prop::collection::vec(pattern(), 0..3),
        ),
        limits(),
        0u32..=1000,
        prop::option::of(component()),
    )
        .prop_map(
            |((name, description), model, system, (use_, approval), limits, history, component)| {
                Manifest {
                    name,
                    description,
                    model,
                    prompt: PromptSpec { system },
                    tools: ToolsSpec { use_, approval },
                    limits,
                    memory: MemorySpec { history },
                    component,
                }
            },
        )
}

/// The keys each section knows; an inserted key must be none of them.
fn known(section: &str) -> &'static [&'static str] {
    match section {
        "" => &[
            "name",
            "description",
            "model",
            "prompt",
            "tools",
            "limits",
            "memory",
            "component",
        ],
        "model" => &["name", "fallbacks", "temperature", "max_tokens"],
        "prompt" => &["system"],
        "tools" => &["use", "approval"],
        "limits" => &["max_steps", "timeout", "max_cost_usd"],
        "memory" => &["history"],
        "component" => &["path", "memory_mb", "cpu_ms", "allowed_hosts", "config"],
        _ => &[],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_valid_manifest_survives_render_and_parse(m in manifest()) {
        prop_assert_eq!(m.validate(), Ok(()));
        let text = toml::to_string(&m).unwrap();
        let back = Manifest::parse("agent.toml", &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &m, "{}", text);
        // Rendering is stable: the parsed manifest renders to the same text.
        prop_assert_eq!(toml::to_string(&back).unwrap(), text);
    }

    #[test]
    fn an_unknown_key_in_any_section_is_refused_by_name(
        m in manifest(),
        section in prop::sample::select(vec!["", "model", "prompt", "tools", "limits", "memory", "component"]),
        key in "[a-z][a-z_]{0,14}",
        value in prop_oneof![
            Just(toml::Value::Integer(1)),
            Just(toml::Value::String("x".into())),
            Just(toml::Value::Boolean(true)),
        ],
    ) {
        prop_assume!(!known(section).contains(&key.as_str()));
        let mut m = m;
        if section == "component" && m.component.is_none() {
            m.component = Some(ComponentSpec {
                path: "agent.wasm".into(),
                memory_mb: 64,
                cpu_ms: 2000,
                allowed_hosts: vec![],
                config: Default::default(),
            });
        }
        let mut doc = toml::Table::try_from(&m).unwrap();
        let table = if section.is_empty() {
            &mut doc
        } else {
            doc.get_mut(section).and_then(toml::Value::as_table_mut).unwrap()
        };
        table.insert(key.clone(), value);
        let text = toml::to_string(&doc).unwrap();
        let e = Manifest::parse("agent.toml", &text).expect_err(&text);
        let want = if section.is_empty() { key.clone() } else { format!("{section}.{key}") };
        prop_assert_eq!(&e.field, &want, "{}\n{}", e, text);
        prop_assert!(e.message.contains(&key), "{}", e);
        // The line is that of the key.
        let line = e.line.expect("an unknown key has a line");
        let written = text.lines().nth(line - 1).unwrap_or_default();
        prop_assert!(written.trim_start().starts_with(&key), "line {}: {:?}\n{}", line, written, text);
    }
}
