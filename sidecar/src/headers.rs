//! Request headers the app can trust: what clients may not send is removed
//! or refused before anything is decided, and what the sidecar adds is added
//! last, whole.
//!
//! - `X-Sigil-*` in any case is removed from every request.
//! - A header name with `_` is refused (or, if configured, dropped): Rack,
//!   WSGI, CGI and PHP-FPM map `X_Sigil_Subject` and `X-Sigil-Subject` onto
//!   the same `HTTP_X_SIGIL_SUBJECT` (CVE-2024-45614).
//! - On an authenticated request every identity header is set, empty when the
//!   token lacks the claim, so a forged header can never stand in for a
//!   missing one; public requests carry none.
//! - `X-Forwarded-For`, `Forwarded`, `X-Real-IP` and the other forwarding
//!   headers are believed only from `--trusted-proxies`; from anyone else they
//!   are replaced by what the sidecar saw.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use sigil_runtime::client_ip::{self, Cidr};

use crate::auth::Identity;

pub const X_SIGIL_SUBJECT: HeaderName = HeaderName::from_static("x-sigil-subject");
/// `client` or `user`: which kind of caller `X-Sigil-Subject` names.
pub const X_SIGIL_SUBJECT_KIND: HeaderName = HeaderName::from_static("x-sigil-subject-kind");
pub const X_SIGIL_SCOPE: HeaderName = HeaderName::from_static("x-sigil-scope");
pub const X_SIGIL_CLIENT_ID: HeaderName = HeaderName::from_static("x-sigil-client-id");
pub const X_SIGIL_CLAIMS: HeaderName = HeaderName::from_static("x-sigil-claims");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Forwarding headers only a trusted proxy may set.
const FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
];

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What to do with a request header whose name contains `_`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Underscores {
    /// Refuse the request with 400.
    #[default]
    Reject,
    /// Remove the header and forward the rest.
    Drop,
}

/// A request header name the sidecar refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderscoreName;

/// Removes `X-Sigil-*` and underscore names, or refuses the request.
pub fn sanitize(headers: &mut HeaderMap, underscores: Underscores) -> Result<(), UnderscoreName> {
    let forbidden = |name: &HeaderName| name.as_str().starts_with("x-sigil-") || name.as_str().contains('_');
    // The common request has neither: look before allocating.
    if !headers.keys().any(forbidden) {
        return Ok(());
    }
    if underscores == Underscores::Reject && headers.keys().any(|n| n.as_str().contains('_')) {
        return Err(UnderscoreName);
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| forbidden(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
    Ok(())
}

/// The tokens of every `Connection` header.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Removes hop-by-hop headers, including those `Connection` names. Runs before
/// anything is added: a client listing `Connection: x-sigil-subject` must not
/// be able to delete what the sidecar adds.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers).filter_map(|t| HeaderName::try_from(t).ok()).collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Every identity header, always all of them.
pub fn insert_identity(headers: &mut HeaderMap, identity: &Identity) {
    headers.insert(X_SIGIL_SUBJECT, identity.subject.clone());
    headers.insert(X_SIGIL_SUBJECT_KIND, identity.subject_kind.clone());
    headers.insert(X_SIGIL_SCOPE, identity.scope.clone());
    headers.insert(X_SIGIL_CLIENT_ID, identity.client_id.clone());
    headers.insert(X_SIGIL_CLAIMS, identity.claims.clone());
}

/// States who connected: appended to a trusted proxy's chain, or in place of
/// whatever an untrusted peer claimed.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, trusted: &[Cidr]) {
    let ip = client_ip::canonical(peer).to_string();
    if client_ip::is_trusted(peer, trusted) {
        let prior: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        let value = if prior.is_empty() { ip } else { format!("{}, {ip}", prior.join(", ")) };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        return;
    }
    for name in FORWARDING {
        headers.remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&ip) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::try_from(*name).expect("name"), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn sigil_headers_go_in_every_case() {
        let mut h = headers(&[("X-Sigil-Subject", "admin"), ("x-SIGIL-scope", "admin"), ("x-sigil-", "x"), ("a", "1")]);
        sanitize(&mut h, Underscores::Reject).expect("no underscore");
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("a"));
    }

    #[test]
    fn underscore_names_are_refused_or_dropped() {
        for name in ["x_sigil_subject", "X_Sigil_Subject", "x-sigil_scope", "_", "user_agent"] {
            let mut h = headers(&[(name, "admin"), ("a", "1")]);
            assert_eq!(sanitize(&mut h, Underscores::Reject), Err(UnderscoreName), "{name}");
            sanitize(&mut h, Underscores::Drop).expect("drop");
            assert_eq!(h.len(), 1, "{name}");
        }
    }

    #[test]
    fn forwarding_headers_from_untrusted_peers_are_replaced() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let forged = [
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ];
        let mut h = headers(&forged);
        set_forwarded(&mut h, "192.0.2.1".parse().expect("ip"), &trusted);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        for gone in ["forwarded", "x-real-ip", "x-forwarded-host"] {
            assert!(!h.contains_key(gone), "{gone}");
        }

        let mut h = headers(&forged);
        set_forwarded(&mut h, "::ffff:10.1.2.3".parse().expect("ip"), &trusted);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
    }
}
