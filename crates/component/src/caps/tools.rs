//! `tools`: only tools matching the manifest's `tools.use` are listed or called (deny by
//! default); the caller's host applies the tenant's policy, approvals, credentials and
//! audit behind that.

use crate::bindings::{llm, tools, types};
use crate::caps::error;
use crate::caps::llm::tool_def_to_wit;
use crate::state::State;
use berth_core::pattern::glob_match;

pub(crate) fn tool_granted(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, name))
}

impl tools::Host for State {
    async fn list(&mut self) -> Vec<llm::ToolDef> {
        if self.grants.tools.is_empty() {
            return Vec::new();
        }
        self.host
            .list_tools()
            .await
            .iter()
            .filter(|t| tool_granted(&self.grants.tools, &t.name))
            .map(tool_def_to_wit)
            .collect()
    }

    async fn call(&mut self, name: String, arguments: String) -> Result<String, types::Error> {
        if !tool_granted(&self.grants.tools, &name) {
            return Err(error(
                "denied",
                format!("tool '{name}' is not in the manifest's tools.use"),
            ));
        }
        if serde_json::from_str::<serde_json::Value>(&arguments).is_err() {
            return Err(error("invalid", "tool arguments must be JSON"));
        }
        Ok(self.host.call_tool(&name, &arguments).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_permission_no_tool() {
        assert!(!tool_granted(&[], "mock__echo"));
        let granted = vec!["crm__*".to_owned()];
        assert!(tool_granted(&granted, "crm__lookup"));
        assert!(!tool_granted(&granted, "mail__send"));
    }
}
