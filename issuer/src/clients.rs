//! The clients file: OAuth clients and password-grant users.
//!
//! ```yaml
//! clients:
//!   - id: orders
//!     secretHash: "$argon2id$v=19$m=19456,t=2,p=1$..."   # sigil-issuer hash-secret
//!     scopes: [orders.read, orders.write]
//!     audience: orders-api          # optional, default --audience
//!     ttl: 5m                       # optional, default --token-ttl
//!     grantTypes: [client_credentials, password]   # optional, default [client_credentials]
//! users:
//!   - username: alice
//!     passwordHash: "$argon2id$..."
//!     scopes: [orders.read]
//! ```
//!
//! The whole file is validated before it replaces the previous one; a broken
//! edit keeps the last good set and is reported.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::password::SecretHash;
use crate::scope;

/// The grant types a client may use (RFC 6749 sections 4.3 and 4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum GrantType {
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "password")]
    Password,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
        }
    }

    pub fn from_param(value: &str) -> Option<GrantType> {
        [GrantType::ClientCredentials, GrantType::Password].into_iter().find(|g| g.as_str() == value)
    }
}

#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub secret_hash: SecretHash,
    pub scopes: BTreeSet<String>,
    pub audience: Option<String>,
    pub ttl: Option<Duration>,
    pub grant_types: BTreeSet<GrantType>,
}

#[derive(Debug)]
pub struct User {
    pub username: String,
    pub password_hash: SecretHash,
    pub scopes: BTreeSet<String>,
}

