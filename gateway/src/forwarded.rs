//! Who the client is: the peer address, unless the peer is a trusted proxy
//! (`[gateway] trusted_proxies`), in which case the hops it reports in `Forwarded` (RFC 7239) or
//! `X-Forwarded-For` are believed as far back as they pass through trusted networks.
//!
//! The chain is read from the right (the hop nearest the gateway): each trusted address is
//! skipped, and the first untrusted one is the client. A hop that cannot be parsed ends the walk
//! at the proxy that reported it, so garbage never becomes a client address. From an untrusted
//! peer, both headers are dropped before the request goes on: an upstream then sees only what the
//! gateway vouches for.

use std::net::{IpAddr, SocketAddr};

use http::header::{FORWARDED, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The longest text of an address (an IPv6 address ending in an IPv4 one).
const IP_TEXT_MAX: usize = 45;

/// An address written out on the stack, as `Display` writes it, for the keys and headers every
/// request needs it in: `Ipv4Addr`'s `Display` costs a few thousand instructions and a `String`.
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; IP_TEXT_MAX],
    len: usize,
}

impl IpText {
    #[must_use]
    pub fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            buf: [0; IP_TEXT_MAX],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write as _;
                // Always fits: IP_TEXT_MAX is the longest form.
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address (the whole address).
    ///
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let base: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a network"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { base, prefix })
    }

    /// Whether `ip` lies in the block; an IPv4-mapped IPv6 address counts as its IPv4 one.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => same_prefix(
                u128::from(base.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(base), IpAddr::V6(ip)) => same_prefix(base.to_bits(), ip.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let shift = width - prefix;
    shift >= width || (a >> shift) == (b >> shift)
}

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// # Errors
    /// The index and problem of the first entry that is not a network.
    pub fn parse(entries: &[String]) -> Result<Self, (usize, String)> {
        let networks = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Network::parse(e).map_err(|m| (i, m)))
            .collect::<Result<_, _>>()?;
        Ok(Self { networks })
    }

    #[must_use]
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client's address, as the module docs describe.
    #[must_use]
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = if headers.contains_key(FORWARDED) {
            forwarded_for(headers).collect()
        } else {
            list(headers, &X_FORWARDED_FOR).collect()
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }

    /// Sets the forwarding headers for the upstream: `X-Forwarded-For` is the chain a trusted
    /// peer reported plus the peer, or only the peer; `Forwarded` passes from a trusted peer only.
    pub fn rewrite(&self, headers: &mut HeaderMap, peer: SocketAddr) {
        // Written once into the buffer the header then owns.
        let mut chain = String::with_capacity(IP_TEXT_MAX);
        if self.trusts(peer.ip()) {
            for hop in list(headers, &X_FORWARDED_FOR) {
                chain.push_str(hop);
                chain.push_str(", ");
            }
        } else {
            headers.remove(FORWARDED);
        }
        chain.push_str(IpText::new(peer.ip()).as_str());
        if let Ok(value) = HeaderValue::try_from(chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
}

/// The comma-separated elements of every `name` header, in order.
fn list<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// The `for=` value of every `Forwarded` element; an element without one yields "" (unparseable).
fn forwarded_for(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    list(headers, &FORWARDED).map(|element| {
        element
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
            .map_or("", |(_, v)| v.trim())
    })
}

/// An address from a hop: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:80"`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        let mut addresses: Vec<IpAddr> = [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "::",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        addresses.extend((0..=255u8).map(|b| IpAddr::from([b, 255 - b, b / 3, b.wrapping_mul(7)])));
        for ip in addresses {
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&networks.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.1")));
        assert!(
            Network::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        assert!(!Network::parse("2001:db8::/32").unwrap().contains(ip("10.1.0.1")));
        assert!(Network::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("ten/8").is_err());
        assert_eq!(
            TrustedProxies::parse(&["10.0.0.0/8".into(), "x".into()])
                .unwrap_err()
                .0,
            1
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=198.51.100.1"),
        ]);
        assert_eq!(proxies.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_chain_is_walked_back_to_the_first_untrusted_hop() {
        let proxies = trusted(&["10.0.0.0/8"]);
        // The client forged the first entry; the chain's untrusted hop nearest us is the client.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        let all_trusted = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &all_trusted), ip("10.9.9.9"));
        assert_eq!(proxies.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_is_preferred_and_its_quoted_forms_parse() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.9"),
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3:80;by=10.0.0.1",
            ),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("2001:db8::7"));
    }

    #[test]
    fn an_unparseable_hop_stops_at_the_proxy_that_reported_it() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, unknown, 10.0.0.2")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("10.0.0.2"));
        let obfuscated = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &obfuscated), ip("10.0.0.1"));
    }

    #[test]
    fn the_upstream_sees_a_chain_only_from_a_trusted_peer() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        proxies.rewrite(&mut h, "10.0.0.1:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert!(h.contains_key(FORWARDED));

        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        proxies.rewrite(&mut h, "192.0.2.1:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert!(!h.contains_key(FORWARDED));
    }
}
