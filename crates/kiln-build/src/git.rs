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
//! fetch), its `.git` is dropped unless asked for (`ADD --keep-git-dir`), and the subdirectory
//! it names must resolve inside it. Every file's mtime is the commit's time, so that the same
//! commit gives the same bytes, and the same cache keys, whenever it is fetched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// A source that names something remote.
#[derive(Debug, PartialEq, Eq)]
pub enum Remote {
    /// A git repository, at `reference` (the remote's HEAD when `None`), in `subdir`.
    Git {
        /// The repository, as git takes it.
        url: String,
        /// A branch, tag or commit.
        reference: Option<String>,
        /// The directory of the checkout that is the source.
        subdir: Option<String>,
        /// The URL's query options (`?commit=…&keep-git-dir&submodules=false`).
        options: GitOptions,
    },
    /// A file over HTTP(S).
    Http(String),
}

/// What a git URL's query asks for besides the reference and subdirectory (BuildKit's
/// dfgitutil `loadQuery`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOptions {
    /// `?commit=` or `?checksum=`: hex digits the fetched commit's id begins with.
    pub checksum: Option<String>,
    /// `?keep-git-dir[=BOOL]`.
    pub keep_git_dir: Option<bool>,
    /// `?submodules[=BOOL]`: fetch the submodules (the default) or not.
    pub submodules: Option<bool>,
}

/// Reads a git URL's query into the reference, subdirectory and options, with BuildKit's
/// rules and words.
fn load_query(
    query: &str,
    reference: &mut Option<String>,
    subdir: &mut Option<String>,
) -> Result<GitOptions, String> {
    let mut options = GitOptions::default();
    let (mut tag, mut branch) = (None, None);
    let mut seen = std::collections::BTreeSet::new();
    let flag = |key: &str, value: Option<&str>| -> Result<bool, String> {
        match value {
            None => Ok(true),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(format!("invalid {key} value: {other:?}")),
        }
    };
    let conflict = |what: &str, old: &Option<String>, new: &str| match old {
        Some(old) if old != new => Err(format!("{what} conflicts: {old:?} vs {new:?}")),
        _ => Ok(()),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        if !seen.insert(key.to_owned()) {
            return Err(format!("query {key:?} has multiple values"));
        }
        let value = value.filter(|v| !v.is_empty());
        let needs_value = !matches!(key, "submodules" | "keep-git-dir" | "fetch-by-commit");
        let text = match value {
            Some(v) => v.to_owned(),
            None if needs_value => return Err(format!("query {key:?} has no value")),
            None => String::new(),
        };
        match key {
            "ref" => {
                conflict("ref", reference, &text)?;
                *reference = Some(text);
            }
            "tag" => tag = Some(text),
            "branch" => branch = Some(text),
            "subdir" => {
                conflict("subdir", subdir, &text)?;
                *subdir = Some(text);
            }
            "checksum" | "commit" => options.checksum = Some(text),
            "keep-git-dir" => options.keep_git_dir = Some(flag(key, value)?),
            "submodules" => options.submodules = Some(flag(key, value)?),
            "mtime" | "fetch-by-commit" => {
                return Err(format!("query {key:?} is not supported by kiln"));
            }
            other => return Err(format!("unexpected query {other:?}")),
        }
    }
    if let Some(tag) = tag {
        let tag = match tag.strip_prefix("refs/tags/") {
            Some(_) => tag,
            None => format!("refs/tags/{tag}"),
        };
        conflict("ref", reference, &tag)?;
        *reference = Some(tag);
        if branch.is_some() {
            return Err("branch conflicts with tag".to_owned());
        }
    }
    if let Some(branch) = branch {
        let branch = match branch.strip_prefix("refs/heads/") {
            Some(_) => branch,
            None => format!("refs/heads/{branch}"),
        };
        conflict("ref", reference, &branch)?;
        *reference = Some(branch);
    }
    Ok(options)
}

