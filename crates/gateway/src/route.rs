//! Model routing: from the model a client names (and its `Berth-Tags`) to the ordered list
//! of `provider/model` targets to try, under the tenant's policy.

use berth_core::Policy;
use berth_core::pattern::any_match;
use berth_core::policy::is_model_ref;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "unknown model '{0}': use provider/model (e.g. mock/echo) or an alias from your policy"
    )]
    UnknownModel(String),
    #[error("model '{0}' is not allowed by this tenant's policy")]
    NotAllowed(String),
}

/// The targets of one call, in order: the primary, then its fallbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub targets: Vec<String>,
    /// The tag whose route chose the model, if one did.
    pub via_tag: Option<String>,
}

fn resolve_alias<'a>(policy: &'a Policy, name: &'a str) -> &'a str {
    policy.models.aliases.get(name).map_or(name, String::as_str)
}

fn allowed(policy: &Policy, model: &str) -> bool {
    match &policy.models.allow {
        None => true,
        Some(patterns) => any_match(patterns, model),
    }
}

/// Plans the targets for `requested`. A route whose tag is among `tags` replaces the
/// requested model; aliases are resolved; fallbacks come from the policy (keyed by the
/// alias or by the resolved model) and are skipped when the allow-list refuses them.
pub fn plan(policy: &Policy, requested: &str, tags: &[String]) -> Result<Route, RouteError> {
    let route = policy.models.routes.iter().find(|r| tags.contains(&r.tag));
    let (name, via_tag) = match route {
        Some(r) => (r.model.as_str(), Some(r.tag.clone())),
        None => (requested, None),
    };
    let primary = resolve_alias(policy, name);
    if !is_model_ref(primary) {
        return Err(RouteError::UnknownModel(requested.to_owned()));
    }
    if !allowed(policy, primary) {
        return Err(RouteError::NotAllowed(primary.to_owned()));
    }
    let mut targets = vec![primary.to_owned()];
    let chain = policy
        .models
        .fallbacks
        .get(name)
        .or_else(|| policy.models.fallbacks.get(primary));
    for f in chain.into_iter().flatten() {
        let f = resolve_alias(policy, f);
        if is_model_ref(f) && allowed(policy, f) && !targets.iter().any(|t| t == f) {
            targets.push(f.to_owned());
        }
    }
    Ok(Route { targets, via_tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Policy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn plain_names_pass_through_without_policy() {
        let r = plan(&Policy::default(), "mock/echo", &[]).unwrap();
        assert_eq!(r.targets, vec!["mock/echo"]);
        assert_eq!(
            plan(&Policy::default(), "gpt-4o", &[]),
            Err(RouteError::UnknownModel("gpt-4o".into()))
        );
    }

    #[test]
    fn aliases_routes_fallbacks_and_allow_list() {
        let p = policy(json!({"models": {
            "allow": ["openai/*", "mock/*"],
            "aliases": {"fast": "openai/gpt-4o-mini", "smart": "openai/gpt-4o"},
            "fallbacks": {"smart": ["anthropic/claude-sonnet-4-5", "mock/echo", "fast"]},
            "routes": [{"tag": "classify", "model": "fast"}]
        }}));
        assert_eq!(
            plan(&p, "fast", &[]).unwrap().targets,
            vec!["openai/gpt-4o-mini"]
        );
        // Fallbacks keyed by the alias; the anthropic one is not allowed, so skipped.
        assert_eq!(
            plan(&p, "smart", &[]).unwrap().targets,
            vec!["openai/gpt-4o", "mock/echo", "openai/gpt-4o-mini"]
        );
        // A tag's route replaces the requested model.
        let r = plan(&p, "smart", &["other".into(), "classify".into()]).unwrap();
        assert_eq!(
            (r.targets, r.via_tag.as_deref()),
            (vec!["openai/gpt-4o-mini".to_owned()], Some("classify"))
        );
        assert_eq!(
            plan(&p, "anthropic/claude-haiku-4-5", &[]),
            Err(RouteError::NotAllowed("anthropic/claude-haiku-4-5".into()))
        );
        assert_eq!(
            plan(&p, "slow", &[]),
            Err(RouteError::UnknownModel("slow".into()))
        );
    }

    #[test]
    fn fallbacks_keyed_by_resolved_model_apply_to_direct_names() {
        let p = policy(json!({"models": {"fallbacks": {"mock/a": ["mock/b"]}}}));
        assert_eq!(
            plan(&p, "mock/a", &[]).unwrap().targets,
            vec!["mock/a", "mock/b"]
        );
    }
}
