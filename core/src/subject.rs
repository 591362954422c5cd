//! The `sub` scheme of Sigil's tokens, shared by the issuer (which writes it)
//! and the sidecar (which tells the app which kind of caller it is).
//!
//! Clients and users are separate namespaces of the issuer's clients file, so
//! a client and a user may share a name; RFC 9068 section 5 warns that a
//! resource server must then not mistake one for the other. Every subject
//! therefore names its kind: `client:<client id>` for the client credentials
//! grant, `user:<username>` for the password grant. The kind is everything
//! before the first `:` (ids and usernames may contain `:` themselves), so a
//! client's subject can never equal a user's.

/// Who a token is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectKind {
    /// An OAuth client acting for itself (client credentials grant).
    Client,
    /// A user, through a client (password grant).
    User,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Client => "client",
            SubjectKind::User => "user",
        }
    }

    /// The kind a `sub` names, if it follows this scheme.
    pub fn of(sub: &str) -> Option<SubjectKind> {
        match sub.split_once(':')?.0 {
            "client" => Some(SubjectKind::Client),
            "user" => Some(SubjectKind::User),
            _ => None,
        }
    }
}

/// The `sub` of `name` of this kind.
pub fn subject(kind: SubjectKind, name: &str) -> String {
    format!("{}:{name}", kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_users_with_one_name_get_different_subjects() {
        assert_eq!(subject(SubjectKind::Client, "billing"), "client:billing");
        assert_eq!(subject(SubjectKind::User, "billing"), "user:billing");
        // A crafted name cannot cross over: the kind is the first segment.
        let crafted = subject(SubjectKind::Client, "user:x");
        assert_ne!(crafted, subject(SubjectKind::User, "x"));
        assert_eq!(SubjectKind::of(&crafted), Some(SubjectKind::Client));
        assert_eq!(SubjectKind::of("user:a:b"), Some(SubjectKind::User));
        for other in ["billing", "", ":x", "Client:x", "service:x", "client"] {
            assert_eq!(SubjectKind::of(other), None, "{other:?}");
        }
    }
}