impl Remote {
    /// What `arg` names, if it is remote (moby's `urlutil` rules, which buildx uses): git for
    /// `git://`, `git@`, `github.com/`, and http(s) URLs whose path ends in `.git`; http(s)
    /// otherwise. `None` for anything else, which is a directory.
    pub fn parse(arg: &str) -> Result<Option<Remote>, Error> {
        let is_http = arg.starts_with("http://") || arg.starts_with("https://");
        let (before_fragment, fragment) = match arg.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (arg, None),
        };
        let (before_query, query) = match before_fragment.split_once('?') {
            Some((url, query)) => (url, Some(query)),
            None => (before_fragment, None),
        };
        let is_git = ["git://", "git@", "github.com/"]
            .iter()
            .any(|p| arg.starts_with(p))
            || (is_http && before_query.ends_with(".git"));
        if is_git {
            let url = match before_query.strip_prefix("github.com/") {
                Some(path) => format!("https://github.com/{path}"),
                None => before_query.to_owned(),
            };
            let (mut reference, mut subdir) = match fragment {
                None => (None, None),
                Some(f) => {
                    let (reference, subdir) = f.split_once(':').unwrap_or((f, ""));
                    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                    (non_empty(reference), non_empty(subdir))
                }
            };
            let options = match query {
                Some(query) => load_query(query, &mut reference, &mut subdir)
                    .map_err(|e| Error::BadInput(format!("{arg}: {e}")))?,
                None => GitOptions::default(),
            };
            return Ok(Some(Remote::Git {
                url,
                reference,
                subdir,
                options,
            }));
        }
        Ok(is_http.then(|| Remote::Http(arg.to_owned())))
    }
}

/// Clones `url` at `reference` into `dir` (which exists and is empty), with its submodules
/// unless `submodules` is false;
/// sets every file's mtime to the commit's time; removes `.git` unless `keep_git_dir`. Returns
/// the commit id.
///
/// `checksum` (`ADD --checksum`) is checked as BuildKit's git source checks it: hex digits
/// that begin the id of what the reference names (an annotated tag's, or its commit's).
pub fn checkout(
    url: &str,
    reference: Option<&str>,
    dir: &Path,
    keep_git_dir: bool,
    checksum: Option<&str>,
    submodules: bool,
) -> Result<String, Error> {
    let reference = reference.unwrap_or("HEAD");
    let failed = |what: &str| {
        let what = what.to_owned();
        move |e: String| Error::BadInput(format!("git source {url}: {what}: {e}"))
    };
    let mismatch = |checksum: &str, got: &str| {
        Error::BadInput(format!(
            "git source {url}: expected checksum to match {checksum}, got {got}: --checksum is \
             not the commit fetched"
        ))
    };
    if let Some(checksum) = checksum {
        if checksum.is_empty() || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            // BuildKit's words.
            return Err(Error::BadInput(format!(
                "git source {url}: invalid checksum {checksum} for Git URL, expected hex \
                 commit hash"
            )));
        }
        if is_commit_id(reference) && !reference.starts_with(checksum) {
            return Err(mismatch(checksum, reference));
        }
    }
    // A sha256 repository needs a sha256 one to fetch into (git does not convert): its ids
    // are 64 digits long, in ls-remote's answer or in the reference itself.
    let sha256 = if is_commit_id(reference) {
        reference.len() == 64
    } else {
        match git_output(dir, &["ls-remote", url, reference]) {
            // BuildKit's words; a remote that answers names every ref it has.
            Ok(out) if out.is_empty() => {
                return Err(Error::BadInput(format!(
                    "git source {url}: repository does not contain ref {reference}"
                )));
            }
            Ok(out) => out
                .split_whitespace()
                .next()
                .is_some_and(|id| id.len() == 64),
            // The fetch says what is wrong.
            Err(_) => false,
        }
    };
    let format = if sha256 { "sha256" } else { "sha1" };
    git(dir, &["init", "-q", &format!("--object-format={format}")]).map_err(failed("git init"))?;
    let shallow = git_shallow(
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
        .map_err(failed(&format!("fetch {reference}")))?;
        git(dir, &["checkout", "-q", "--detach", reference])
            .map_err(failed(&format!("no commit {reference}")))?;
    } else {
        shallow.map_err(failed(&format!("fetch {reference}")))?;
        if let Some(checksum) = checksum {
            // An annotated tag: FETCH_HEAD is the tag object, which the checksum may name.
            let fetched =
                git_output(dir, &["rev-parse", "FETCH_HEAD"]).map_err(failed("git rev-parse"))?;
            let commit = git_output(dir, &["rev-parse", "FETCH_HEAD^{commit}"])
                .map_err(failed("git rev-parse"))?;
            if !fetched.starts_with(checksum) && !commit.starts_with(checksum) {
                return Err(mismatch(checksum, &commit));
            }
        }
        git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"])
            .map_err(failed(&format!("check out {reference}")))?;
    }
    // Submodule URLs are relative to the remote, which `origin` gives them.
    git(dir, &["remote", "add", "origin", url]).map_err(failed("git remote add"))?;
    if submodules {
        git_shallow(
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
        .map_err(failed("fetch its submodules"))?;
    }
    let commit = git_output(dir, &["rev-parse", "HEAD"]).map_err(failed("git rev-parse"))?;
    let time = git_output(dir, &["log", "-1", "--format=%ct", "HEAD"])
        .map_err(failed("git log"))?
        .parse::<u64>()
        .map_err(|e| failed("commit time")(e.to_string()))?;
    if !keep_git_dir {
        let dot_git = dir.join(".git");
        std::fs::remove_dir_all(&dot_git).map_err(Error::io("remove", &dot_git))?;
    }
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(time);
    set_mtimes(dir, when)?;
    Ok(commit)
}