/// One validated version of the clients file.
#[derive(Debug, Default)]
pub struct Registry {
    pub clients: HashMap<String, Arc<Client>>,
    pub users: HashMap<String, Arc<User>>,
    /// Bumped on every successful reload; cached authentications from an older
    /// generation no longer count.
    pub generation: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    clients: Vec<ClientEntry>,
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClientEntry {
    id: String,
    secret_hash: String,
    #[serde(default)]
    scopes: Vec<String>,
    audience: Option<String>,
    ttl: Option<String>,
    grant_types: Option<Vec<GrantType>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UserEntry {
    username: String,
    password_hash: String,
    #[serde(default)]
    scopes: Vec<String>,
}

impl Registry {
    /// Reads and validates the clients file.
    pub fn load(path: &Path, generation: u64) -> Result<Registry> {
        let text = std::fs::read_to_string(path).map_err(Error::read(path))?;
        Registry::parse(&text, generation).map_err(|reason| Error::Clients { path: path.to_path_buf(), reason })
    }

    /// Parses the YAML text. Errors name the entry and field at fault.
    pub fn parse(text: &str, generation: u64) -> std::result::Result<Registry, String> {
        let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut registry = Registry { generation, ..Registry::default() };
        for (i, entry) in doc.clients.into_iter().enumerate() {
            let at = |field: &str, why: String| format!("clients[{i}] ({:?}): {field}: {why}", entry.id);
            if entry.id.is_empty() || entry.id.chars().any(char::is_control) {
                return Err(at("id", "must be non-empty printable text".into()));
            }
            let secret_hash = SecretHash::parse(&entry.secret_hash).map_err(|e| at("secretHash", e))?;
            let scopes = scope_set(&entry.scopes).map_err(|e| at("scopes", e))?;
            let ttl = entry
                .ttl
                .as_deref()
                .map(|t| {
                    let d = sigil_api::duration::parse(t).map_err(|e| e.to_string())?;
                    crate::config::validate_ttl("ttl", d).map_err(|e| e.to_string())?;
                    Ok::<_, String>(d)
                })
                .transpose()
                .map_err(|e| at("ttl", e))?;
            if entry.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
                return Err(at("audience", "must not be empty".into()));
            }
            let grant_types: BTreeSet<GrantType> =
                entry.grant_types.clone().unwrap_or_else(|| vec![GrantType::ClientCredentials]).into_iter().collect();
            if grant_types.is_empty() {
                return Err(at("grantTypes", "must not be empty".into()));
            }
            let client =
                Client { id: entry.id.clone(), secret_hash, scopes, audience: entry.audience, ttl, grant_types };
            if registry.clients.insert(entry.id.clone(), Arc::new(client)).is_some() {
                return Err(at("id", "appears more than once".into()));
            }
        }
        for (i, entry) in doc.users.into_iter().enumerate() {
            let at = |field: &str, why: String| format!("users[{i}] ({:?}): {field}: {why}", entry.username);
            if entry.username.is_empty() || entry.username.chars().any(char::is_control) {
                return Err(at("username", "must be non-empty printable text".into()));
            }
            let password_hash = SecretHash::parse(&entry.password_hash).map_err(|e| at("passwordHash", e))?;
            let scopes = scope_set(&entry.scopes).map_err(|e| at("scopes", e))?;
            let user = User { username: entry.username.clone(), password_hash, scopes };
            if registry.users.insert(entry.username.clone(), Arc::new(user)).is_some() {
                return Err(at("username", "appears more than once".into()));
            }
        }
        Ok(registry)
    }
}

fn scope_set(scopes: &[String]) -> std::result::Result<BTreeSet<String>, String> {
    scopes
        .iter()
        .map(|s| if scope::is_scope_token(s) { Ok(s.clone()) } else { Err(format!("{s:?} is not a valid scope")) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        crate::password::test_hash(b"pw").as_str().to_owned()
    }

    #[test]
    fn a_full_file_parses() {
        let h = hash();
        let text = format!(
            "clients:\n- id: orders\n  secretHash: '{h}'\n  scopes: [a, b]\n  audience: orders-api\n  ttl: 5m\n  grantTypes: [client_credentials, password]\n- id: plain\n  secretHash: '{h}'\nusers:\n- username: alice\n  passwordHash: '{h}'\n  scopes: [a]\n"
        );
        let r = Registry::parse(&text, 7).expect("parse");
        assert_eq!(r.generation, 7);
        let orders = &r.clients["orders"];
        assert_eq!(orders.scopes.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(orders.ttl, Some(Duration::from_secs(300)));
        assert_eq!(orders.audience.as_deref(), Some("orders-api"));
        assert!(orders.grant_types.contains(&GrantType::Password));
        let plain = &r.clients["plain"];
        assert_eq!(plain.grant_types.iter().copied().collect::<Vec<_>>(), [GrantType::ClientCredentials]);
        assert!(plain.scopes.is_empty() && plain.ttl.is_none());
        assert!(r.users["alice"].password_hash.verify(b"pw"));
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let h = hash();
        for (text, needle) in [
            ("clients:\n- id: a\n  secretHash: nope\n".to_owned(), "clients[0] (\"a\"): secretHash"),
            (format!("clients:\n- id: a\n  secretHash: '{h}'\n  scopes: ['bad scope']\n"), "scopes"),
            (format!("clients:\n- id: a\n  secretHash: '{h}'\n  ttl: 3d\n"), "ttl"),
            (format!("clients:\n- id: a\n  secretHash: '{h}'\n  ttl: 48h\n"), "ttl"),
            (format!("clients:\n- id: a\n  secretHash: '{h}'\n- id: a\n  secretHash: '{h}'\n"), "more than once"),
            (format!("clients:\n- id: a\n  secretHash: '{h}'\n  grantTypes: [implicit]\n"), "implicit"),
            (format!("clients:\n- id: a\n  secrethash: '{h}'\n"), "secrethash"),
            (format!("users:\n- username: ''\n  passwordHash: '{h}'\n"), "users[0]"),
            ("clients: 3\n".to_owned(), "clients"),
        ] {
            let err = Registry::parse(&text, 0).expect_err(&text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn the_error_never_echoes_a_hash() {
        let text = "clients:\n- id: a\n  secretHash: '$argon2id$v=19$m=19456,t=2,p=1$zzzz'\n";
        let err = Registry::parse(text, 0).expect_err("bad hash");
        assert!(!err.contains("zzzz"), "{err}");
    }
}
