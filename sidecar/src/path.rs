//! One spelling of the request path for every decision, and the same spelling
//! forwarded to the app.
//!
//! Routers decode and clean paths before routing (Go's net/http, Flask,
//! Spring), so `/%61dmin`, `//admin` and `/x/../admin` all reach an app's
//! `/admin` handler. The sidecar therefore decides on the path as such a
//! router sees it and forwards exactly the path it decided on:
//!
//! - percent-encoded unreserved characters are decoded (RFC 3986 section
//!   6.2.2.2) and every other escape is written in upper case;
//! - `.` and `..` segments are resolved (RFC 3986 section 5.2.4), and a `..`
//!   above the root is refused rather than clamped;
//! - empty segments are merged, so `//admin` is `/admin`;
//! - what has no safe single meaning is refused with 400: an encoded `/` or
//!   `\`, a raw `\`, control characters and NUL, a malformed escape, bytes
//!   that are not UTF-8 once decoded, and `..;` or `.;` (Tomcat and Jetty
//!   read `/..;/` as `..`).
//!
//! Routes are matched on the fully decoded path with each segment's `;`
//! parameters removed (`/admin;jsessionid=1/x` matches as `/admin/x`), in
//! lower case when the app's router ignores case. The query string is not
//! part of the path and is forwarded untouched.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Why a path was refused; logged and counted, never echoed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("backslash")]
    Backslash,
    #[error("control character or NUL")]
    Control,
    #[error("malformed percent-escape")]
    MalformedEscape,
    #[error("not UTF-8 once decoded")]
    InvalidUtf8,
    #[error("'..' above the root")]
    AboveRoot,
    #[error("dot segment with parameters")]
    DotWithParameters,
}

/// A request path in its one agreed spelling. Most paths are already in it
/// and are borrowed, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    /// What is forwarded: the normalised path, still encoded.
    pub path: Cow<'a, str>,
    /// What routes match: decoded, parameters dropped, lower case if asked.
    pub route: Cow<'a, str>,
}

/// Normalises `path`, the request's path as received (encoded, no query).
pub fn normalize(path: &str, case_insensitive: bool) -> Result<NormalPath<'_>, PathError> {
    if is_plain(path) {
        let route = if case_insensitive && path.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(path.to_ascii_lowercase())
        } else {
            Cow::Borrowed(path)
        };
        return Ok(NormalPath { path: Cow::Borrowed(path), route });
    }
    let Some(rest) = path.strip_prefix('/') else { return Err(PathError::NotAbsolute) };
    let trailing_slash = rest.is_empty() || rest.ends_with('/');
    // Each kept segment as forwarded (encoded) and as matched (decoded).
    let mut segments: Vec<(String, String)> = Vec::new();
    // A resolved dot segment last leaves a directory: `/a/b/..` is `/a/`.
    let mut ends_in_dot = false;
    for raw in rest.split('/') {
        if raw.is_empty() {
            continue;
        }
        let (encoded, decoded) = segment(raw)?;
        let bare = decoded.split(';').next().unwrap_or_default();
        match bare {
            "." | ".." if bare.len() != decoded.len() => return Err(PathError::DotWithParameters),
            "." => ends_in_dot = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                ends_in_dot = true;
            }
            _ => {
                segments.push((encoded, decoded));
                ends_in_dot = false;
            }
        }
    }
    let mut forward = String::with_capacity(path.len());
    let mut route = String::with_capacity(path.len());
    for (encoded, decoded) in &segments {
        forward.push('/');
        forward.push_str(encoded);
        route.push('/');
        route.push_str(decoded.split(';').next().unwrap_or_default());
    }
    if segments.is_empty() || trailing_slash || ends_in_dot {
        forward.push('/');
        route.push('/');
    }
    if case_insensitive {
        route.make_ascii_lowercase();
        if !route.is_ascii() {
            route = route.to_lowercase();
        }
    }
    Ok(NormalPath { path: Cow::Owned(forward), route: Cow::Owned(route) })
}

