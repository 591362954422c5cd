//! The `sub` claim. Clients and users live in separate namespaces of the
//! clients file, so a client and a user may share a name; RFC 9068 section 5
//! warns that a resource server must then not mistake one for the other.
//! Every subject therefore names its kind: `client:<client id>` for the
//! client credentials grant, `user:<username>` for the password grant. The
//! kind is everything before the first `:` (ids and usernames may contain
//! `:` themselves), so no client and user subject can ever be equal.

/// The prefix of a client's subject.
pub const CLIENT_PREFIX: &str = "client:";
/// The prefix of a user's subject.
pub const USER_PREFIX: &str = "user:";

pub fn client(id: &str) -> String {
    format!("{CLIENT_PREFIX}{id}")
}

pub fn user(username: &str) -> String {
    format!("{USER_PREFIX}{username}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_users_with_one_name_get_different_subjects() {
        assert_eq!(client("billing"), "client:billing");
        assert_eq!(user("billing"), "user:billing");
        assert_ne!(client("billing"), user("billing"));
        // Crafted names cannot cross over: the kind is the first segment.
        assert_ne!(client("user:x"), user("x"));
        assert!(client("user:x").starts_with(CLIENT_PREFIX));
    }
}
