//! Image references, normalised as docker normalises them:
//! `ubuntu:trusty` is `docker.io/library/ubuntu:trusty`.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Error};

/// The registry that a name without a domain belongs to.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed image reference: `[domain/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// Repository path (`library/ubuntu`).
    pub path: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// The tag, or `latest` when neither a tag nor a digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        }
    }

    /// `domain/path`, fully qualified.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The name as docker shows it: `ubuntu`, `quay.io/x/y`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_owned()
        } else {
            self.repository()
        }
    }

    /// The key under which the store tags the image: `ubuntu:latest`, `x@sha256:…`.
    pub fn store_name(&self) -> String {
        let mut name = self.familiar_name();
        if let Some(tag) = self.tag_or_latest() {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(digest.as_str());
        }
        name
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.store_name())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| Error::BadReference {
            reference: text.to_owned(),
            why: why.to_owned(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|_| bad("the digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (text, None),
        };
        // A tag is after the last ':' that follows the last '/', so `host:5000/x` has no tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
                });
            if !valid {
                return Err(bad(
                    "a tag is 1-128 of [A-Za-z0-9_.-] and does not start with '.' or '-'",
                ));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(
                "a repository name is lowercase letters, digits and separators ('.', '_', '__', '-'), in '/'-separated parts",
            ));
        }
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(bad("the registry host is not a valid host[:port]"));
        }
        if path.len() + domain.len() > 255 {
            return Err(bad("the name is longer than 255 characters"));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // Separators: '.', '_', '__', or any run of '-'.
        let sep_len = match b {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|&&c| c == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        if !bytes
            .get(i)
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Reference {
        text.parse().unwrap()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(r("ubuntu:trusty").repository(), "docker.io/library/ubuntu");
        assert_eq!(r("ubuntu:trusty").store_name(), "ubuntu:trusty");
        assert_eq!(r("ubuntu").store_name(), "ubuntu:latest");
        assert_eq!(
            r("daocloud.io/ubuntu:trusty").repository(),
            "daocloud.io/ubuntu"
        );
        assert_eq!(r("localhost:5000/x").tag_or_latest(), Some("latest"));
        assert_eq!(
            r("127.0.0.1:5000/library/debian:bookworm").domain,
            "127.0.0.1:5000"
        );
        let pinned = format!("localhost:5000/x@{}", Digest::of(b""));
        assert_eq!(r(&pinned).tag, None);
        assert!(r(&pinned).digest.is_some());
        assert_eq!(r("my-python-base").store_name(), "my-python-base:latest");
    }

    #[test]
    fn rejects_bad_names() {
        let name = "a repository name is lowercase";
        let tag = "a tag is 1-128 of";
        for (bad, why) in [
            ("", "it is empty"),
            ("UPPER", name),
            ("a:", tag),
            ("a:-x", tag),
            ("a//b", name),
            ("a/", name),
            ("-a", name),
            ("a@sha256:12", "the digest is not sha256:<64 hex>"),
            ("a b", name),
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(
                matches!(&err, Error::BadReference { reference, why: got }
                    if reference == bad && got.starts_with(why)),
                "{bad:?} should be rejected because {why}…, got {err:?}"
            );
        }
    }
}
