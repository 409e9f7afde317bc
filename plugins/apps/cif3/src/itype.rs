//! CIF indicator types (`itype`) and the form CIF stores values in.
//!
//! The Python Threat Bus left both to the CIF SDK (`csirtg_indicator` 1.0.13): it guesses the
//! type from the value alone, trying in turn URL, hash, IPv4, IPv6, e-mail address and domain
//! name, and drops what fits none. [`detect`] follows the same order and rules, written by hand;
//! where the SDK's rules let non-addresses through (an IPv4 address with a last octet of 999, an
//! IPv6 zone index) we are stricter. [`normalize`] then writes the value as the SDK would send
//! it: lower case (URLs keep the case of host, path and query), IPv4 octets without leading
//! zeros, URLs re-assembled without empty `?`/`#` and trailing slashes.

use std::fmt;
use std::net::Ipv6Addr;

/// A CIFv3 indicator type, as far as the bus can produce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Itype {
    Ipv4,
    Ipv6,
    Fqdn,
    Url,
    Email,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Itype {
    /// The name CIF uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Fqdn => "fqdn",
            Self::Url => "url",
            Self::Email => "email",
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Itype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type CIF gives `value`, decided as the SDK does (URL, hash, IPv4, IPv6, e-mail, domain
/// name, first match wins, on the lower-cased value); `None` if CIF has no type for it.
pub fn detect(value: &str) -> Option<Itype> {
    let value = value.to_lowercase();
    let value = value.as_str();
    if is_url(value) {
        Some(Itype::Url)
    } else if let Some(hash) = hash_type(value) {
        Some(hash)
    } else if is_ipv4(value) || is_ipv4_network(value) {
        Some(Itype::Ipv4)
    } else if is_ipv6(value) || is_ipv6_network(value) {
        Some(Itype::Ipv6)
    } else if is_email(value) {
        Some(Itype::Email)
    } else if is_fqdn(value) {
        Some(Itype::Fqdn)
    } else {
        None
    }
}

/// `value` (of type `itype`, see [`detect`]) as CIF is sent it.
pub fn normalize(value: &str, itype: Itype) -> String {
    match itype {
        Itype::Url => match UrlParts::split(value) {
            Some(url) => url.assemble(),
            None => value.to_owned(),
        },
        Itype::Ipv4 => strip_octet_zeros(&value.to_lowercase()),
        _ => value.to_lowercase(),
    }
}

// ----- hashes

fn hash_type(value: &str) -> Option<Itype> {
    if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match value.len() {
        32 => Some(Itype::Md5),
        40 => Some(Itype::Sha1),
        64 => Some(Itype::Sha256),
        128 => Some(Itype::Sha512),
        _ => None,
    }
}

// ----- IP addresses and networks

/// The four octets of a dotted quad; each 1 to 3 digits (leading zeros allowed, as the SDK
/// allows them) and at most 255.
fn ipv4_octets(value: &str) -> Option<[u8; 4]> {
    let mut octets = [0u8; 4];
    let mut parts = value.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(octets)
}

fn is_ipv4(value: &str) -> bool {
    ipv4_octets(value).is_some()
}

/// A CIDR prefix length: one or two digits (IPv4) or up to three (IPv6), at most `max`.
fn prefix_length(text: &str, max_digits: usize, max: u32) -> Option<u32> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|length| *length <= max)
}

/// `a.b.c.d/n` naming a network: no leading zeros in the address, no host bits set.
fn is_ipv4_network(value: &str) -> bool {
    let Some((address, prefix)) = value.split_once('/') else {
        return false;
    };
    let (Some(octets), Some(length)) = (ipv4_octets(address), prefix_length(prefix, 2, 32)) else {
        return false;
    };
    let no_leading_zeros = address
        .split('.')
        .all(|part| part == "0" || !part.starts_with('0'));
    let host_bits = u32::MAX.checked_shr(length).unwrap_or(0);
    no_leading_zeros && u32::from_be_bytes(octets) & host_bits == 0
}

