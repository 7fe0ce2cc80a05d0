//! Build contexts named by a URL, as `docker buildx build` takes them: a git repository
//! (`https://host/repo.git#ref:subdir`, `git://…`, `git@host:repo`, `github.com/…`) or a file
//! over HTTP(S), which is the context when it is an archive and the Dockerfile otherwise.
//!
//! Git is driven through the `git` program rather than a library: it brings the user's
//! credential helpers, `insteadOf` rules, proxies and ssh set-up along, which is what makes a
//! private repository that `git clone` reaches also reachable here.
//!
//! A fetched repository is as untrusted as any context: it is checked out into a staging
//! directory of the store, nothing of it is run (hooks and its config are never installed by a
//! fetch), its `.git` is dropped as BuildKit drops it, and the subdirectory and Dockerfile it
//! names must resolve inside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// A context argument that names something remote.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoteContext {
    /// A git repository, at `reference` (the remote's HEAD when `None`), in `subdir`.
    Git {
        url: String,
        reference: Option<String>,
        subdir: Option<String>,
    },
    /// A file over HTTP(S).
    Http(String),
}

impl RemoteContext {
    /// What `arg` names, if it is remote (moby's `urlutil` rules, which buildx uses): git for
    /// `git://`, `git@`, `github.com/`, and http(s) URLs whose path ends in `.git`; http(s)
    /// otherwise. `None` for anything else, which is a directory.
    pub fn parse(arg: &str) -> anyhow::Result<Option<RemoteContext>> {
        let is_http = arg.starts_with("http://") || arg.starts_with("https://");
        let (before_fragment, fragment) = match arg.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (arg, None),
        };
        let is_git = ["git://", "git@", "github.com/"]
            .iter()
            .any(|p| arg.starts_with(p))
            || (is_http && before_fragment.ends_with(".git"));
        if is_git {
            let url = match before_fragment.strip_prefix("github.com/") {
                Some(path) => format!("https://github.com/{path}"),
                None => before_fragment.to_owned(),
            };
            anyhow::ensure!(
                !url.contains('?'),
                "build context {arg}: git URL query options (?ref=, ?subdir=, …) are not \
                 supported by kiln; use the #REF:SUBDIR fragment"
            );
            let (reference, subdir) = match fragment {
                None => (None, None),
                Some(f) => {
                    let (reference, subdir) = f.split_once(':').unwrap_or((f, ""));
                    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                    (non_empty(reference), non_empty(subdir))
                }
            };
            return Ok(Some(RemoteContext::Git {
                url,
                reference,
                subdir,
            }));
        }
        Ok(is_http.then(|| RemoteContext::Http(arg.to_owned())))
    }
}

/// Clones `url` at `reference` into `dir` (which exists and is empty), with its submodules,
/// and removes its `.git`.
pub fn checkout_git(url: &str, reference: Option<&str>, dir: &Path) -> anyhow::Result<()> {
    let reference = reference.unwrap_or("HEAD");
    git(dir, &["init", "-q"])?;
    let shallow = git(
        dir,
        &["fetch", "-q", "--depth=1", "--no-tags", url, reference],
    );
    if shallow.is_err() && is_commit_id(reference) {
        // A server that does not serve single commits: fetch everything, then pick it.
        git(
            dir,
            &[
                "fetch",
                "-q",
                "--no-tags",
                url,
                "+refs/heads/*:refs/heads/*",
            ],
        )
        .with_context(|| format!("git context {url}: fetch {reference}"))?;
        git(dir, &["checkout", "-q", "--detach", reference])
            .with_context(|| format!("git context {url}: no commit {reference}"))?;
    } else {
        shallow.with_context(|| format!("git context {url}: fetch {reference}"))?;
        git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"])
            .with_context(|| format!("git context {url}: check out {reference}"))?;
    }
    // Submodule URLs are relative to the remote, which `origin` gives them.
    git(dir, &["remote", "add", "origin", url])?;
    git(
        dir,
        &[
            "-c",
            "protocol.file.allow=never",
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth=1",
        ],
    )
    .with_context(|| format!("git context {url}: fetch its submodules"))?;
    let dot_git = dir.join(".git");
    std::fs::remove_dir_all(&dot_git).with_context(|| format!("remove {}", dot_git.display()))
}

/// The directory of a checkout that a `#ref:subdir` names, which must be inside it.
pub fn subdir_of(root: &Path, subdir: Option<&str>, url: &str) -> anyhow::Result<PathBuf> {
    let Some(subdir) = subdir else {
        return Ok(root.to_path_buf());
    };
    let rel = kiln_build::context::clean_path(subdir);
    let dir = root.join(&rel);
    let real_root = root.canonicalize()?;
    let real = dir.canonicalize().map_err(|_| {
        anyhow::anyhow!("git context {url}: the repository has no directory {subdir}")
    })?;
    anyhow::ensure!(
        real.starts_with(&real_root) && real.is_dir(),
        "git context {url}: {subdir} is not a directory inside the repository"
    );
    Ok(real)
}

fn is_commit_id(reference: &str) -> bool {
    (7..=64).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs `git ARGS` in `dir`, never prompting; its stderr is the error.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "git contexts need the `git` program, which is not on PATH (apt-get install git)"
            ),
            _ => anyhow::Error::new(e).context("run git"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::bail!("git {}: {}", args.join(" "), stderr.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(url: &str, reference: Option<&str>, subdir: Option<&str>) -> Option<RemoteContext> {
        Some(RemoteContext::Git {
            url: url.into(),
            reference: reference.map(Into::into),
            subdir: subdir.map(Into::into),
        })
    }

    #[test]
    fn urls_read_as_buildx_reads_them() {
        let parse = |s| RemoteContext::parse(s).unwrap();
        assert_eq!(parse("."), None);
        assert_eq!(parse("some/dir"), None);
        assert_eq!(parse("https://h/r.git"), git("https://h/r.git", None, None));
        assert_eq!(
            parse("https://h/r.git#v1:docker/app"),
            git("https://h/r.git", Some("v1"), Some("docker/app"))
        );
        assert_eq!(
            parse("https://h/r.git#:sub"),
            git("https://h/r.git", None, Some("sub"))
        );
        assert_eq!(
            parse("git://127.0.0.1/r#main"),
            git("git://127.0.0.1/r", Some("main"), None)
        );
        assert_eq!(
            parse("git@github.com:o/r.git"),
            git("git@github.com:o/r.git", None, None)
        );
        assert_eq!(
            parse("github.com/o/r"),
            git("https://github.com/o/r", None, None)
        );
        assert_eq!(
            parse("https://h/ctx.tar.gz"),
            Some(RemoteContext::Http("https://h/ctx.tar.gz".into()))
        );
        assert!(RemoteContext::parse("git://h/r?ref=main").is_err());
    }

    #[test]
    fn commit_ids_are_hex() {
        assert!(is_commit_id("0123abc"));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id("abc"));
    }
}
