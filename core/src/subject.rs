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
//!
//! Workloads that authenticate with their Kubernetes ServiceAccount token get
//! the API server's own spelling, `system:serviceaccount:<namespace>:<name>`:
//! its first segment, `system`, is neither `client` nor `user`.

/// Who a token is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectKind {
    /// An OAuth client acting for itself (client credentials grant).
    Client,
    /// A user, through a client (password grant).
    User,
    /// A Kubernetes workload, by its ServiceAccount token (RFC 7523 client
    /// assertion or RFC 8693 token exchange).
    ServiceAccount,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Client => "client",
            SubjectKind::User => "user",
            SubjectKind::ServiceAccount => "serviceaccount",
        }
    }

    /// The kind a `sub` names, if it follows this scheme.
    pub fn of(sub: &str) -> Option<SubjectKind> {
        match sub.split_once(':')? {
            ("client", _) => Some(SubjectKind::Client),
            ("user", _) => Some(SubjectKind::User),
            ("system", rest) => {
                let (namespace, name) = rest.strip_prefix("serviceaccount:")?.split_once(':')?;
                (!namespace.is_empty() && !name.is_empty()).then_some(SubjectKind::ServiceAccount)
            }
            _ => None,
        }
    }
}

/// The `sub` of client or user `name`.
pub fn subject(kind: SubjectKind, name: &str) -> String {
    debug_assert!(kind != SubjectKind::ServiceAccount, "use service_account_subject");
    format!("{}:{name}", kind.as_str())
}

/// The `sub` of a ServiceAccount, as the API server writes it in its tokens.
pub fn service_account_subject(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
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
        let workload = service_account_subject("shop", "orders");
        assert_eq!(workload, "system:serviceaccount:shop:orders");
        assert_eq!(SubjectKind::of(&workload), Some(SubjectKind::ServiceAccount));
        assert_ne!(
            SubjectKind::of(&subject(SubjectKind::Client, "system:serviceaccount:shop:orders")),
            SubjectKind::of(&workload)
        );
        for other in [
            "billing",
            "",
            ":x",
            "Client:x",
            "service:x",
            "client",
            "system:serviceaccount:",
            "system:serviceaccount:shop",
            "system:serviceaccount::orders",
            "system:node:n1",
        ] {
            assert_eq!(SubjectKind::of(other), None, "{other:?}");
        }
    }
}