fn is_ipv6(value: &str) -> bool {
    value.parse::<Ipv6Addr>().is_ok()
}

/// `address/n` naming an IPv6 network: no host bits set.
fn is_ipv6_network(value: &str) -> bool {
    let Some((address, prefix)) = value.split_once('/') else {
        return false;
    };
    let (Ok(address), Some(length)) = (address.parse::<Ipv6Addr>(), prefix_length(prefix, 3, 128))
    else {
        return false;
    };
    let host_bits = u128::MAX.checked_shr(length).unwrap_or(0);
    u128::from(address) & host_bits == 0
}

/// Drops leading zeros of IPv4 octets (`010.001.000.001` → `10.1.0.1`).
fn strip_octet_zeros(value: &str) -> String {
    match ipv4_octets(value) {
        Some([a, b, c, d]) => format!("{a}.{b}.{c}.{d}"),
        None => value.to_owned(),
    }
}

// ----- e-mail addresses

/// `local@domain`: the local part of letters, digits and ``-+.!#$%&'*/=?^_`{|}~;``; the domain
/// of ASCII letters, digits, `-` and `.`, ending in at least two letters.
fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "-+.!#$%&'*/=?^_`{|}~;".contains(c));
    let domain_bytes = domain.as_bytes();
    let domain_ok = domain_bytes.len() >= 3
        && domain_bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && domain_bytes[domain_bytes.len() - 2..]
            .iter()
            .all(u8::is_ascii_alphabetic);
    local_ok && domain_ok
}

// ----- domain names

/// A domain name as the SDK's pattern describes it (on lower-case text): a head of letters,
/// digits, `-`, `_` and `.` starting with a letter or digit, then either a last label of
/// letters, digits and `-` (up to 61, after an optional `xn--`), or a label of up to 30 such
/// characters followed by a dot and at least two letters.
fn is_fqdn(value: &str) -> bool {
    let Some(last_dot) = value.rfind('.') else {
        return false;
    };
    let (head, tail) = (&value[..last_dot], &value[last_dot + 1..]);
    if fqdn_head(head) && label(tail, 61) {
        return true;
    }
    match head.rfind('.') {
        Some(dot) => {
            fqdn_head(&head[..dot])
                && label(&head[dot + 1..], 30)
                && tail.len() >= 2
                && tail.bytes().all(|b| b.is_ascii_lowercase())
        }
        None => false,
    }
}

/// The part before the last label(s): 1 to 247 characters.
fn fqdn_head(head: &str) -> bool {
    let bytes = head.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    alnum(first)
        && rest
            .iter()
            .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        && (bytes.len() <= 246 || (bytes.len() == 247 && bytes.last().is_some_and(alnum)))
}

/// Letters, digits and `-`, 1 to `max` of them after an optional `xn--`.
fn label(text: &str, max: usize) -> bool {
    let ok = |t: &str| {
        (1..=max).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    ok(text) || text.strip_prefix("xn--").is_some_and(ok)
}

// ----- URLs

/// A URL cut into its parts the way Python's `urllib.parse.urlsplit` cuts it, for URLs with a
/// `//` authority (the only ones CIF takes).
#[derive(Debug, PartialEq, Eq)]
struct UrlParts {
    /// Lower case.
    scheme: String,
    netloc: String,
    path: String,
    query: String,
    fragment: String,
}

impl UrlParts {
    fn split(value: &str) -> Option<Self> {
        // Python drops leading control characters and spaces, and tabs and line breaks anywhere.
        let cleaned: String = value
            .trim_start_matches(|c: char| c <= ' ')
            .chars()
            .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
            .collect();
        let (scheme, rest) = cleaned.split_once(':')?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return None;
        }
        let rest = rest.strip_prefix("//")?;
        let netloc_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (netloc, rest) = rest.split_at(netloc_end);
        // Python refuses unbalanced brackets ("Invalid IPv6 URL").
        if netloc.contains('[') != netloc.contains(']') {
            return None;
        }
        let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            netloc: netloc.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            fragment: fragment.to_owned(),
        })
    }

    /// The host: after any `user:password@`, inside `[…]` or before a `:port`; lower case.
    fn host(&self) -> Option<String> {
        let host_and_port = self
            .netloc
            .rsplit_once('@')
            .map_or(self.netloc.as_str(), |(_, host)| host);
        let host = match host_and_port.split_once('[') {
            Some((_, bracketed)) => bracketed.split_once(']').map_or(bracketed, |(h, _)| h),
            None => host_and_port
                .split_once(':')
                .map_or(host_and_port, |(h, _)| h),
        };
        (!host.is_empty()).then(|| host.to_lowercase())
    }

    /// Put back together as Python's `geturl()` does (an empty query or fragment is left out),
    /// without trailing slashes.
    fn assemble(&self) -> String {
        let mut url = format!("{}://{}{}", self.scheme, self.netloc, self.path);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(&self.query);
        }
        if !self.fragment.is_empty() {
            url.push('#');
            url.push_str(&self.fragment);
        }
        url.trim_end_matches('/').to_owned()
    }
}

