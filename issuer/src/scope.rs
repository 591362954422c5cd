//! Scope decisions (RFC 6749 section 3.3), as pure functions.

use std::collections::BTreeSet;

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`: printable ASCII except
/// space, `"` and `\`. One definition, shared with the SigilClient CRD.
pub use sigil_api::sigil_client::is_scope_token;

#[derive(Debug, PartialEq, Eq)]
pub enum ScopeError {
    Malformed,
    NotAllowed(String),
}

/// The scopes to grant. With no `scope` parameter the client gets everything it
/// may have (RFC 6749 allows a default); with one, every requested scope must
/// be allowed, or the request fails rather than quietly getting less.
/// `allowed` is the intersection of what the client and (for the password
/// grant) the user may have.
pub fn grant(requested: Option<&str>, allowed: &BTreeSet<String>) -> Result<BTreeSet<String>, ScopeError> {
    let Some(requested) = requested else {
        return Ok(allowed.clone());
    };
    // Scopes are separated by single spaces; anything else is malformed.
    let mut out = BTreeSet::new();
    for token in requested.split(' ') {
        if !is_scope_token(token) {
            return Err(ScopeError::Malformed);
        }
        if !allowed.contains(token) {
            return Err(ScopeError::NotAllowed(token.to_owned()));
        }
        out.insert(token.to_owned());
    }
    Ok(out)
}

/// The space-separated form used in responses and the `scope` claim.
pub fn join(scopes: &BTreeSet<String>) -> String {
    scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn table() {
        let allowed = set(&["a", "b", "c:write"]);
        assert_eq!(grant(None, &allowed), Ok(allowed.clone()));
        assert_eq!(grant(Some("b"), &allowed), Ok(set(&["b"])));
        assert_eq!(grant(Some("c:write a"), &allowed), Ok(set(&["a", "c:write"])));
        assert_eq!(grant(Some("a a"), &allowed), Ok(set(&["a"])));
        assert_eq!(grant(Some("a d"), &allowed), Err(ScopeError::NotAllowed("d".into())));
        assert_eq!(grant(Some("a  b"), &allowed), Err(ScopeError::Malformed));
        assert_eq!(grant(Some("a\"b"), &allowed), Err(ScopeError::Malformed));
        assert_eq!(grant(Some("é"), &allowed), Err(ScopeError::Malformed));
        assert_eq!(grant(Some("a"), &set(&[])), Err(ScopeError::NotAllowed("a".into())));
        assert_eq!(join(&set(&["b", "a"])), "a b");
    }

    #[test]
    fn scope_token_grammar() {
        for ok in ["a", "orders.read", "x:y/z", "!", "~"] {
            assert!(is_scope_token(ok), "{ok}");
        }
        for bad in ["", " ", "a b", "\"", "\\", "\u{7f}", "ü"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
