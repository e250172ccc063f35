//! Who a request comes from, for the limits. Behind a reverse proxy every request arrives from
//! the proxy's address, so the client is taken from `X-Forwarded-For` (or `Forwarded`), but
//! only when the peer is a proxy the operator trusts: anyone else could write any address
//! there, and choose whose budget their failures are charged to.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;
use forwarded_header_value::ForwardedStanza;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// What the limits count by: an IPv4 address, or an IPv6 address's /64, which one host
/// usually holds whole and can hop around in at will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & (u128::MAX << 64);
                    ClientKey(IpAddr::V6(Ipv6Addr::from(network)))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[derive(Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Whether the hint to set `HOOKD_TRUSTED_PROXIES` was logged.
    hinted: AtomicBool,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies {
            nets,
            hinted: AtomicBool::new(false),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer`: the right-most forwarded address that is not a
    /// trusted proxy (the ones further left are the client's to write), or the peer itself.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientKey {
        let peer = peer.ip();
        if !self.trusts(peer) {
            if headers.contains_key(X_FORWARDED_FOR) && !self.hinted.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %peer,
                    "X-Forwarded-For from a peer that is not a trusted proxy is ignored; \
                     if it is your reverse proxy, add it to HOOKD_TRUSTED_PROXIES"
                );
            }
            return ClientKey::of(peer);
        }
        // Proxies append, so the right end is the nearest hop. X-Forwarded-For is what
        // common proxies write by default; `Forwarded` counts when there is none.
        let hops: Vec<Option<IpAddr>> = if headers.contains_key(X_FORWARDED_FOR) {
            values(headers, X_FORWARDED_FOR)
                .map(|hop| forwarded_for(hop.trim_matches('"')))
                .collect()
        } else {
            values(headers, FORWARDED.as_str())
                .map(|hop| {
                    hop.parse::<ForwardedStanza>()
                        .ok()
                        .and_then(|s| s.forwarded_for_ip())
                })
                .collect()
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.trusts(ip) => client = ip,
                Some(ip) => return ClientKey::of(ip),
                // Unreadable: the hops left of it are no more believable than it is.
                None => break,
            }
        }
        ClientKey::of(client)
    }
}

/// The comma-separated entries of every line of the header `name`, in order.
fn values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
}

/// An `X-Forwarded-For` entry: an address, with a port as some proxies add it.
fn forwarded_for(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
}

/// IPv4 peers of a dual-stack socket arrive as `::ffff:a.b.c.d`; ranges are written in IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn key(ip: &str) -> ClientKey {
        ClientKey::of(ip.parse().unwrap())
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = proxies(&["10.0.0.0/8", "::1/128"]);
        let forged = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            trusted.client(peer("198.51.100.7"), &forged),
            key("198.51.100.7")
        );
        assert_eq!(
            trusted.client(peer("10.1.2.3"), &forged),
            key("203.0.113.9")
        );
        assert_eq!(trusted.client(peer("::1"), &forged), key("203.0.113.9"));
        assert_eq!(
            proxies(&[]).client(peer("10.1.2.3"), &forged),
            key("10.1.2.3")
        );
    }

    #[test]
    fn the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client wrote the first entry itself; the proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(trusted.client(peer("10.0.0.1"), &chain), key("203.0.113.9"));
        let lines = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9:5555"),
        ]);
        assert_eq!(trusted.client(peer("10.0.0.1"), &lines), key("203.0.113.9"));
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, not-an-address")]);
        assert_eq!(trusted.client(peer("10.0.0.1"), &garbage), key("10.0.0.1"));
        let only_proxies = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &only_proxies),
            key("10.9.9.9")
        );
    }

    #[test]
    fn the_forwarded_header_counts_when_there_is_no_x_forwarded_for() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &forwarded),
            key("2001:db8:cafe::1")
        );
        let both = headers(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(trusted.client(peer("10.0.0.1"), &both), key("203.0.113.9"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        let trusted = proxies(&["127.0.0.0/8"]);
        assert_eq!(
            trusted.client(
                peer("::ffff:127.0.0.1"),
                &headers(&[("x-forwarded-for", "192.0.2.1")])
            ),
            key("192.0.2.1")
        );
    }
}
