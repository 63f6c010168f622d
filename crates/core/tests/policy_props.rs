//! Properties of the tenant policy document: no JSON makes reading or validating it panic,
//! a valid policy round-trips through JSON unchanged, and a bad value, a wrong type or an
//! unknown field put anywhere is refused with an error naming that field's path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_core::Policy;
use berth_core::policy::{
    Budget, CustomDetector, DLP_DETECTORS, DlpAction, DlpPolicy, Limits, ModelPolicy, ModelRoute,
    Period, PolicyError, ToolPolicy, ToolRateLimit, WEBHOOK_EVENTS, Webhook,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn model_ref() -> impl Strategy<Value = String> {
    ("[a-z0-9][a-z0-9._-]{0,10}", "[a-zA-Z0-9][!-~]{0,20}").prop_map(|(p, m)| format!("{p}/{m}"))
}

fn alias() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_.:-]{0,15}"
}

fn pattern() -> impl Strategy<Value = String> {
    "[a-z0-9_*/.-]{1,20}"
}

fn agent() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}"
}

/// A price or fraction as people write one: JSON numbers of many digits may read back one
/// unit in the last place off without serde_json's `float_roundtrip`, which is not what is
/// tested here.
fn cents(max: u32) -> impl Strategy<Value = f64> {
    (0..=max).prop_map(|n| f64::from(n) / 100.0)
}

fn models() -> impl Strategy<Value = ModelPolicy> {
    (
        prop::option::of(prop::collection::vec(pattern(), 0..3)),
        prop::collection::btree_map(alias(), model_ref(), 0..3),
        prop::collection::btree_map(model_ref(), prop::collection::vec(model_ref(), 0..3), 0..3),
        prop::collection::vec(("[a-z]{1,8}", model_ref()), 0..3),
    )
        .prop_map(|(allow, aliases, fallbacks, routes)| {
            // Routes and fallbacks may name an alias as well as a model.
            let first_alias = aliases.keys().next().cloned();
            let routes = routes
                .into_iter()
                .enumerate()
                .map(|(i, (tag, model))| ModelRoute {
                    tag,
                    model: match (&first_alias, i % 2) {
                        (Some(a), 0) => a.clone(),
                        _ => model,
                    },
                })
                .collect();
            ModelPolicy {
                allow,
                aliases,
                fallbacks,
                routes,
            }
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        prop::option::of(1u32..=1_000_000),
        prop::option::of(1u64..=u64::MAX),
        prop::option::of(1u32..=u32::MAX),
        prop::option::of(1u32..=1_000_000),
        prop::option::of(1u32..=1_000_000),
    )
        .prop_map(|(rpm, tpm, runs, per_key, per_agent)| {
            // A narrower limit is at most the tenant's own.
            let narrower = |v: Option<u32>| v.map(|v| rpm.map_or(v, |r| v.min(r)));
            Limits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                concurrent_runs: runs,
                per_key_requests_per_minute: narrower(per_key),
                per_agent_requests_per_minute: narrower(per_agent),
            }
        })
}

fn budget() -> impl Strategy<Value = Budget> {
    (
        prop_oneof![
            Just("tenant".to_owned()),
            agent().prop_map(|a| format!("agent:{a}")),
            "[a-z2-7]{20}".prop_map(|k| format!("key:key_{k}")),
        ],
        prop_oneof![Just(Period::Day), Just(Period::Month)],
        cents(1_000_000),
        any::<bool>(),
        prop::collection::vec((1u32..=100).prop_map(|n| f64::from(n) / 100.0), 0..4),
    )
        .prop_map(|(scope, period, limit_usd, hard, alert_at)| Budget {
            scope,
            period,
            limit_usd,
            hard,
            alert_at,
        })
}

fn tools() -> impl Strategy<Value = ToolPolicy> {
    (
        prop::collection::btree_map(
            prop_oneof![Just("*".to_owned()), agent()],
            prop::collection::vec(pattern(), 0..3),
            0..3,
        ),
        prop::collection::vec(pattern(), 0..3),
        prop::collection::vec((pattern(), 1u32..=u32::MAX), 0..3),
    )
        .prop_map(|(allow, approval, rate_limits)| ToolPolicy {
            allow,
            approval,
            rate_limits: rate_limits
                .into_iter()
                .map(|(tool, per_minute)| ToolRateLimit { tool, per_minute })
                .collect(),
        })
}

