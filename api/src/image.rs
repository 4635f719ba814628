//! Container image references: parse and refuse references that do not pin a version.

use std::fmt;

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The reference is empty.
    Empty,
    /// The reference has no tag and no digest, so it floats like `:latest`.
    Untagged,
    /// The reference uses the `latest` tag.
    Latest,
    /// A character or part of the reference is not allowed.
    Malformed(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Empty => f.write_str("image is empty"),
            ImageError::Untagged => f.write_str(
                "image has no tag or digest; pin a version such as `repo/app:1.4.2` or `repo/app@sha256:<digest>`",
            ),
            ImageError::Latest => {
                f.write_str("image uses the `latest` tag, which does not pin a version; use a release tag or a digest")
            }
            ImageError::Malformed(why) => write!(f, "image reference is malformed: {why}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// A parsed image reference: `[registry/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Registry host and path, everything before the tag or digest.
    pub repository: &'a str,
    /// The tag, when given.
    pub tag: Option<&'a str>,
    /// The digest (`algorithm:hex`), when given.
    pub digest: Option<&'a str>,
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/')
}

/// Parses an image reference and refuses one that does not pin a version (no tag, or `latest`, with no digest).
pub fn parse(reference: &str) -> Result<ImageRef<'_>, ImageError> {
    if reference.is_empty() {
        return Err(ImageError::Empty);
    }
    if reference.len() > 512 {
        return Err(ImageError::Malformed("longer than 512 characters".into()));
    }
    if let Some(c) = reference.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImageError::Malformed(format!("contains {c:?}")));
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return Err(ImageError::Malformed(format!("digest `{d}` is not `algorithm:hex`")));
        };
        let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if algo.is_empty()
            || !algo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'))
            || !hex_ok
        {
            return Err(ImageError::Malformed(format!("digest `{d}` is not `algorithm:hex`")));
        }
    }
    // A colon after the last slash separates the tag; one before it belongs to a registry port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if repository.is_empty() {
        return Err(ImageError::Malformed("repository is empty".into()));
    }
    // The registry host may carry upper case, a port and a colon; the path may not.
    let (host, path) = match repository.split_once('/') {
        Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => (Some(h), p),
        _ => (None, repository),
    };
    if let Some(h) = host
        && !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err(ImageError::Malformed(format!(
            "registry host `{h}` has a character outside [A-Za-z0-9.-:]"
        )));
    }
    if path.is_empty()
        || !path.chars().all(is_path_char)
        || path.starts_with(['/', '.', '-', '_'])
        || path.ends_with('/')
        || path.contains("//")
    {
        return Err(ImageError::Malformed(format!(
            "repository path `{path}` must be lower-case letters, digits and `._-/` separators"
        )));
    }
    if let Some(t) = tag {
        let valid = !t.is_empty()
            && t.len() <= 128
            && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(ImageError::Malformed(format!(
                "tag `{t}` must be 1-128 of [A-Za-z0-9_.-], not starting with `.` or `-`"
            )));
        }
    }
    match (tag, digest) {
        (_, Some(_)) => {}
        (None, None) => return Err(ImageError::Untagged),
        (Some("latest"), None) => return Err(ImageError::Latest),
        (Some(_), None) => {}
    }
    Ok(ImageRef {
        repository,
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_pinned_references() {
        for ok in [
            "ghcr.io/acme/checkout:1.4.2",
            "nginx:1.27",
            "localhost:5000/team/app:v2",
            "registry.example.com:443/a/b/c:1.0.0-rc.1",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/acme/app:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse(ok).is_ok(), "{ok} should be accepted: {:?}", parse(ok));
        }
    }

    #[test]
    fn refuses_floating_or_malformed_references() {
        assert_eq!(parse("nginx"), Err(ImageError::Untagged));
        assert_eq!(parse("localhost:5000/app"), Err(ImageError::Untagged));
        assert_eq!(parse("ghcr.io/acme/app:latest"), Err(ImageError::Latest));
        assert_eq!(parse(""), Err(ImageError::Empty));
        for bad in [
            "Nginx:1.0",
            "app:",
            "app:-x",
            "a b:1",
            "app@sha256:xyz",
            "app:1\nhostNetwork: true",
            "/app:1",
        ] {
            assert!(
                matches!(parse(bad), Err(ImageError::Malformed(_))),
                "{bad:?} should be malformed: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn splits_tag_from_registry_port() {
        let r = parse("localhost:5000/team/app:v2").expect("valid");
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("localhost:5000/team/app", Some("v2"), None)
        );
    }
}