/// Sets the mtime of everything under `dir` (not following links) to `when`.
fn set_mtimes(dir: &Path, when: std::time::SystemTime) -> Result<(), Error> {
    let stamp = rustix::fs::Timestamps {
        last_access: to_timespec(when),
        last_modification: to_timespec(when),
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).map_err(Error::io("read directory", &current))? {
            let entry = entry.map_err(Error::io("read directory", &current))?;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &path,
                &stamp,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io("set the mtime of", &path)(e.into()))?;
        }
    }
    // Directories last would be tidier, but a directory's mtime changes only when its
    // entries do, and none change after this walk started.
    rustix::fs::utimensat(rustix::fs::CWD, dir, &stamp, rustix::fs::AtFlags::empty())
        .map_err(|e| Error::io("set the mtime of", dir)(e.into()))
}

fn to_timespec(when: std::time::SystemTime) -> rustix::fs::Timespec {
    let since = when
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rustix::fs::Timespec {
        tv_sec: since.as_secs() as i64,
        tv_nsec: since.subsec_nanos().into(),
    }
}

/// The directory of a checkout that a `#ref:subdir` names, which must be inside it.
pub fn subdir_of(root: &Path, subdir: Option<&str>, url: &str) -> Result<PathBuf, Error> {
    let Some(subdir) = subdir else {
        return Ok(root.to_path_buf());
    };
    let rel = crate::context::clean_path(subdir);
    let dir = root.join(&rel);
    let real_root = root.canonicalize().map_err(Error::io("resolve", root))?;
    let real = dir.canonicalize().map_err(|_| {
        Error::BadInput(format!(
            "git source {url}: the repository has no directory {subdir}"
        ))
    })?;
    if !(real.starts_with(&real_root) && real.is_dir()) {
        return Err(Error::BadInput(format!(
            "git source {url}: {subdir} is not a directory inside the repository"
        )));
    }
    Ok(real)
}

