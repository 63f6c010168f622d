//! Validated names: agent names (`[a-z0-9][a-z0-9-]{0,62}`) and resource names (secrets, providers, servers).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} may only contain {allowed}; got {found:?}")]
    BadCharacter {
        what: &'static str,
        allowed: &'static str,
        found: char,
    },
    #[error("{what} must start with {allowed}")]
    BadStart {
        what: &'static str,
        allowed: &'static str,
    },
}

/// An agent name, unique within a tenant: `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const WHAT: &str = "agent name";
        let first = raw.chars().next().ok_or(NameError::Empty { what: WHAT })?;
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart {
                what: WHAT,
                allowed: "a lower-case letter or digit",
            });
        }
        if raw.len() > 63 {
            return Err(NameError::TooLong {
                what: WHAT,
                max: 63,
            });
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadCharacter {
                what: WHAT,
                allowed: "a-z, 0-9 and '-'",
                found: c,
            });
        }
        Ok(AgentName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name for a tenant-owned resource (secret, provider, MCP server, key label):
/// letters, digits, `_`, `-`, `.`, 1 to 128 characters, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName(String);

impl ResourceName {
    pub fn parse(what: &'static str, raw: &str) -> Result<Self, NameError> {
        let first = raw.chars().next().ok_or(NameError::Empty { what })?;
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::BadStart {
                what,
                allowed: "a letter or digit",
            });
        }
        if raw.len() > 128 {
            return Err(NameError::TooLong { what, max: 128 });
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(NameError::BadCharacter {
                what,
                allowed: "letters, digits, '_', '-' and '.'",
                found: c,
            });
        }
        Ok(ResourceName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn agent_names() {
        assert!(AgentName::parse("support").is_ok());
        assert!(AgentName::parse("a").is_ok());
        assert!(AgentName::parse("0-bot-2").is_ok());
        assert!(AgentName::parse(&"a".repeat(63)).is_ok());
        assert!(matches!(
            AgentName::parse(&"a".repeat(64)),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(AgentName::parse(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            AgentName::parse("-x"),
            Err(NameError::BadStart { .. })
        ));
        assert!(matches!(
            AgentName::parse("Support"),
            Err(NameError::BadStart { .. })
        ));
        assert!(matches!(
            AgentName::parse("a/b"),
            Err(NameError::BadCharacter { found: '/', .. })
        ));
    }

    #[test]
    fn resource_names() {
        assert!(ResourceName::parse("secret name", "OPENAI_API_KEY").is_ok());
        assert!(ResourceName::parse("secret name", "a.b-c").is_ok());
        assert!(ResourceName::parse("secret name", "../etc").is_err());
        assert!(ResourceName::parse("secret name", "a b").is_err());
        assert!(ResourceName::parse("secret name", &"x".repeat(129)).is_err());
    }

    proptest! {
        #[test]
        fn agent_name_parse_is_total(s in "\\PC*") {
            if let Ok(n) = AgentName::parse(&s) {
                prop_assert!(n.as_str().len() <= 63);
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }

        #[test]
        fn resource_name_parse_is_total(s in "\\PC*") {
            if let Ok(n) = ResourceName::parse("x", &s) {
                prop_assert!(!n.as_str().contains('/'));
                prop_assert!(n.as_str().len() <= 128);
            }
        }

        #[test]
        fn valid_agent_names_accepted(s in "[a-z0-9][a-z0-9-]{0,62}") {
            prop_assert!(AgentName::parse(&s).is_ok());
        }
    }
}