/// An `http`, `https` or `ftp` URL whose host is an IP address or a domain name.
fn is_url(value: &str) -> bool {
    let Some(url) = UrlParts::split(value) else {
        return false;
    };
    if !matches!(url.scheme.as_str(), "http" | "https" | "ftp") {
        return false;
    }
    url.host()
        .is_some_and(|host| is_ipv6(&host) || is_fqdn(&host) || is_ipv4(&host))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Value → (itype, value sent), as `csirtg_indicator` 1.0.13 answers (checked with the
    /// package), except where marked as a deliberate difference.
    #[test]
    fn detection_and_normalisation_agree_with_the_sdk() {
        let cases: &[(&str, Option<Itype>, &str)] = &[
            ("1.2.3.4", Some(Itype::Ipv4), "1.2.3.4"),
            ("010.001.000.001", Some(Itype::Ipv4), "10.1.0.1"),
            ("10.0.0.0/8", Some(Itype::Ipv4), "10.0.0.0/8"),
            ("0.0.0.0/0", Some(Itype::Ipv4), "0.0.0.0/0"),
            ("::1", Some(Itype::Ipv6), "::1"),
            ("2001:DB8::1", Some(Itype::Ipv6), "2001:db8::1"),
            ("2001:db8::/32", Some(Itype::Ipv6), "2001:db8::/32"),
            ("::ffff:1.2.3.4", Some(Itype::Ipv6), "::ffff:1.2.3.4"),
            ("Evil.COM", Some(Itype::Fqdn), "evil.com"),
            ("xn--bcher-kva.de", Some(Itype::Fqdn), "xn--bcher-kva.de"),
            ("a_b.example.com", Some(Itype::Fqdn), "a_b.example.com"),
            ("a.b", Some(Itype::Fqdn), "a.b"),
            ("a.1", Some(Itype::Fqdn), "a.1"),
            ("1.2.3", Some(Itype::Fqdn), "1.2.3"),
            ("a..com", Some(Itype::Fqdn), "a..com"),
            ("a.b.c.d.e", Some(Itype::Fqdn), "a.b.c.d.e"),
            ("a.b-c", Some(Itype::Fqdn), "a.b-c"),
            ("sub.a.b.cd", Some(Itype::Fqdn), "sub.a.b.cd"),
            ("256.1.1.1", Some(Itype::Fqdn), "256.1.1.1"),
            ("A@B.COM", Some(Itype::Email), "a@b.com"),
            (
                "a.b+c@ex-ample.org",
                Some(Itype::Email),
                "a.b+c@ex-ample.org",
            ),
            (
                "ümlaut@example.com",
                Some(Itype::Email),
                "ümlaut@example.com",
            ),
            (
                "user;x@example.com",
                Some(Itype::Email),
                "user;x@example.com",
            ),
            (
                "HTTP://Evil.com/Path/",
                Some(Itype::Url),
                "http://Evil.com/Path",
            ),
            ("http://evil.com/", Some(Itype::Url), "http://evil.com"),
            ("http://evil.com", Some(Itype::Url), "http://evil.com"),
            ("http://evil.com/?", Some(Itype::Url), "http://evil.com"),
            ("http://evil.com/#", Some(Itype::Url), "http://evil.com"),
            (
                "http://evil.com/a?b=1#f",
                Some(Itype::Url),
                "http://evil.com/a?b=1#f",
            ),
            (
                "https://1.2.3.4:8080/x",
                Some(Itype::Url),
                "https://1.2.3.4:8080/x",
            ),
            ("http://[::1]/x", Some(Itype::Url), "http://[::1]/x"),
            (
                "ftp://ftp.example.org/pub//",
                Some(Itype::Url),
                "ftp://ftp.example.org/pub",
            ),
            (
                "http://user:pw@Evil.com/",
                Some(Itype::Url),
                "http://user:pw@Evil.com",
            ),
            (
                "http://evil.com/a b",
                Some(Itype::Url),
                "http://evil.com/a b",
            ),
            (
                "D41D8CD98F00B204E9800998ECF8427E",
                Some(Itype::Md5),
                "d41d8cd98f00b204e9800998ecf8427e",
            ),
            (
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                Some(Itype::Sha1),
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                Some(Itype::Sha256),
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (value, itype, sent) in cases {
            assert_eq!(detect(value), *itype, "{value}");
            if let Some(itype) = itype {
                assert_eq!(normalize(value, *itype), *sent, "{value}");
            }
        }
    }

    #[test]
    fn values_cif_cannot_type() {
        for value in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "010.0.0.0/8",
            "2001:db8::1/32",
            "evil.com.",
            "-a.com",
            "localhost",
            "bücher.de",
            "a.b_c",
            "a@b.c",
            "a@1.2.3.4",
            "a@b@c.com",
            "http://localhost/x",
            "evil.com/path",
            "gopher://evil.com",
            "http:///path",
            "http:evil.com",
            "http://[::1/x",
            "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C",
            "8d96a1c0-9fbd-4a6b-a5a5-2f6e5b0ddc3e",
            "",
            // The SDK takes this one as IPv6; a zone index names a local interface.
            "fe80::1%eth0",
        ] {
            assert_eq!(detect(value), None, "{value}");
        }
        // The SDK takes this as IPv4 (its pattern allows any last octet up to 999); it reads
        // as a domain name here ("999" as the last label), as "256.1.1.1" does for the SDK,
        // so an ipv4-addr path does not take it.
        assert_eq!(detect("1.2.3.999"), Some(Itype::Fqdn));
    }

    #[test]
    fn domain_name_edges() {
        let long_head = "a".repeat(246);
        assert!(is_fqdn(&format!("{long_head}.com")));
        assert!(is_fqdn(&format!("{long_head}b.com")));
        assert!(!is_fqdn(&format!("{long_head}bc.com")));
        assert!(!is_fqdn(&format!("{}-.com", "a".repeat(246))));
        assert!(is_fqdn(&format!("a.{}", "b".repeat(61))));
        assert!(!is_fqdn(&format!("a.{}", "b".repeat(62))));
        assert!(is_fqdn(&format!("a.xn--{}", "b".repeat(61))));
        assert!(is_fqdn(&format!("a.{}.uk", "b".repeat(30))));
        assert!(is_fqdn("a.co.uk"));
        assert!(!is_fqdn("a.b.c_"));
        assert!(!is_fqdn(".com"));
    }

    #[test]
    fn networks_need_clear_host_bits() {
        assert!(is_ipv4_network("192.168.0.0/16"));
        assert!(!is_ipv4_network("192.168.0.1/16"));
        assert!(is_ipv4_network("192.168.0.1/32"));
        assert!(!is_ipv4_network("192.168.0.0/"));
        assert!(!is_ipv4_network("192.168.0.0/100"));
        assert!(is_ipv6_network("::/0"));
        assert!(is_ipv6_network("2001:db8::1/128"));
        assert!(!is_ipv6_network("2001:db8::/129"));
    }
}
