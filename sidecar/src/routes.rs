//! Which paths skip verification and which need scopes: pure decisions over
//! the normalised route path ([`crate::path`]).
//!
//! Prefixes match whole segments: `/admin` covers `/admin`, `/admin/` and
//! `/admin/x`, never `/admins`, and a rule written `/admin/` is the same rule.
//! The most specific prefix decides whether a path is public, so
//! `--public-path=/docs` with a scope rule on `/docs/admin` leaves
//! `/docs/admin` protected and `/docs/guide` public. Every scope rule whose
//! prefix covers a protected path applies, so a nested rule only ever adds
//! scopes.

use crate::path;

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
        let prefix = parse_prefix(prefix).map_err(|e| format!("{s:?}: {e}"))?;
        let scopes: Vec<String> = scopes.split(',').map(str::to_owned).collect();
        if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(format!("{s:?}: scopes must be non-empty and contain no spaces"));
        }
        Ok(ScopeRule { prefix, scopes })
    }
}

/// A rule's path prefix in the form routes are matched in: normalised and
/// decoded, without a trailing slash (except the root).
pub fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?}: a path prefix starts with '/'"));
    }
    if s.contains(['?', '#', ';']) {
        return Err(format!("{s:?}: a path prefix has no query, fragment or ';' parameters"));
    }
    let normal = path::normalize(s, false).map_err(|e| format!("{s:?}: {e}"))?;
    let route = normal.route.trim_end_matches('/');
    Ok(if route.is_empty() { "/".to_owned() } else { route.to_owned() })
}

/// The public prefixes and scope rules, checked to compose.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    public: Vec<String>,
    scopes: Vec<ScopeRule>,
    case_insensitive: bool,
}

impl Routes {
    /// Fails when one prefix is both public and scoped: no ordering could say
    /// which the user meant.
    pub fn new(public: Vec<String>, scopes: Vec<ScopeRule>, case_insensitive: bool) -> Result<Routes, String> {
        let fold = |s: &str| if case_insensitive { s.to_lowercase() } else { s.to_owned() };
        let public: Vec<String> = public.iter().map(|p| fold(p)).collect();
        let scopes: Vec<ScopeRule> =
            scopes.into_iter().map(|r| ScopeRule { prefix: fold(&r.prefix), scopes: r.scopes }).collect();
        if let Some(both) = public.iter().find(|p| scopes.iter().any(|r| r.prefix == **p)) {
            return Err(format!("{both} is both a --public-path and a --require-scope prefix"));
        }
        Ok(Routes { public, scopes, case_insensitive })
    }

    pub fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// Whether the most specific rule covering `route` is a public path.
    pub fn is_public(&self, route: &str) -> bool {
        let public = longest(self.public.iter().map(String::as_str), route);
        let scoped = longest(self.scopes.iter().map(|r| r.prefix.as_str()), route);
        public.is_some_and(|p| scoped.is_none_or(|s| p > s))
    }

    /// Every scope that rules covering `route` require.
    pub fn required_scopes<'a>(&'a self, route: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.scopes.iter().filter(move |r| covers(&r.prefix, route)).flat_map(|r| r.scopes.iter().map(String::as_str))
    }

    /// Rules that cover part of each other, worth a warning at start-up: the
    /// user may not expect which one wins.
    pub fn overlaps(&self) -> Vec<String> {
        let mut found = Vec::new();
        for public in &self.public {
            for rule in &self.scopes {
                if covers(&rule.prefix, public) {
                    found.push(format!(
                        "--public-path {public} lies inside --require-scope {}: requests under {public} need no token",
                        rule.prefix
                    ));
                } else if covers(public, &rule.prefix) {
                    found.push(format!(
                        "--require-scope {} lies inside --public-path {public}: requests under {} need a token",
                        rule.prefix, rule.prefix
                    ));
                }
            }
        }
        for outer in &self.scopes {
            for inner in &self.scopes {
                if outer.prefix != inner.prefix && covers(&outer.prefix, &inner.prefix) {
                    found.push(format!(
                        "--require-scope {} lies inside --require-scope {}: requests under {} need the scopes of both",
                        inner.prefix, outer.prefix, inner.prefix
                    ));
                }
            }
        }
        found
    }
}

