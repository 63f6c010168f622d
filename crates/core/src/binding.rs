//! Where a secret may be injected: its binding (hosts, `provider:<name>`, `mcp:<name>`),
//! the destinations secrets are injected into, and the one check made at every injection.
//!
//! A host entry (`api.example.com`, or `*.example.com` for its subdomains) pins where the
//! value may travel, whoever set up the destination. A name entry (`provider:<name>`,
//! `mcp:<name>`) names a destination, not where it points, and a destination can be
//! pointed elsewhere by whoever may write it; so a name entry, and a secret with no binding
//! at all, only reach destinations last written by a principal of at least the role that
//! wrote the secret's value. A developer therefore cannot aim an admin's secret at a host
//! of their choosing, whatever binding the secret has.

use crate::role::Role;
use std::fmt;

/// Entries a binding may hold.
pub const MAX_BINDING_ENTRIES: usize = 32;

/// The kinds of places a secret is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// A tenant's own LLM provider (the API key of bring-your-own-key calls).
    Provider,
    /// A tenant's MCP server (a request header).
    Mcp,
    /// A webhook of the policy (the signing key).
    Webhook,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Provider => "provider",
            DestinationKind::Mcp => "mcp",
            DestinationKind::Webhook => "webhook",
        }
    }
}

/// One place a secret is about to be injected into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub kind: DestinationKind,
    /// The provider's or server's name (the URL for a webhook).
    pub name: String,
    /// The host the value goes to (lower case, no port).
    pub host: String,
    /// The role of whoever last wrote the destination (its URL, its use of the secret).
    pub written_by: Role,
}

impl Destination {
    /// `kind:name` and the host, as audit entries and errors name it.
    pub fn label(&self) -> String {
        format!("{}:{} ({})", self.kind.as_str(), self.name, self.host)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Checks a binding as written (`PUT /v1/secrets/{name}`): each entry is `provider:<name>`,
/// `mcp:<name>`, a host name or IP address, or `*.` and a domain. Answers the entries
/// normalised (lower case, deduplicated, in order).
pub fn parse_binding(entries: &[String]) -> Result<Vec<String>, String> {
    if entries.is_empty() {
        return Err("a binding names at least one destination (omit it for none)".into());
    }
    if entries.len() > MAX_BINDING_ENTRIES {
        return Err(format!(
            "a binding holds at most {MAX_BINDING_ENTRIES} destinations"
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let entry = raw.trim().to_ascii_lowercase();
        let ok = match entry.split_once(':') {
            Some(("provider" | "mcp", name)) => valid_name(name),
            // An IPv6 literal in brackets is a host too.
            _ if entry.starts_with('[') && entry.ends_with(']') => entry[1..entry.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok(),
            Some(_) => false,
            None => valid_host(entry.strip_prefix("*.").unwrap_or(&entry)),
        };
        if !ok {
            return Err(format!(
                "binding[{i}] {raw:?} is neither provider:<name>, mcp:<name> nor a host \
                 (api.example.com, *.example.com)"
            ));
        }
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

/// Whether a secret written by `writer`, with `binding` (`None`: unbound), may be injected
/// into `dest`.
pub fn permits(binding: Option<&[String]>, writer: Role, dest: &Destination) -> bool {
    // A name cannot say where its destination points: only a destination written by at
    // least the secret's writer is trusted by name (or, unbound, at all).
    let trusted = dest.written_by >= writer;
    let Some(entries) = binding else {
        return trusted;
    };
    let host = dest.host.to_ascii_lowercase();
    entries.iter().any(|e| match e.split_once(':') {
        Some((kind, name)) if !e.starts_with('[') => {
            trusted && kind == dest.kind.as_str() && name == dest.name
        }
        _ => match e.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => *e == host || e.trim_matches(['[', ']']) == host.trim_matches(['[', ']']),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(kind: DestinationKind, name: &str, host: &str, by: Role) -> Destination {
        Destination {
            kind,
            name: name.into(),
            host: host.into(),
            written_by: by,
        }
    }

    #[test]
    fn bindings_are_checked_and_normalised() {
        let ok = parse_binding(&[
            "Provider:openai".into(),
            "mcp:crm".into(),
            "API.example.com".into(),
            "*.corp.example".into(),
            "127.0.0.1".into(),
            "[::1]".into(),
            "mcp:crm".into(),
        ])
        .unwrap();
        assert_eq!(
            ok,
            [
                "provider:openai",
                "mcp:crm",
                "api.example.com",
                "*.corp.example",
                "127.0.0.1",
                "[::1]"
            ]
        );
        for bad in [
            "",
            "webhook:x",
            "mcp:",
            "a..b",
            "http://x",
            "x/y",
            "*.",
            "mcp:A B",
        ] {
            assert!(parse_binding(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_binding(&[]).is_err());
    }

    #[test]
    fn names_trust_only_destinations_written_by_the_writers_role_hosts_pin_the_host() {
        use DestinationKind::*;
        let evil_by_dev = dest(Mcp, "crm", "evil.example", Role::Developer);
        let crm_by_admin = dest(Mcp, "crm", "crm.example", Role::Admin);
        let provider = dest(Provider, "openai", "api.openai.com", Role::Admin);
        let by_name: Vec<String> = vec!["mcp:crm".into(), "provider:openai".into()];
        // Unbound: by role alone.
        assert!(!permits(None, Role::Admin, &evil_by_dev));
        assert!(permits(None, Role::Developer, &evil_by_dev));
        assert!(permits(None, Role::Admin, &crm_by_admin));
        // By name: the role rule still holds, and the name must match.
        assert!(!permits(Some(&by_name), Role::Admin, &evil_by_dev));
        assert!(permits(Some(&by_name), Role::Admin, &crm_by_admin));
        assert!(permits(Some(&by_name), Role::Admin, &provider));
        let provider_only: Vec<String> = vec!["provider:openai".into()];
        assert!(!permits(Some(&provider_only), Role::Admin, &crm_by_admin));
        assert!(!permits(
            Some(&provider_only),
            Role::Developer,
            &evil_by_dev
        ));
        // By host: whoever wrote the destination, only that host.
        let host: Vec<String> = vec!["crm.example".into(), "*.corp.example".into()];
        assert!(permits(
            Some(&host),
            Role::Admin,
            &dest(Mcp, "x", "crm.example", Role::Developer)
        ));
        assert!(!permits(Some(&host), Role::Admin, &evil_by_dev));
        assert!(permits(
            Some(&host),
            Role::Admin,
            &dest(Mcp, "x", "a.corp.example", Role::Developer)
        ));
        assert!(!permits(
            Some(&host),
            Role::Admin,
            &dest(Mcp, "x", "corp.example", Role::Developer)
        ));
        assert!(!permits(
            Some(&host),
            Role::Admin,
            &dest(Mcp, "x", "evilcorp.example", Role::Developer)
        ));
    }
}