/// Whether `path` is already normal and its own route: printable ASCII with
/// no escapes, backslashes or parameters, no empty segment but a trailing
/// one, no dot segment. The common case, checked without allocating.
fn is_plain(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    if !rest.bytes().all(|b| b == b'/' || (is_pchar(b) && b != b';')) {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// One segment: its forwarded spelling and its decoded text.
fn segment(raw: &str) -> Result<(String, String), PathError> {
    let bytes = raw.as_bytes();
    let mut encoded = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::MalformedEscape)?;
                let value = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
                    .ok_or(PathError::MalformedEscape)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    v if v.is_ascii_control() => return Err(PathError::Control),
                    v if is_unreserved(v) => encoded.push(char::from(v)),
                    v => {
                        let _ = write!(encoded, "%{v:02X}");
                    }
                }
                decoded.push(value);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b.is_ascii_control() => return Err(PathError::Control),
            b if is_pchar(b) => {
                encoded.push(char::from(b));
                decoded.push(b);
                i += 1;
            }
            // Anything a path may not hold as is (a space, `"`, `{`, bytes
            // above 0x7f): forwarded as an escape, decoded as the byte.
            b => {
                let _ = write!(encoded, "%{b:02X}");
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    Ok((encoded, decoded))
}

/// RFC 3986 section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// What a path segment may hold unescaped (RFC 3986 section 3.3, `pchar`).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<(String, String), PathError> {
        normalize(path, false).map(|p| (p.path.into_owned(), p.route.into_owned()))
    }

    #[test]
    fn every_spelling_of_admin_is_admin() {
        for spelling in [
            "/admin/x",
            "/%61dmin/x",
            "/%61%64%6D%69%6E/x",
            "//admin/x",
            "/./admin/x",
            "/admin/./x",
            "/orders/../admin/x",
            "/orders/%2e%2e/admin/x",
            "/orders/%2E./admin/x",
            "///admin//x",
            "/admin;jsessionid=1/x",
        ] {
            let (_, route) = norm(spelling).unwrap_or_else(|e| panic!("{spelling}: {e}"));
            assert_eq!(route, "/admin/x", "{spelling}");
        }
    }

    #[test]
    fn forwarded_spelling_is_the_decided_one() {
        assert_eq!(norm("/%61dmin//x/./y/../z").expect("ok").0, "/admin/x/z");
        // Reserved and non-ASCII escapes stay escaped, in upper case.
        assert_eq!(norm("/a%3fb/%c3%a9").expect("ok"), ("/a%3Fb/%C3%A9".into(), "/a?b/é".into()));
        // `%25` is a literal percent sign: decoded once for matching, kept for the app.
        assert_eq!(norm("/%2561dmin").expect("ok"), ("/%2561dmin".into(), "/%61dmin".into()));
        assert_eq!(norm("/admin;v=1/x").expect("ok").0, "/admin;v=1/x");
    }

    #[test]
    fn directories_and_root() {
        for (path, forward) in [
            ("/", "/"),
            ("//", "/"),
            ("/admin/", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/admin/x/%2e%2E", "/admin/"),
            ("/x/..", "/"),
            ("/admin", "/admin"),
        ] {
            assert_eq!(norm(path).expect(path).0, forward, "{path}");
        }
    }

    #[test]
    fn plain_paths_are_borrowed() {
        for path in ["/", "/orders/7", "/a/b/", "/.well-known/jwks.json", "/a..b/...", "/x:y@z!$&'()*+,="] {
            let p = normalize(path, false).expect(path);
            assert!(matches!((&p.path, &p.route), (Cow::Borrowed(_), Cow::Borrowed(_))), "{path}");
            assert_eq!(p.path, path);
        }
        for path in ["//a", "/a//b", "/./a", "/a/..", "/a/.", "/%41", "/a;b", "/a\\b", "/é"] {
            assert!(!is_plain(path), "{path}");
        }
    }

    #[test]
    fn what_cannot_be_normalised_safely_is_refused() {
        for (path, error) in [
            ("admin", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/admin%2fx", PathError::EncodedSeparator),
            ("/admin%2Fx", PathError::EncodedSeparator),
            ("/admin%5cx", PathError::EncodedSeparator),
            ("/admin\\x", PathError::Backslash),
            ("/admin%00", PathError::Control),
            ("/admin%0a", PathError::Control),
            ("/admin%7F", PathError::Control),
            ("/admin%", PathError::MalformedEscape),
            ("/admin%4", PathError::MalformedEscape),
            ("/admin%zz", PathError::MalformedEscape),
            ("/admin%+1", PathError::MalformedEscape),
            ("/admin%ff", PathError::InvalidUtf8),
            ("/%c3", PathError::InvalidUtf8),
            ("/..", PathError::AboveRoot),
            ("/a/../../admin", PathError::AboveRoot),
            ("/%2e%2e/admin", PathError::AboveRoot),
            ("/healthz/..;/admin", PathError::DotWithParameters),
            ("/healthz/.;x/admin", PathError::DotWithParameters),
            ("/healthz/%2e%2e;/admin", PathError::DotWithParameters),
        ] {
            assert_eq!(norm(path), Err(error), "{path}");
        }
    }

    #[test]
    fn what_a_path_may_not_hold_raw_is_forwarded_escaped() {
        // hyper refuses most of these in a request line; the normaliser does
        // not rely on it.
        assert_eq!(norm("/a b;c").expect("ok"), ("/a%20b;c".into(), "/a b".into()));
        assert_eq!(norm("/{x}|\"^`<>").expect("ok").0, "/%7Bx%7D%7C%22%5E%60%3C%3E");
        assert_eq!(norm("/%20").expect("ok").0, "/%20");
    }

    #[test]
    fn dots_inside_names_are_names() {
        for path in ["/a.b/c..d", "/...", "/.well-known/x", "/..a", "/a.."] {
            assert_eq!(norm(path).expect(path).0, path);
        }
    }

    #[test]
    fn case_folding_only_when_asked() {
        assert_eq!(normalize("/ADMIN/X", false).expect("ok").route, "/ADMIN/X");
        assert_eq!(normalize("/ADMIN/X", true).expect("ok").route, "/admin/x");
        let p = normalize("/%41dmin/%C3%84", true).expect("ok");
        assert_eq!(p.route, "/admin/ä");
        assert_eq!(p.path, "/Admin/%C3%84", "the app still gets the client's case");
    }
}