/// Whether `prefix` covers `route` on whole segments.
fn covers(prefix: &str, route: &str) -> bool {
    prefix == "/" || route.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The length of the longest prefix covering `route`, if any does.
fn longest<'a>(prefixes: impl Iterator<Item = &'a str>, route: &str) -> Option<usize> {
    prefixes.filter(|p| covers(p, route)).map(str::len).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> ScopeRule {
        s.parse().expect("rule")
    }

    fn routes() -> Routes {
        Routes::new(
            vec![parse_prefix("/healthz").expect("p"), parse_prefix("/static/").expect("p"), "/docs".into()],
            vec![rule("/admin=admin"), rule("/admin/users=users:write,audit"), rule("/docs/admin=admin")],
            false,
        )
        .expect("routes")
    }

    #[test]
    fn public_prefixes_match_whole_segments() {
        let r = routes();
        for p in ["/healthz", "/healthz/", "/healthz/live", "/static/app.js", "/static", "/docs/guide"] {
            assert!(r.is_public(p), "{p}");
        }
        for p in ["/healthzAdmin", "/", "/api/healthz", "/Healthz", "/staticx"] {
            assert!(!r.is_public(p), "{p}");
        }
    }

    #[test]
    fn the_most_specific_prefix_decides_public_or_protected() {
        let r = routes();
        for p in ["/docs/admin", "/docs/admin/", "/docs/admin/x"] {
            assert!(!r.is_public(p), "{p}");
            assert_eq!(r.required_scopes(p).collect::<Vec<_>>(), ["admin"], "{p}");
        }
        assert!(r.is_public("/docs/administrators"));
        // A public path inside a scope rule is a deliberate carve-out.
        let carve = Routes::new(vec!["/admin/login".into()], vec![rule("/admin=admin")], false).expect("routes");
        assert!(carve.is_public("/admin/login"));
        assert!(!carve.is_public("/admin/loginx"));
        assert!(!carve.is_public("/admin"));
    }

    #[test]
    fn nested_scope_rules_add_scopes() {
        let r = routes();
        assert_eq!(r.required_scopes("/admin/users/1").collect::<Vec<_>>(), ["admin", "users:write", "audit"]);
        assert_eq!(r.required_scopes("/admin").collect::<Vec<_>>(), ["admin"]);
        assert_eq!(r.required_scopes("/admins").count(), 0);
        assert_eq!(r.required_scopes("/orders").count(), 0);
    }

    #[test]
    fn a_rule_with_a_trailing_slash_covers_the_bare_path() {
        let r = Routes::new(vec![], vec![rule("/admin/=admin")], false).expect("routes");
        for p in ["/admin", "/admin/", "/admin/x"] {
            assert_eq!(r.required_scopes(p).count(), 1, "{p}");
        }
        let root = Routes::new(vec!["/healthz".into()], vec![rule("/=api")], false).expect("routes");
        assert_eq!(root.required_scopes("/anything").collect::<Vec<_>>(), ["api"]);
        assert!(root.is_public("/healthz"));
    }

    #[test]
    fn case_insensitive_routes_fold_the_rules_too() {
        let r = Routes::new(vec![], vec![rule("/Admin=admin")], true).expect("routes");
        assert_eq!(r.required_scopes("/admin/x").count(), 1);
        let exact = Routes::new(vec![], vec![rule("/Admin=admin")], false).expect("routes");
        assert_eq!(exact.required_scopes("/admin/x").count(), 0);
    }

    #[test]
    fn one_prefix_both_public_and_scoped_is_refused() {
        let err = Routes::new(vec!["/admin".into()], vec![rule("/admin/=admin")], false).expect_err("conflict");
        assert!(err.contains("both"), "{err}");
    }

    #[test]
    fn overlaps_are_reported() {
        let overlaps = routes().overlaps();
        assert!(overlaps.iter().any(|o| o.contains("/docs/admin lies inside --public-path /docs")), "{overlaps:?}");
        assert!(overlaps.iter().any(|o| o.contains("/admin/users lies inside --require-scope /admin")), "{overlaps:?}");
        assert_eq!(overlaps.len(), 2, "{overlaps:?}");
        let disjoint = Routes::new(vec!["/healthz".into()], vec![rule("/admin=a")], false).expect("routes");
        assert!(disjoint.overlaps().is_empty());
    }

    #[test]
    fn prefixes_are_normalised_or_refused() {
        assert_eq!(parse_prefix("/%61dmin//x/").expect("ok"), "/admin/x");
        assert_eq!(parse_prefix("/").expect("ok"), "/");
        assert_eq!(parse_prefix("//").expect("ok"), "/");
        for bad in ["admin", "/a/../..", "/a%2fb", "/a?x", "/a;x", "/a\\b"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_rule_syntax() {
        assert!("admin=x".parse::<ScopeRule>().is_err());
        assert!("/admin".parse::<ScopeRule>().is_err());
        assert!("/admin=".parse::<ScopeRule>().is_err());
        assert!("/admin=a,,b".parse::<ScopeRule>().is_err());
        let r = "/a/=x,y".parse::<ScopeRule>().expect("rule");
        assert_eq!((r.prefix.as_str(), r.scopes), ("/a", vec!["x".to_owned(), "y".to_owned()]));
    }
}
