//! Where the agent fetches from (review item 1, SSRF). The agent fetches
//! as root from its host's network, so a task could aim it at services
//! only the host should reach: never link-local addresses (169.254.0.0/16
//! with the cloud metadata service, fe80::/10), unspecified, multicast or
//! broadcast ones, and loopback (127.0.0.0/8, ::1) only with
//! `--artifact-allow-loopback`. The check is on the addresses actually
//! connected to: a resolver ([`Resolver`]) drops refused ones, and hosts
//! that are IP literals, which reqwest does not resolve, are checked on
//! the first URL and on every redirect ([`Policy::check_url`]).

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses may be fetched from.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `--artifact-allow-loopback`.
    pub allow_loopback: bool,
}

impl Policy {
    /// Why `ip` may not be fetched from, if it may not.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        let kind = kind(ip)?;
        if kind == "loopback" && self.allow_loopback {
            return None;
        }
        let hint = match kind {
            "loopback" => " without --artifact-allow-loopback",
            _ => "",
        };
        Some(format!(
            "{ip} is a {kind} address, which this agent does not fetch artifacts from{hint}"
        ))
    }

    /// Refuses a URL whose host is a refused IP literal (a name is checked
    /// once resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        // The URL's host, normalized (other spellings of an IPv4 address
        // already read as one), IPv6 in brackets.
        let host = url.host_str().unwrap_or("");
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.refuses(ip).map_or(Ok(()), Err),
            Err(_) => Ok(()),
        }
    }
}

/// The kind of address never fetched from (loopback only with the flag).
fn kind(ip: IpAddr) -> Option<&'static str> {
    // ::ffff:a.b.c.d reaches a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => Some("multicast or broadcast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast or broadcast"),
        _ => None,
    }
}

/// The system resolver, less the addresses the [`Policy`] refuses: a
/// name that resolves to none left fails with the reason.
#[derive(Debug)]
pub struct Resolver(pub Policy);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| match policy.refuses(a.ip()) {
                    None => true,
                    Some(reason) => {
                        why.get_or_insert(reason);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = why.unwrap_or_else(|| "no address".to_owned());
                return Err(format!("{host}: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_addresses() {
        let strict = Policy { allow_loopback: false };
        let loopback = Policy { allow_loopback: true };
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.3.2.1", Some("loopback")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("224.0.0.1", Some("multicast or broadcast")),
            ("255.255.255.255", Some("multicast or broadcast")),
            ("ff02::1", Some("multicast or broadcast")),
            ("10.1.2.3", None),
            ("192.168.1.1", None),
            ("8.8.8.8", None),
            ("2001:db8::1", None),
        ];
        for (ip, expected) in cases {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(kind(ip), expected, "{ip}");
            assert_eq!(strict.refuses(ip).is_some(), expected.is_some(), "{ip}");
            let refused = expected.is_some_and(|k| k != "loopback");
            assert_eq!(loopback.refuses(ip).is_some(), refused, "{ip} with loopback allowed");
        }
        let url = |u: &str| Url::parse(u).expect("a URL");
        assert!(strict.check_url(&url("http://127.0.0.1:8080/x")).is_err());
        assert!(strict.check_url(&url("http://[::1]/x")).is_err());
        // Other spellings of 127.0.0.1 are read as it.
        assert!(strict.check_url(&url("http://2130706433/x")).is_err());
        assert!(loopback.check_url(&url("http://127.0.0.1/x")).is_ok());
        assert!(loopback.check_url(&url("http://169.254.169.254/")).is_err());
        // Names are checked when resolved.
        assert!(strict.check_url(&url("http://localhost/x")).is_ok());
    }
}