fn is_commit_id(reference: &str) -> bool {
    matches!(reference.len(), 40 | 64) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// [`git`] with `--depth=1`, and again without it when git refuses a shallow fetch: git's
/// dumb HTTP transport (a repository served as files after `update-server-info`) cannot, and
/// BuildKit's git runs the command again without --depth then (gitutil `argsNoDepth`).
fn git_shallow(dir: &Path, args: &[&str]) -> Result<(), String> {
    let result = git(dir, args);
    // What git said follows the command line, which names --depth itself.
    let said = |e: &str| {
        e.split_at_checked(args.join(" ").len() + 6)
            .map(|(_, said)| said.contains("--depth") || said.contains("shallow"))
    };
    match &result {
        Err(e) if said(e) == Some(true) => {
            let deep: Vec<&str> = args.iter().copied().filter(|a| *a != "--depth=1").collect();
            git(dir, &deep)
        }
        _ => result,
    }
}

/// Runs `git ARGS` in `dir`, never prompting; its stderr is the error.
fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    git_output(dir, args).map(drop)
}

/// [`git`], and what it printed, trimmed.
fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "git sources need the `git` program, which is not on PATH (apt-get install git)"
                    .to_owned()
            }
            _ => format!("run git: {e}"),
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("git {}: {}", args.join(" "), stderr.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_url(url: &str, reference: Option<&str>, subdir: Option<&str>) -> Option<Remote> {
        Some(Remote::Git {
            url: url.into(),
            reference: reference.map(Into::into),
            subdir: subdir.map(Into::into),
            options: GitOptions::default(),
        })
    }

    #[test]
    fn urls_read_as_buildx_reads_them() {
        let parse = |s| Remote::parse(s).unwrap();
        assert_eq!(parse("."), None);
        assert_eq!(parse("some/dir"), None);
        assert_eq!(
            parse("https://h/r.git"),
            git_url("https://h/r.git", None, None)
        );
        assert_eq!(
            parse("https://h/r.git#v1:docker/app"),
            git_url("https://h/r.git", Some("v1"), Some("docker/app"))
        );
        assert_eq!(
            parse("https://h/r.git#:sub"),
            git_url("https://h/r.git", None, Some("sub"))
        );
        assert_eq!(
            parse("git://127.0.0.1/r#main"),
            git_url("git://127.0.0.1/r", Some("main"), None)
        );
        assert_eq!(
            parse("git@github.com:o/r.git"),
            git_url("git@github.com:o/r.git", None, None)
        );
        assert_eq!(
            parse("github.com/o/r"),
            git_url("https://github.com/o/r", None, None)
        );
        assert_eq!(
            parse("https://h/ctx.tar.gz"),
            Some(Remote::Http("https://h/ctx.tar.gz".into()))
        );
        assert_eq!(
            parse("https://h/r.git?tag=v1&subdir=sub"),
            git_url("https://h/r.git", Some("refs/tags/v1"), Some("sub"))
        );
        let Some(Remote::Git { options, .. }) =
            parse("https://h/r.git?commit=abc&keep-git-dir&submodules=false")
        else {
            panic!("a git URL");
        };
        assert_eq!(options.checksum.as_deref(), Some("abc"));
        assert_eq!(options.keep_git_dir, Some(true));
        assert_eq!(options.submodules, Some(false));
        let err = |s| Remote::parse(s).unwrap_err().to_string();
        assert!(err("https://h/r.git?tag=v1#refs/heads/main").contains("ref conflicts"));
        assert!(err("https://h/r.git?nope=1").contains("unexpected query"));
    }

    #[test]
    fn commit_ids_are_hex() {
        assert!(is_commit_id(&"0123abcd".repeat(5)));
        // A short id is a name, as BuildKit's IsCommitSHA has it.
        assert!(!is_commit_id("0123abc"));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id("abc"));
    }
}
