//! The egress guard: tenant-supplied destinations (BYOK base URLs, MCP servers, component
//! HTTP) may reach public addresses only, plus the CIDRs the operator allows.
//!
//! The check happens twice: on the URL when it is registered (literal IPs, scheme), and on
//! every connection through a DNS resolver that drops forbidden addresses, so a name that
//! later re-resolves to `127.0.0.1` or `169.254.169.254` (DNS rebinding) still cannot reach
//! them.

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EgressError {
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    #[error("only http and https URLs are allowed, not {0:?}")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("destination {0} is not a public address and is not in egress.allow_private")]
    Forbidden(IpAddr),
    #[error("cannot resolve {0}")]
    Unresolvable(String),
}

#[derive(Debug, Clone, Default)]
pub struct EgressGuard {
    allow_private: Arc<Vec<IpNet>>,
}

impl EgressGuard {
    pub fn new(allow_private: Vec<IpNet>) -> Self {
        EgressGuard {
            allow_private: Arc::new(allow_private),
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allow_private.iter().any(|net| net.contains(&ip))
    }

    /// Checks the shape of a URL and any literal IP in it; names are checked at connect time.
    pub fn check_url(&self, raw: &str) -> Result<Url, EgressError> {
        let url = Url::parse(raw).map_err(|e| EgressError::InvalidUrl(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(EgressError::Scheme(other.to_owned())),
        }
        match url.host() {
            None => return Err(EgressError::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Checks a URL and every address its host resolves to now.
    pub async fn check_url_resolved(&self, raw: &str) -> Result<Url, EgressError> {
        let url = self.check_url(raw)?;
        if let Some(url::Host::Domain(host)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| EgressError::Unresolvable(host.to_owned()))?
                .collect();
            if addrs.is_empty() {
                return Err(EgressError::Unresolvable(host.to_owned()));
            }
            for a in addrs {
                self.check_ip(a.ip())?;
            }
        }
        Ok(url)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(EgressError::Forbidden(ip))
        }
    }

    /// An HTTP client whose every connection goes through this guard: names resolve only
    /// to permitted addresses, no proxy of the environment is used, and redirects are not
    /// followed (a redirect to a literal private IP would bypass the resolver).
    pub fn client(&self, timeout: Duration) -> reqwest::Client {
        self.builder().timeout(timeout).build().unwrap_or_default()
    }

    /// Like [`EgressGuard::client`], for callers that time each request themselves
    /// (long streams must not be cut by a whole-request timeout).
    pub fn client_without_timeout(&self) -> reqwest::Client {
        self.builder().build().unwrap_or_default()
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            // Never through a proxy from the environment (`HTTP_PROXY`, `HTTPS_PROXY`,
            // `ALL_PROXY`): the proxy would resolve and connect, and this guard's resolver
            // would check nothing. Tenant traffic goes direct, to checked addresses only.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
    }
}

struct GuardedResolver {
    guard: EgressGuard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match addrs.first() {
                    Some(a) => Box::new(EgressError::Forbidden(a.ip())),
                    None => Box::new(EgressError::Unresolvable(host)),
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Globally routable unicast addresses only.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata service
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local (includes fd00:ec2::254 metadata)
        || (seg[0] & 0xffc0) == 0xfe80 // link local
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64: may embed a private IPv4
        || seg[0] == 0x2002 // 6to4: may embed a private IPv4
        || ip.to_ipv4_mapped().is_some()
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        let g = EgressGuard::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(!g.permits(ip(bad)), "{bad} must be refused");
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(g.permits(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn allow_list_opens_exactly_its_ranges() {
        let g = EgressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(g.permits(ip("127.0.0.1")));
        assert!(g.permits(ip("::ffff:127.0.0.1")));
        assert!(!g.permits(ip("10.0.0.1")));
        assert!(!g.permits(ip("169.254.169.254")));
    }

    #[test]
    fn urls_are_checked_for_scheme_and_literal_hosts() {
        let g = EgressGuard::default();
        assert!(g.check_url("https://api.openai.com/v1").is_ok());
        assert!(matches!(
            g.check_url("file:///etc/passwd"),
            Err(EgressError::Scheme(_))
        ));
        assert!(matches!(
            g.check_url("http://169.254.169.254/latest"),
            Err(EgressError::Forbidden(_))
        ));
        assert!(matches!(
            g.check_url("http://[::1]:8080/"),
            Err(EgressError::Forbidden(_))
        ));
        assert!(matches!(
            g.check_url("http://2130706433/"),
            Err(EgressError::Forbidden(_))
        ));
        assert!(matches!(
            g.check_url("not a url"),
            Err(EgressError::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let g = EgressGuard::default();
        assert!(matches!(
            g.check_url_resolved("http://localhost:1/").await,
            Err(EgressError::Forbidden(_))
        ));
        // The client's resolver refuses too, even though the URL itself looks harmless.
        let err = g
            .client(Duration::from_secs(2))
            .get("http://localhost:1/")
            .send()
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("Forbidden(127.0.0.1)"),
            "{err:?}"
        );
    }
}