fn action() -> impl Strategy<Value = DlpAction> {
    prop_oneof![
        Just(DlpAction::Allow),
        Just(DlpAction::Block),
        Just(DlpAction::Redact)
    ]
}

fn dlp() -> impl Strategy<Value = DlpPolicy> {
    (
        prop::sample::subsequence(DLP_DETECTORS.to_vec(), 0..=DLP_DETECTORS.len()),
        prop::collection::vec(("[a-z_]{1,10}", "[A-Z]{2,4}-[0-9]{1,6}"), 0..3),
        (action(), action(), action()),
    )
        .prop_map(|(detect, custom, (a, r, o))| DlpPolicy {
            detect: detect.into_iter().map(str::to_owned).collect(),
            custom: custom
                .into_iter()
                .map(|(name, regex)| CustomDetector { name, regex })
                .collect(),
            on_tool_args: a,
            on_tool_results: r,
            on_llm_output: o,
        })
}

fn webhook() -> impl Strategy<Value = Webhook> {
    (
        "https?://[a-z0-9.-]{1,20}/[a-z0-9/]{0,10}",
        prop::sample::subsequence(WEBHOOK_EVENTS.to_vec(), 0..=WEBHOOK_EVENTS.len()),
        prop::option::of("[A-Z_]{1,10}"),
    )
        .prop_map(|(url, events, secret)| Webhook {
            url,
            events: events.into_iter().map(str::to_owned).collect(),
            secret,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        models(),
        limits(),
        prop::collection::vec(budget(), 0..3),
        tools(),
        prop::option::of(dlp()),
        prop::collection::vec(webhook(), 0..3),
    )
        .prop_map(|(models, limits, budgets, tools, dlp, webhooks)| Policy {
            models,
            limits,
            budgets,
            tools,
            dlp,
            webhooks,
        })
}

/// The regex check of the API, standing in: a lone `(` never compiles.
fn regex_ok(re: &str) -> Result<(), String> {
    if re == "(" {
        Err("unclosed group".into())
    } else {
        Ok(())
    }
}

fn read(doc: Value) -> Result<Policy, PolicyError> {
    let p = Policy::from_json(doc)?;
    p.validate(regex_ok)?;
    Ok(p)
}

/// Inserts `item` into the list at `slot` (made a list if absent) at a position chosen by
/// `at`; returns the position.
fn insert_in(slot: &mut Value, at: usize, item: Value) -> usize {
    if slot.is_null() {
        *slot = json!([]);
    }
    let list = slot.as_array_mut().unwrap();
    let k = at % (list.len() + 1);
    list.insert(k, item);
    k
}

fn dlp_of(doc: &mut Value) -> &mut Value {
    if doc["dlp"].is_null() {
        doc["dlp"] = json!({});
    }
    &mut doc["dlp"]
}

const VALID_BUDGET: fn() -> Value = || json!({"scope": "tenant", "period": "day", "limit_usd": 1});

/// Spoils one field of a valid document (a bad value, a wrong type or an unknown key, by
/// `which`); returns the path the error must name.
fn spoil(doc: &mut Value, which: usize, at: usize, key: &str) -> String {
    let budget_with = |k: &str, v: Value| {
        let mut b = VALID_BUDGET();
        b[k] = v;
        b
    };
    match which % 38 {
        0 => format!(
            "models.allow[{}]",
            insert_in(&mut doc["models"]["allow"], at, json!(""))
        ),
        1 => {
            doc["models"]["aliases"]["bad alias!"] = json!("mock/echo");
            "models.aliases.bad alias!".into()
        }
        2 => {
            doc["models"]["aliases"]["zz-bad"] = json!("gpt");
            "models.aliases.zz-bad".into()
        }
        3 => {
            doc["models"]["fallbacks"]["no pe"] = json!([]);
            "models.fallbacks.no pe".into()
        }
        4 => {
            let k = insert_in(
                &mut doc["models"]["routes"],
                at,
                json!({"tag": "", "model": "mock/echo"}),
            );
            format!("models.routes[{k}].tag")
        }
        5 => {
            let k = insert_in(
                &mut doc["models"]["routes"],
                at,
                json!({"tag": "t", "model": "x y"}),
            );
            format!("models.routes[{k}].model")
        }
        6 => {
            doc["limits"]["requests_per_minute"] = json!(0);
            "limits".into()
        }
        7 => {
            doc["limits"]["per_key_requests_per_minute"] = json!(0);
            "limits.per_key_requests_per_minute".into()
        }
        8 => {
            doc["limits"]["requests_per_minute"] = json!(10);
            doc["limits"]["per_key_requests_per_minute"] = Value::Null;
            doc["limits"]["per_agent_requests_per_minute"] = json!(11);
            "limits.per_agent_requests_per_minute".into()
        }
        9 => format!(
            "budgets[{}].scope",
            insert_in(&mut doc["budgets"], at, budget_with("scope", json!("team")))
        ),
        10 => format!(
            "budgets[{}].limit_usd",
            insert_in(&mut doc["budgets"], at, budget_with("limit_usd", json!(-1)))
        ),
        11 => format!(
            "budgets[{}].alert_at[1]",
            insert_in(
                &mut doc["budgets"],
                at,
                budget_with("alert_at", json!([0.5, 1.5]))
            )
        ),
        12 => {
            doc["tools"]["allow"]["Bad Agent"] = json!(["*"]);
            "tools.allow.Bad Agent".into()
        }
        13 => format!(
            "tools.allow.*[{}]",
            insert_in(&mut doc["tools"]["allow"]["*"], at, json!(""))
        ),
        14 => format!(
            "tools.approval[{}]",
            insert_in(&mut doc["tools"]["approval"], at, json!("a b"))
        ),
        15 => {
            let k = insert_in(
                &mut doc["tools"]["rate_limits"],
                at,
                json!({"tool": "x", "per_minute": 0}),
            );
            format!("tools.rate_limits[{k}].per_minute")
        }
        16 => format!(
            "dlp.detect[{}]",
            insert_in(&mut dlp_of(doc)["detect"], at, json!("dna"))
        ),
        17 => {
            let k = insert_in(
                &mut dlp_of(doc)["custom"],
                at,
                json!({"name": "", "regex": "x"}),
            );
            format!("dlp.custom[{k}].name")
        }
        18 => {
            let k = insert_in(
                &mut dlp_of(doc)["custom"],
                at,
                json!({"name": "n", "regex": "("}),
            );
            format!("dlp.custom[{k}].regex")
        }
        19 => {
            let k = insert_in(
                &mut doc["webhooks"],
                at,
                json!({"url": "ftp://x", "events": []}),
            );
            format!("webhooks[{k}].url")
        }
        20 => {
            let k = insert_in(
                &mut doc["webhooks"],
                at,
                json!({"url": "https://x", "events": ["run.failed", "nope"]}),
            );
            format!("webhooks[{k}].events[1]")
        }
        // Wrong types.
        21 => {
            doc["limits"]["requests_per_minute"] = json!("many");
            "limits.requests_per_minute".into()
        }
        22 => format!(
            "budgets[{}].period",
            insert_in(
                &mut doc["budgets"],
                at,
                budget_with("period", json!("week"))
            )
        ),
        23 => format!(
            "budgets[{}].limit_usd",
            insert_in(
                &mut doc["budgets"],
                at,
                budget_with("limit_usd", json!("1"))
            )
        ),
        24 => {
            let k = insert_in(
                &mut doc["tools"]["rate_limits"],
                at,
                json!({"tool": "x", "per_minute": -1}),
            );
            format!("tools.rate_limits[{k}].per_minute")
        }
        25 => {
            dlp_of(doc)["on_tool_args"] = json!("shred");
            "dlp.on_tool_args".into()
        }
        26 => {
            let k = insert_in(
                &mut doc["webhooks"],
                at,
                json!({"url": "https://x", "events": "run.failed"}),
            );
            format!("webhooks[{k}].events")
        }
        27 => {
            doc["limits"]["concurrent_runs"] = json!(1e12);
            "limits.concurrent_runs".into()
        }
        // Unknown keys, at every level.
        28 => {
            doc[key] = json!(1);
            key.into()
        }
        29 => {
            doc["models"][key] = json!(1);
            format!("models.{key}")
        }
        30 => {
            doc["limits"][key] = json!(1);
            format!("limits.{key}")
        }
        31 => format!(
            "budgets[{}].{key}",
            insert_in(&mut doc["budgets"], at, budget_with(key, json!(1)))
        ),
        32 => {
            doc["tools"][key] = json!([]);
            format!("tools.{key}")
        }
        33 => {
            let k = insert_in(
                &mut doc["tools"]["rate_limits"],
                at,
                json!({"tool": "x", "per_minute": 1, key: true}),
            );
            format!("tools.rate_limits[{k}].{key}")
        }
        34 => {
            dlp_of(doc)[key] = json!("x");
            format!("dlp.{key}")
        }
        35 => {
            let k = insert_in(
                &mut dlp_of(doc)["custom"],
                at,
                json!({"name": "n", "regex": "x", key: 1}),
            );
            format!("dlp.custom[{k}].{key}")
        }
        36 => {
            let k = insert_in(
                &mut doc["webhooks"],
                at,
                json!({"url": "https://x", "events": [], key: null}),
            );
            format!("webhooks[{k}].{key}")
        }
        _ => {
            let k = insert_in(
                &mut doc["models"]["routes"],
                at,
                json!({"tag": "t", "model": "mock/echo", key: 1}),
            );
            format!("models.routes[{k}].{key}")
        }
    }
}

/// Arbitrary JSON, biased towards the policy's own keys and words so that the generated
/// documents reach past the first level.
fn arb_json() -> impl Strategy<Value = Value> {
    let words = prop_oneof![
        Just("tenant"),
        Just("day"),
        Just("month"),
        Just("block"),
        Just("redact"),
        Just("allow"),
        Just("email"),
        Just("*"),
        Just("mock/echo"),
        Just("agent:a"),
        Just("key:key_aaaaaaaaaaaaaaaaaaaa"),
        Just("https://x"),
        Just("run.failed"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        words.prop_map(|w| json!(w)),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("models"),
        Just("allow"),
        Just("aliases"),
        Just("fallbacks"),
        Just("routes"),
        Just("tag"),
        Just("model"),
        Just("limits"),
        Just("requests_per_minute"),
        Just("tokens_per_minute"),
        Just("concurrent_runs"),
        Just("per_key_requests_per_minute"),
        Just("budgets"),
        Just("scope"),
        Just("period"),
        Just("limit_usd"),
        Just("hard"),
        Just("alert_at"),
        Just("tools"),
        Just("approval"),
        Just("rate_limits"),
        Just("tool"),
        Just("per_minute"),
        Just("dlp"),
        Just("detect"),
        Just("custom"),
        Just("name"),
        Just("regex"),
        Just("on_tool_args"),
        Just("webhooks"),
        Just("url"),
        Just("events"),
        Just("secret"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reading_any_json_never_panics(doc in arb_json()) {
        for doc in [doc.clone(), json!({"models": doc.clone(), "limits": doc.clone(), "budgets": [doc.clone()],
                                        "tools": doc.clone(), "dlp": doc.clone(), "webhooks": [doc]})] {
            if let Ok(p) = Policy::from_json(doc) {
                let _ = p.validate(regex_ok);
                // Whatever is read writes back and reads again the same.
                let again = Policy::from_json(serde_json::to_value(&p).unwrap()).unwrap();
                prop_assert_eq!(again, p);
            }
        }
    }

    #[test]
    fn a_valid_policy_round_trips_through_json(p in policy()) {
        prop_assert_eq!(p.validate(regex_ok), Ok(()));
        let text = serde_json::to_string(&p).unwrap();
        let back = read(serde_json::from_str(&text).unwrap()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn a_bad_field_is_refused_by_its_path(
        p in policy(), which in 0usize..38, at in any::<usize>(), key in "x_[a-z_]{0,10}",
    ) {
        let mut doc = serde_json::to_value(&p).unwrap();
        let want = spoil(&mut doc, which, at, &key);
        match read(doc.clone()) {
            Err(e) => prop_assert_eq!(&e.field, &want, "{}: {}", e, doc),
            Ok(_) => prop_assert!(false, "accepted, but {} is bad: {}", want, doc),
        }
    }
}
