//! Tests of loading, overriding and validating the configuration.
use super::*;
use proptest::prelude::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), env(vars), &Overrides::default())
}

#[test]
fn defaults_match_the_contract() {
    let c = Config::defaults().unwrap();
    assert_eq!(c.listen, "127.0.0.1:7700");
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.data_dir, cwd.join(".berth"));
    assert_eq!(
        c.database_url(),
        format!("sqlite://{}", cwd.join(".berth/berth.db").display())
    );
    assert_eq!(c.master_key_path(), cwd.join(".berth/master.key"));
    assert!(c.plans().contains_key("free") && c.plans().contains_key("pro"));
}

#[test]
fn the_example_of_api_md_parses() {
    let text = r#"
listen = "127.0.0.1:7700"
data_dir = ".berth"
database_url = "sqlite://.berth/berth.db"
[egress]
allow_private = []
[auth.jwt]
hs256_secret_env = "JWT_SECRET"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
timeout = "120s"
[prices."openai/gpt-4o-mini"]
input = 0.15
output = 0.60
cached_input = 0.075
[plans.free]
requests_per_minute = 60
tokens_per_minute = 100000
concurrent_runs = 2
monthly_budget_usd = 5
weight = 1
[plans.pro]
requests_per_minute = 3000
tokens_per_minute = 5000000
concurrent_runs = 50
weight = 10
"#;
    let c = load_str(text, &[("JWT_SECRET", "shh")]).unwrap();
    assert_eq!(c.plans["pro"].weight, 10);
    assert!(
        load_str(text, &[])
            .unwrap_err()
            .to_string()
            .contains("JWT_SECRET")
    );
    assert_eq!(c.prices["openai/gpt-4o-mini"].cached_input, Some(0.075));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../berth.example.toml");
    let c = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
    assert_eq!(c.listen, "127.0.0.1:7700");
    assert_eq!(c.plans()["pro"].weight, 10);
    let s = c.sandbox.settings().unwrap();
    let d = berth_sandbox::SandboxSettings::default();
    assert_eq!(
        (
            s.memory_bytes,
            s.max_processes,
            s.max_output_bytes,
            s.max_timeout
        ),
        (
            d.memory_bytes,
            d.max_processes,
            d.max_output_bytes,
            d.max_timeout
        )
    );
    assert_eq!(s.read_only, d.read_only);
}

#[test]
fn sandbox_settings_are_checked_by_key() {
    let err = load_str("[sandbox]\nmemroy_mb = 1\n", &[]).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `memroy_mb`"),
        "{err}"
    );
    let err = load_str("[sandbox]\nmax_timeout = \"soon\"\n", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key 'sandbox.max_timeout': \"soon\" is not a duration like \"10s\""
    );
    let err = load_str("[sandbox]\ndefault_timeout = \"2m\"\n", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config key 'sandbox': default_timeout must be positive and at most max_timeout"
    );
    let err = load_str("[sandbox]\nmax_processes = 1\n", &[]).unwrap_err();
    assert!(err.to_string().contains("max_processes"), "{err}");
    // A disabled sandbox is not checked, and the environment reaches its keys.
    let c = load_str("[sandbox]\nenabled = false\nmax_processes = 1\n", &[]).unwrap();
    assert!(!c.sandbox.enabled);
    let c = load_str("", &[("BERTH_SANDBOX__MAX_PROCESSES", "16")]).unwrap();
    assert_eq!(c.sandbox.settings().unwrap().max_processes, 16);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = load_str("lisen = \"x\"", &[]).unwrap_err().to_string();
    assert!(err.contains("lisen"), "{err}");
    let err = load_str("[plans.free]\nrequests_per_minute = 1\ntokens_per_minute = 1\nconcurrent_runs = 1\nwieght = 2", &[])
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("plans.free") && err.contains("wieght"),
        "{err}"
    );
    let err = load_str("", &[("BERTH_NOPE", "1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("listen = \"nowhere\"", "listen"),
        ("database_url = \"mysql://x\"", "database_url"),
        (
            "[egress]\nallow_private = [\"10.0.0.0/33\"]",
            "egress.allow_private[0]",
        ),
        (
            "[[providers]]\nname = \"x\"\nkind = \"cohere\"",
            "providers[0].kind",
        ),
        (
            "[[providers]]\nname = \"x\"\nkind = \"openai\"\ntimeout = \"soon\"",
            "providers[0].timeout",
        ),
        ("default_plan = \"gold\"", "default_plan"),
        ("listen = 7", "listen"),
        ("[auth.jwt]\nissuer = \"x\"", "auth.jwt"),
        ("redis_url = \"http://x\"", "redis_url"),
        ("redis_url = \"rediss://x:6380\"", "redis_url"),
        ("redis_key_prefix = \"a b\"", "redis_key_prefix"),
    ];
    for (text, key) in cases {
        let err = load_str(text, &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?} gave {err}");
    }
    assert!(matches!(
        load_str("listen = ", &[]),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let c = load_str(
        "listen = \"127.0.0.1:1\"",
        &[
            ("BERTH_LISTEN", "127.0.0.1:2"),
            ("BERTH_PLANS__FREE__REQUESTS_PER_MINUTE", "7"),
            ("BERTH_PLANS__FREE__TOKENS_PER_MINUTE", "8"),
            ("BERTH_PLANS__FREE__CONCURRENT_RUNS", "9"),
            ("BERTH_EGRESS__ALLOW_PRIVATE", "[\"127.0.0.0/8\"]"),
            ("BERTH_AUTH__JWT__ISSUER", "https://issuer.example"),
            ("BERTH_AUTH__JWT__HS256_SECRET_ENV", "JWT_SECRET"),
            ("JWT_SECRET", "shh"),
            ("BERTH_OPERATOR_TOKEN", "op"),
            ("BERTH_URL", "ignored"),
            ("OTHER", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:2");
    assert_eq!(c.plans["free"].requests_per_minute, 7);
    assert_eq!(c.egress.allow_private, vec!["127.0.0.0/8"]);
    let jwt = c.auth.jwt.unwrap();
    assert_eq!(jwt.issuer.as_deref(), Some("https://issuer.example"));
    assert_eq!(jwt.hs256_secret.as_deref(), Some("shh"));
    assert_eq!(c.operator_token.as_deref(), Some("op"));
    let flags = Overrides {
        listen: Some("127.0.0.1:3".into()),
        ..Default::default()
    };
    let c = Config::load(None, env(&[("BERTH_LISTEN", "127.0.0.1:2")]), &flags).unwrap();
    assert_eq!(c.listen, "127.0.0.1:3");
}

#[test]
fn durations() {
    assert_eq!(
        parse_duration("120s"),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(
        parse_duration("500ms"),
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        parse_duration("2m"),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(parse_duration("s"), None);
    assert_eq!(parse_duration("10"), None);
}

proptest! {
    #[test]
    fn arbitrary_files_never_panic(text in "\\PC{0,200}") {
        let _ = load_str(&text, &[]);
    }

    #[test]
    fn arbitrary_env_never_panics(key in "[A-Z_]{1,30}", value in "\\PC{0,40}") {
        let _ = Config::load(None, vec![(format!("BERTH_{key}"), value)], &Overrides::default());
    }

    #[test]
    fn arbitrary_durations_never_panic(s in "\\PC{0,20}") {
        let _ = parse_duration(&s);
    }
}
