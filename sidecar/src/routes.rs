//! Which paths skip verification and which need scopes. Pure decisions over
//! the request path.

/// A `--require-scope PREFIX=SCOPE[,SCOPE]` rule: every listed scope is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRule {
    pub prefix: String,
    pub scopes: Vec<String>,
}

impl std::str::FromStr for ScopeRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (prefix, scopes) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected PREFIX=SCOPE[,SCOPE]"))?;
        if !prefix.starts_with('/') {
            return Err(format!("{s:?}: the path prefix must start with '/'"));
        }
        let scopes: Vec<String> = scopes.split(',').map(str::to_owned).collect();
        if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(format!("{s:?}: scopes must be non-empty and contain no spaces"));
        }
        Ok(ScopeRule { prefix: prefix.to_owned(), scopes })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Routes {
    pub public: Vec<String>,
    pub scopes: Vec<ScopeRule>,
}

impl Routes {
    /// Public prefixes match whole segments: `/healthz` covers `/healthz` and
    /// `/healthz/live`, not `/healthzAdmin`. Narrow on purpose.
    pub fn is_public(&self, path: &str) -> bool {
        self.public.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
        })
    }

    /// Scopes every rule whose prefix starts the path requires. Plain string
    /// prefixes, so `/admin` also covers `/admin;x` and `/admins`: broad on
    /// purpose, and all matching rules apply, so a more specific rule can
    /// never weaken a broader one.
    pub fn required_scopes<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.scopes
            .iter()
            .filter(move |r| path.starts_with(r.prefix.as_str()))
            .flat_map(|r| r.scopes.iter().map(String::as_str))
    }
}

/// Whether a path is in the one spelling both the sidecar and the app agree
/// on. Dot segments and encoded dots, slashes or backslashes let a path match
/// a public prefix here and name a protected resource after the app
/// normalises it (`/healthz/../admin`), so such requests are refused.
pub fn is_normalized(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let lower_has = |needle: &str| path.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
    if lower_has("%2e") || lower_has("%2f") || lower_has("%5c") || lower_has("%00") {
        return false;
    }
    path.split('/').all(|segment| {
        // `;` starts path parameters in some servers (`/..;/admin`).
        let bare = segment.split(';').next().unwrap_or(segment);
        bare != "." && bare != ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes {
            public: vec!["/healthz".into(), "/static/".into()],
            scopes: vec![
                "/admin=admin".parse().expect("rule"),
                "/admin/users=users:write,audit".parse().expect("rule"),
            ],
        }
    }

    #[test]
    fn public_prefixes_match_whole_segments() {
        let r = routes();
        for p in ["/healthz", "/healthz/live", "/static/app.js"] {
            assert!(r.is_public(p), "{p}");
        }
        for p in ["/healthzAdmin", "/", "/api/healthz", "/static", "/Healthz"] {
            assert!(!r.is_public(p), "{p}");
        }
    }

    #[test]
    fn every_matching_scope_rule_applies() {
        let r = routes();
        assert_eq!(r.required_scopes("/admin/users/1").collect::<Vec<_>>(), ["admin", "users:write", "audit"]);
        assert_eq!(r.required_scopes("/admin;x=1").collect::<Vec<_>>(), ["admin"]);
        assert_eq!(r.required_scopes("/orders").count(), 0);
    }

    #[test]
    fn scope_rule_syntax() {
        assert!("admin=x".parse::<ScopeRule>().is_err());
        assert!("/admin".parse::<ScopeRule>().is_err());
        assert!("/admin=".parse::<ScopeRule>().is_err());
        assert!("/admin=a,,b".parse::<ScopeRule>().is_err());
        assert_eq!("/a=x,y".parse::<ScopeRule>().expect("rule").scopes, ["x", "y"]);
    }

    #[test]
    fn non_normalized_paths() {
        for ok in ["/", "/orders/1", "/a.b/c..d", "/...", "/x;y"] {
            assert!(is_normalized(ok), "{ok}");
        }
        for bad in [
            "/healthz/../admin",
            "/healthz/..",
            "/./admin",
            "/healthz/%2e%2e/admin",
            "/a%2Fb",
            "/a\\b",
            "/..;/admin",
            "*",
            "/a%5Cb",
        ] {
            assert!(!is_normalized(bad), "{bad}");
        }
    }
}
