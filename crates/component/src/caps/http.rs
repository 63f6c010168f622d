//! `http`: outgoing requests, only to the origins the manifest's `[component]
//! allowed_hosts` lists. The check is made here, inside the host function, on the parsed
//! URL, before the caller's host (which sends through the egress guard, so an allowed name
//! that resolves to a private address is still refused) is asked.

use crate::bindings::http;
use crate::host::{HttpError, HttpRequest};
use crate::state::State;

/// The origins a component may call. An entry is `scheme://host[:port][/path]`: the scheme,
/// host and port (the scheme's default when absent) must match exactly; a host written
/// `*.example.com` matches its subdomains (not `example.com` itself); a path other than `/`
/// is a prefix the request's path must start with, at a segment boundary. Entries that do
/// not parse match nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: String,
    /// Lower case; for a wildcard, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
    /// Without a trailing `/`; empty for the whole origin.
    path: String,
}

impl AllowedHosts {
    pub fn new(entries: &[String]) -> AllowedHosts {
        AllowedHosts {
            entries: entries.iter().filter_map(|e| parse_entry(e)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request to `url` is allowed.
    pub fn allows(&self, url: &url::Url) -> bool {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|e| {
            e.scheme == url.scheme()
                && e.port == port
                && if e.wildcard {
                    host.len() > e.host.len() + 1
                        && host.ends_with(&e.host)
                        && host[..host.len() - e.host.len()].ends_with('.')
                } else {
                    host == e.host
                }
                && (e.path.is_empty()
                    || url.path() == e.path
                    || url
                        .path()
                        .strip_prefix(&e.path)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }
}

fn parse_entry(raw: &str) -> Option<Entry> {
    let raw = raw.trim();
    let (wildcard, text) = match raw.split_once("://*.") {
        Some((scheme, rest)) => (true, format!("{scheme}://{rest}")),
        None => (false, raw.to_owned()),
    };
    let url = url::Url::parse(&text).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return None;
    }
    Some(Entry {
        scheme: url.scheme().to_owned(),
        host: url.host_str()?.to_ascii_lowercase(),
        wildcard,
        port: url.port_or_known_default()?,
        path: url.path().trim_end_matches('/').to_owned(),
    })
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers the HTTP client sets itself: a component setting `host` could reach another
/// virtual host behind an allowed address.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// The request, checked: well-formed, within size, and to an allowed origin.
pub(crate) fn check_request(
    allowed: &AllowedHosts,
    max_body: usize,
    r: http::Request,
) -> Result<HttpRequest, http::HttpError> {
    let method = r.method.to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(http::HttpError::Invalid(format!(
            "method '{}' is not one of {}",
            r.method,
            METHODS.join(", ")
        )));
    }
    let url = url::Url::parse(&r.url)
        .map_err(|e| http::HttpError::Invalid(format!("'{}' is not a URL: {e}", r.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(http::HttpError::Invalid(format!(
            "'{}' is not an http(s) URL",
            r.url
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(http::HttpError::Invalid(
            "credentials in the URL are not allowed".into(),
        ));
    }
    if !allowed.allows(&url) {
        return Err(http::HttpError::Denied(format!(
            "{} is not in the manifest's allowed_hosts",
            url.origin().ascii_serialization()
        )));
    }
    for (name, value) in &r.headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(http::HttpError::Invalid(format!(
                "header '{name}' is set by the platform"
            )));
        }
        let bad = |c: char| c.is_control() && c != '\t';
        if name.is_empty() || name.contains(|c: char| bad(c) || c == ':' || c == ' ') {
            return Err(http::HttpError::Invalid(format!(
                "'{name}' is not a header name"
            )));
        }
        if value.contains(bad) {
            return Err(http::HttpError::Invalid(format!(
                "header '{name}' has control characters"
            )));
        }
    }
    if r.body.len() > max_body {
        return Err(http::HttpError::Invalid(format!(
            "the body is larger than {max_body} bytes"
        )));
    }
    Ok(HttpRequest {
        method,
        url,
        headers: r.headers,
        body: r.body,
    })
}

impl http::Host for State {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let max = self.caps.max_http_body_bytes;
        let request = check_request(&self.grants.allowed_hosts, max, request)?;
        let response = self.host.http(request).await.map_err(|e| match e {
            HttpError::Denied(m) => http::HttpError::Denied(m),
            HttpError::Failed(m) => http::HttpError::Failed(m),
        })?;
        if response.body.len() > max {
            return Err(http::HttpError::Failed(format!(
                "the response is larger than {max} bytes"
            )));
        }
        Ok(http::Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::new(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    fn ok(a: &AllowedHosts, url: &str) -> bool {
        a.allows(&url::Url::parse(url).unwrap())
    }

    fn get(url: &str) -> http::Request {
        http::Request {
            method: "get".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    #[test]
    fn no_permission_no_request() {
        let none = AllowedHosts::default();
        assert!(none.is_empty());
        assert!(!ok(&none, "https://api.example.com/"));
        assert!(matches!(
            check_request(&none, 1024, get("https://api.example.com/")),
            Err(http::HttpError::Denied(_))
        ));
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let a = allowed(&["https://api.example.com", "http://localhost:8080"]);
        assert!(ok(&a, "https://api.example.com/v1/x?q=1"));
        assert!(ok(&a, "https://API.example.com:443/"));
        assert!(!ok(&a, "http://api.example.com/"), "scheme");
        assert!(!ok(&a, "https://api.example.com:8443/"), "port");
        assert!(!ok(&a, "https://api.example.com.evil.net/"), "suffix");
        assert!(!ok(&a, "https://evil.net/?https://api.example.com"));
        assert!(ok(&a, "http://localhost:8080/"));
        assert!(!ok(&a, "http://localhost/"));
    }

    #[test]
    fn wildcards_and_paths() {
        let a = allowed(&["https://*.example.com", "https://hooks.test/v1/"]);
        assert!(ok(&a, "https://a.example.com/"));
        assert!(ok(&a, "https://a.b.example.com/"));
        assert!(!ok(&a, "https://example.com/"));
        assert!(!ok(&a, "https://badexample.com/"));
        assert!(ok(&a, "https://hooks.test/v1"));
        assert!(ok(&a, "https://hooks.test/v1/send"));
        assert!(!ok(&a, "https://hooks.test/v10"));
        assert!(!ok(&a, "https://hooks.test/v1/../admin"), "normalised away");
        assert!(!ok(&a, "https://hooks.test/"));
        let bad = allowed(&["ftp://x.test", "https://u:p@x.test", "not a url"]);
        assert!(bad.is_empty());
    }

    #[test]
    fn requests_are_checked() {
        let a = allowed(&["https://api.example.com"]);
        let r = check_request(&a, 10, get("https://api.example.com/x")).unwrap();
        assert_eq!(r.method, "GET");
        let mut bad = get("https://api.example.com/");
        bad.method = "TRACE".into();
        assert!(matches!(
            check_request(&a, 10, bad),
            Err(http::HttpError::Invalid(_))
        ));
        let mut bad = get("https://api.example.com/");
        bad.headers.push(("Host".into(), "internal".into()));
        assert!(matches!(
            check_request(&a, 10, bad),
            Err(http::HttpError::Invalid(_))
        ));
        let mut bad = get("https://api.example.com/");
        bad.body = vec![0; 11];
        assert!(matches!(
            check_request(&a, 10, bad),
            Err(http::HttpError::Invalid(_))
        ));
        assert!(matches!(
            check_request(&a, 10, get("https://user:pw@api.example.com/")),
            Err(http::HttpError::Invalid(_))
        ));
        assert!(matches!(
            check_request(&a, 10, get("file:///etc/passwd")),
            Err(http::HttpError::Invalid(_))
        ));
    }
}
