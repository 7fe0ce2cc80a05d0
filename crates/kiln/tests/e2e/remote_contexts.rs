//! Build contexts named by URL: a git repository served by `git daemon` on 127.0.0.1, and a
//! tarball or a Dockerfile served over HTTP. Each builds the image its files build as a
//! directory.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::outputs::{context_build, context_dir};
use crate::util::*;

/// Serves the repositories under `base` over git's own protocol on 127.0.0.1: each
/// connection is handed to `git daemon --inetd`, so the port is listening before any client
/// connects. Its port.
fn git_daemon(base: &Path) -> u16 {
    let git = require("git");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = base.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let input = OwnedFd::from(stream.try_clone().unwrap());
            let output = OwnedFd::from(stream);
            let _ = Command::new(&git)
                .args(["daemon", "--inetd", "--export-all"])
                .arg(format!("--base-path={}", base.display()))
                .stdin(Stdio::from(input))
                .stdout(Stdio::from(output))
                .stderr(Stdio::null())
                .spawn()
                .map(|mut child| child.wait());
        }
    });
    port
}

/// `git init` on `branch`, then one commit of every file in `repo`.
fn init_and_commit_all(repo: &Path, branch: &str, message: &str) {
    git(repo, &["init", "-q", "-b", branch]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
}

fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new(require("git"))
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args))
}

#[test]
fn a_git_context_builds_the_image_its_checkout_builds() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dir = context_dir(&env);
    let from_dir = context_build(&env, &[dir.to_str().unwrap()], None);

    // The same files at the root of `main`, and under `docker/app` on a tag.
    let served = env.path("git");
    let repo = served.join("repo.git");
    std::fs::create_dir_all(&repo).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(&repo));
    init_and_commit_all(&repo, "main", "root");
    let root_commit = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let app = env.path("app");
    std::fs::create_dir(&app).unwrap();
    for name in entries(&repo).iter().filter(|n| *n != ".git") {
        std::fs::rename(repo.join(name), app.join(name)).unwrap();
    }
    std::fs::create_dir(repo.join("docker")).unwrap();
    std::fs::rename(&app, repo.join("docker/app")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "moved"]);
    git(&repo, &["tag", "v2"]);
    git(&repo, &["checkout", "-q", "-b", "other", &root_commit]);
    std::fs::write(repo.join("Dockerfile"), "FROM busybox\nRUN exit 3\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "broken on purpose"]);
    git(&repo, &["checkout", "-q", "main"]);
    git(&repo, &["reset", "-q", "--hard", &root_commit]);
    let port = git_daemon(&served);
    let url = format!("git://127.0.0.1:{port}/repo.git");

    assert_eq!(
        context_build(&env, &[&url], None),
        from_dir,
        "the default branch"
    );
    assert_eq!(
        context_build(&env, &[&format!("{url}#v2:docker/app")], None),
        from_dir,
        "a tag and a subdirectory"
    );
    assert_eq!(
        context_build(&env, &[&format!("{url}#{root_commit}")], None),
        from_dir,
        "a commit id"
    );
    let (out, log) = env.build_output(&["--no-lint", &format!("{url}#other")]);
    assert!(
        !out.status.success(),
        "branch `other` fails on purpose:\n{log}"
    );
    assert!(log.contains("exit 3"), "branch `other` was built:\n{log}");
}

#[test]
fn an_http_context_is_a_tarball_or_a_dockerfile() {
    let env = Env::new();
    env.busybox_base("busybox");
    let dir = context_dir(&env);
    let from_dir = context_build(&env, &[dir.to_str().unwrap()], None);
    let tarball = Command::new(require("tar"))
        .arg("-C")
        .arg(&dir)
        .args(["-czf", "-", "."])
        .output()
        .unwrap();
    assert_success(&tarball, "tar -czf");
    let port = loopback_server_of(tarball.stdout);
    let url = format!("http://127.0.0.1:{port}/ctx.tar.gz");
    assert_eq!(
        context_build(&env, &[&url], None),
        from_dir,
        "a tarball URL"
    );

    let port = loopback_server("FROM busybox\nRUN echo \"remote dockerfile $((6*7))\"\n");
    let (out, log) =
        env.build_output(&["--no-lint", &format!("http://127.0.0.1:{port}/Dockerfile")]);
    assert_success(&out, "kiln build of a Dockerfile URL");
    assert!(log.contains("remote dockerfile 42"), "{log}");
}

#[test]
fn an_unreachable_git_context_fails_naming_it_and_leaves_nothing() {
    let env = Env::new();
    env.busybox_base("busybox");
    require("git");
    // A port nothing listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("git://127.0.0.1:{port}/nothing.git");
    let err = env.fails(&["build", &url]);
    assert!(err.contains(&url) && err.contains("fetch"), "{err}");
    let tmp = env.root().join("tmp");
    assert_eq!(
        entries(&tmp),
        Vec::<String>::new(),
        "staging left in {}",
        tmp.display()
    );
}

#[test]
fn build_contexts_of_git_and_http_urls_serve_copy_from() {
    let env = Env::new();
    env.busybox_base("busybox");
    let served = env.path("git");
    let repo = served.join("lib.git");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join("src/lib.txt"), "from git\n").unwrap();
    init_and_commit_all(&repo, "main", "lib");
    let git_port = git_daemon(&served);
    let http_port = loopback_server("downloaded\n");
    let ctx = env.context(
        "app",
        "FROM busybox\nCOPY --from=lib lib.txt /lib.txt\nCOPY --from=dl notes.txt /notes.txt\n\
         RUN cat /lib.txt /notes.txt\n",
        &[],
    );
    let (out, log) = env.build_output(&[
        "--no-lint",
        "--build-context",
        &format!("lib=git://127.0.0.1:{git_port}/lib.git#main:src"),
        "--build-context",
        &format!("dl=http://127.0.0.1:{http_port}/files/notes.txt"),
        &ctx,
    ]);
    assert_success(&out, "kiln build with URL build contexts");
    assert!(
        log.contains("from git") && log.contains("downloaded"),
        "{log}"
    );
}

#[test]
fn add_of_a_git_url_copies_the_checkout() {
    // BuildKit's ADD of a git source (dockerfile2llb, llb.Git): the checkout's files without
    // `.git` unless --keep-git-dir, one source only, and --checksum is the commit.
    let env = Env::new();
    env.busybox_base("busybox");
    let served = env.path("git");
    let repo = served.join("app.git");
    std::fs::create_dir_all(repo.join("src/pkg")).unwrap();
    std::fs::write(repo.join("src/pkg/mod.py"), "print('from git')\n").unwrap();
    std::fs::write(repo.join("README"), "top\n").unwrap();
    init_and_commit_all(&repo, "main", "app");
    git(&repo, &["tag", "v1"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let port = git_daemon(&served);
    let url = format!("git://127.0.0.1:{port}/app.git");
    let ctx = env.context(
        "addgit",
        &format!(
            "FROM busybox\nADD {url}#v1:src /app/\nADD --keep-git-dir=true --checksum={commit} {url} /full\n\
             RUN test -f /app/pkg/mod.py && test ! -e /app/README && test ! -e /app/.git \\\n\
             && test -d /full/.git && test -f /full/README && echo \"git added $((6*7))\"\n"
        ),
        &[],
    );
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert_success(&out, "kiln build with ADD of git sources");
    assert!(log.contains("git added 42"), "{log}");
    // The same commit fetched again: the same files, mtimes and all, so the steps are cached.
    let (_, log) = env.build_output(&["--no-lint", &ctx]);
    assert_eq!(step_log(&log, "#v1:src").last(), Some(&"CACHED"), "{log}");

    for (dockerfile, expected) in [
        (
            format!("FROM busybox\nADD --checksum={} {url} /x\n", "0".repeat(40)),
            "is not the commit fetched",
        ),
        (
            format!("FROM busybox\nADD {url} Dockerfile /x/\n"),
            "only one source can be specified",
        ),
        (
            "FROM busybox\nADD --keep-git-dir=true Dockerfile /x\n".to_owned(),
            "only a git source",
        ),
    ] {
        let bad = env.context("addgit-bad", &dockerfile, &[]);
        let err = env.fails(&["build", "--no-lint", &bad]);
        assert!(err.contains(expected), "{dockerfile}: {err}");
    }
}

/// Serves the files under `root` over plain HTTP on 127.0.0.1 (GET only, 404 for anything
/// missing): git's "dumb" HTTP transport, as Go's `http.FileServer` in BuildKit's tests.
fn static_file_server(root: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let path = path
                .split('?')
                .next()
                .unwrap_or("/")
                .trim_start_matches('/');
            let file = root.join(path);
            let response = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let mut r =
                        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    r.extend(body);
                    r
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = std::io::Write::write_all(&mut stream, &response);
        }
    });
    port
}

#[test]
fn add_of_a_git_url_over_dumb_http_fetches_without_depth() {
    // BuildKit's testExcludedFilesOnCopy (exclude_patterns_test.go) serves its repository with
    // `git update-server-info` and http.FileServer; git's dumb transport cannot fetch
    // --depth=1, and BuildKit's git CLI then fetches again without it (gitutil argsNoDepth).
    let env = Env::new();
    env.busybox_base("busybox");
    let served = env.path("www");
    let repo = served.join("repo");
    std::fs::create_dir_all(repo.join("dir3")).unwrap();
    std::fs::write(repo.join("dir3/file-302.mpeg"), "10").unwrap();
    init_and_commit_all(&repo, "main", "0.1");
    git(&repo, &["tag", "0.1"]);
    git(&repo, &["update-server-info"]);
    let port = static_file_server(&served);
    let ctx = env.context(
        "dumb",
        &format!(
            "FROM busybox\nADD --keep-git-dir=true http://127.0.0.1:{port}/repo/.git#0.1 /src/\n\
             RUN test -d /src/.git && echo \"fetched $(cat /src/dir3/file-302.mpeg)\"\n"
        ),
        &[],
    );
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert_success(&out, &format!("ADD of a git URL over dumb HTTP\n{log}"));
    assert!(log.contains("fetched 10"), "{log}");
}

#[test]
fn add_of_a_git_url_checks_checksum_and_object_format_as_buildkit_does() {
    // BuildKit's testAddGitSHA1/testAddGitSHA256 (dockerfile_addgit_test.go): a sha256
    // repository is fetched too; --checksum is a hex prefix of the commit (source/git
    // resolveMetadata); a wrong one is "expected checksum to match", garbage is "invalid
    // checksum … expected hex commit hash".
    let env = Env::new();
    env.busybox_base("busybox");
    let served = env.path("www");
    let repo = served.join("sha256");
    std::fs::create_dir_all(&repo).unwrap();
    git(
        &repo,
        &["init", "-q", "--object-format=sha256", "-b", "main"],
    );
    for tag in ["v0.0.1", "v0.0.2"] {
        std::fs::write(repo.join("foo"), format!("foo of {tag}\n")).unwrap();
        git(&repo, &["add", "foo"]);
        git(&repo, &["commit", "-q", "-m", tag]);
        git(&repo, &["tag", tag]);
    }
    git(&repo, &["update-server-info"]);
    let v1 = git(&repo, &["rev-parse", "v0.0.1"]).trim().to_owned();
    let v2 = git(&repo, &["rev-parse", "v0.0.2"]).trim().to_owned();
    assert_eq!(v2.len(), 64, "a sha256 repository");
    let port = static_file_server(&served);
    let url = format!("http://127.0.0.1:{port}/sha256/.git");
    let ctx = env.context(
        "ok",
        &format!(
            "FROM busybox\nADD --checksum={} {url}#v0.0.2 /x\nRUN [ \"$(cat /x/foo)\" = \"foo of v0.0.2\" ] && echo \"checked $((6*7))\"\n",
            &v2[..12]
        ),
        &[],
    );
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert_success(&out, &format!("sha256 repository, checksum prefix\n{log}"));
    assert!(log.contains("checked 42"), "{log}");
    for (checksum, expected) in [
        (v1.as_str(), "expected checksum to match"),
        ("foobar", "expected hex commit hash"),
    ] {
        let bad = env.context(
            "bad",
            &format!("FROM busybox\nADD --checksum={checksum} {url}#v0.0.2 /x\n"),
            &[],
        );
        let err = env.fails(&["build", "--no-lint", &bad]);
        assert!(err.contains(expected), "{checksum}: {err}");
    }
}

#[test]
fn add_checksum_does_not_change_the_cache_key() {
    // BuildKit's testAddGitChecksumCache (dockerfile_addgit_test.go): the same tag fetched
    // with and without --checksum is the same source, so the steps after it stay cached.
    let env = Env::new();
    env.busybox_base("busybox");
    let served = env.path("www");
    let repo = served.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("foo"), "foo of v0.0.2\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "foo"]);
    git(&repo, &["commit", "-q", "-m", "v0.0.2"]);
    git(&repo, &["tag", "v0.0.2"]);
    git(&repo, &["update-server-info"]);
    let commit = git(&repo, &["rev-parse", "v0.0.2"]).trim().to_owned();
    let port = static_file_server(&served);
    let url = format!("http://127.0.0.1:{port}/repo/.git#v0.0.2");
    let unique = |name: &str, flag: &str| -> String {
        let ctx = env.context(
            name,
            &format!(
                "FROM busybox AS src\nADD --keep-git-dir {flag}{url} /repo\n\
                 RUN head -c 16 /dev/urandom | od -An -tx1 > /repo/unique.txt\n\
                 FROM scratch\nCOPY --from=src /repo/unique.txt /\n"
            ),
            &[],
        );
        let out_dir = env.path(&format!("{name}-out"));
        env.ok(&[
            "build",
            "--no-lint",
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
            &ctx,
        ]);
        std::fs::read_to_string(out_dir.join("unique.txt")).unwrap()
    };
    let without = unique("without", "");
    let with = unique("with", &format!("--checksum={commit} "));
    assert_eq!(without, with, "the cache matched: the same unique file");
}

#[test]
fn a_git_context_over_dumb_http_fetches_its_submodules() {
    // BuildKit's testGitQueryString (dockerfile_addgit_test.go), "withsubmod": a context
    // repository on git's dumb HTTP transport whose submodule is served the same way;
    // BuildKit's git fetches again without --depth, for the submodules too.
    let env = Env::new();
    let served = env.path("www");
    let sub = served.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("file"), "123\n").unwrap();
    git(&sub, &["init", "-q", "-b", "main"]);
    git(&sub, &["add", "file"]);
    git(&sub, &["commit", "-q", "-m", "initial"]);
    git(&sub, &["update-server-info"]);
    let port = static_file_server(&served);
    let top = served.join("top");
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(
        top.join("Dockerfile"),
        "FROM scratch AS withsubmod\nCOPY submod/file out\n",
    )
    .unwrap();
    git(&top, &["init", "-q", "-b", "main"]);
    git(
        &top,
        &[
            "submodule",
            "add",
            "-q",
            &format!("http://127.0.0.1:{port}/sub/.git"),
            "submod",
        ],
    );
    git(&top, &["add", "-A"]);
    git(&top, &["commit", "-q", "-m", "initial"]);
    git(&top, &["update-server-info"]);
    let out_dir = env.build_to_dir("out", &[&format!("http://127.0.0.1:{port}/top/.git")]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("out")).unwrap(),
        "123\n"
    );
}

#[test]
fn git_url_queries_name_refs_and_options_as_buildkit_reads_them() {
    // BuildKit's testGitQueryString (dockerfile_addgit_test.go): `?ref=`, `?branch=`, `?tag=`,
    // `?commit=`, `?subdir=`, `?keep-git-dir` and `?submodules=false`, for a context and for
    // ADD, with BuildKit's errors.
    let env = Env::new();
    let served = env.path("www");
    let repo = served.join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    std::fs::write(
        repo.join("Dockerfile"),
        "FROM scratch AS withgit\nCOPY .git/HEAD out\nFROM scratch\nCOPY foo out\n",
    )
    .unwrap();
    std::fs::copy(repo.join("Dockerfile"), repo.join("sub/Dockerfile")).unwrap();
    std::fs::write(repo.join("sub/foo"), "subfeature\n").unwrap();
    std::fs::write(repo.join("foo"), "base\n").unwrap();
    init_and_commit_all(&repo, "master", "base");
    git(&repo, &["branch", "base"]);
    std::fs::write(repo.join("foo"), "v0.0.2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "v0.0.2"]);
    git(&repo, &["tag", "v0.0.2"]);
    let v2 = git(&repo, &["rev-parse", "v0.0.2"]).trim().to_owned();
    std::fs::write(repo.join("foo"), "latest\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "latest"]);
    git(&repo, &["update-server-info"]);
    let port = static_file_server(&served);
    let url = format!("http://127.0.0.1:{port}/repo/.git");
    let out_dir = env.path("out");
    let dest = format!("type=local,dest={}", out_dir.display());
    for (query, target, expected) in [
        ("?branch=base", None, "base\n"),
        ("?ref=base&subdir=sub", None, "subfeature\n"),
        ("?tag=v0.0.2#refs/tags/v0.0.2", None, "v0.0.2\n"),
        (
            &format!("?tag=v0.0.2&commit={v2}") as &str,
            None,
            "v0.0.2\n",
        ),
        (
            "?tag=v0.0.2&keep-git-dir=true",
            Some("withgit"),
            &format!("{v2}\n") as &str,
        ),
    ] {
        let _ = std::fs::remove_dir_all(&out_dir);
        let context = format!("{url}{query}");
        let mut args = vec!["build", "--no-lint", "-o", &dest];
        if let Some(target) = target {
            args.extend(["--target", target]);
        }
        args.push(&context);
        env.ok(&args);
        assert_eq!(
            std::fs::read_to_string(out_dir.join("out")).unwrap(),
            expected,
            "{query}"
        );
    }
    for (query, error) in [
        ("?branch=v0.0.2", "repository does not contain ref"),
        (
            &format!("?ref={}", &v2[..8]) as &str,
            "repository does not contain ref",
        ),
        (
            &format!("?commit={}", &v2[..8]),
            "expected checksum to match",
        ),
        ("?tag=v0.0.2#refs/heads/master", "ref conflicts"),
    ] {
        let context = format!("{url}{query}");
        let err = env.fails(&["build", "--no-lint", "-o", &dest, &context]);
        assert!(err.contains(error), "{query}: {err}");
    }
    // ADD takes the same URL.
    env.busybox_base("busybox");
    let ctx = env.context(
        "add",
        &format!("FROM busybox\nADD {url}?tag=v0.0.2&keep-git-dir /repo/\nRUN cat /repo/foo /repo/.git/HEAD\n"),
        &[],
    );
    let (out, log) = env.build_output(&["--no-lint", &ctx]);
    assert_success(&out, &format!("ADD with a query\n{log}"));
    assert!(log.contains("v0.0.2") && log.contains(&v2), "{log}");
}

#[test]
fn a_dockerfile_url_context_builds_whatever_dash_f_says() {
    // BuildKit's testHTTPDockerfile (dockerfile_git_http_test.go): the context is a Dockerfile
    // served over HTTP, with a filename that is "bogus, any name should work".
    let env = Env::new();
    env.busybox_base("busybox");
    let port = loopback_server(
        "FROM busybox\nRUN echo -n \"foo-contents\" > /foo\nFROM scratch\nCOPY --from=0 /foo /foo\n",
    );
    let out_dir = env.build_to_dir(
        "out",
        &["-f", "mydockerfile", &format!("http://127.0.0.1:{port}/df")],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("foo")).unwrap(),
        "foo-contents"
    );
}

#[test]
fn source_date_epoch_context_of_a_git_context_is_its_commit_time() {
    // BuildKit's testSourceDateEpochContextGit (dockerfile_source_date_epoch_test.go):
    // SOURCE_DATE_EPOCH=context takes the time of the git context's commit.
    let env = Env::new();
    let served = env.path("www");
    let repo = served.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    run(Command::new(require("git"))
        .current_dir(&repo)
        .env("GIT_AUTHOR_DATE", "2023-11-14T22:15:01Z")
        .env("GIT_COMMITTER_DATE", "2023-11-14T22:15:01Z")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "msg",
        ]));
    git(&repo, &["update-server-info"]);
    let port = static_file_server(&served);
    env.ok(&[
        "build",
        "--no-lint",
        "--build-arg",
        "SOURCE_DATE_EPOCH=context",
        "-t",
        "fromgit",
        &format!("http://127.0.0.1:{port}/repo/.git"),
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "fromgit"])).unwrap();
    let created = inspect[0]["Created"].as_str().unwrap_or_default();
    assert!(created.starts_with("2023-11-14T22:15:01"), "{created}");
}

#[test]
fn source_date_epoch_context_of_a_url_context_is_its_last_modified_or_newest_file() {
    // BuildKit's testSourceDateEpochContextHTTPLastModified and …ContextHTTPArchive
    // (dockerfile_source_date_epoch_test.go): SOURCE_DATE_EPOCH=context of an archive served
    // over HTTP is its Last-Modified, or without one the newest time in the archive.
    let env = Env::new();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body, mtime) in [
        (
            "Dockerfile",
            &b"FROM scratch\nCOPY foo /\n"[..],
            1_700_000_302 - 3600,
        ),
        ("foo", &b"bar"[..], 1_700_000_302),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, name, body).unwrap();
    }
    let archive = tar.into_inner().unwrap();
    let created = |tag: &str| -> String {
        let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", tag])).unwrap();
        inspect[0]["Created"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // 1700000201 is Tue, 14 Nov 2023 22:16:41 GMT.
    let with = loopback_server_with(
        "Last-Modified: Tue, 14 Nov 2023 22:16:41 GMT\r\n",
        archive.clone(),
    );
    let without = loopback_server_of(archive);
    for (port, tag, expected) in [
        (with, "lastmodified", "2023-11-14T22:16:41"),
        (without, "newest", "2023-11-14T22:18:22"),
    ] {
        env.ok(&[
            "build",
            "--no-lint",
            "--build-arg",
            "SOURCE_DATE_EPOCH=context",
            "-t",
            tag,
            &format!("http://127.0.0.1:{port}/context.tar"),
        ]);
        assert!(
            created(tag).starts_with(expected),
            "{tag}: {}",
            created(tag)
        );
    }
}

#[test]
fn source_date_epoch_of_a_source_stage_or_named_context_is_its_download_time() {
    // BuildKit's testSourceDateEpochStageHTTPArchive, …NamedContextHTTPLastModified and
    // …NamedContextHTTPArchive (dockerfile_source_date_epoch_test.go): `ARG
    // SOURCE_DATE_EPOCH=mysource` names a stage of one remote ADD, or a named context, whose
    // download gives the time: its Last-Modified, or the newest file of its archive.
    let env = Env::new();
    env.busybox_base("busybox");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o600);
    header.set_mtime(1_700_000_402);
    header.set_cksum();
    tar.append_data(&mut header, "foo", &b"bar"[..]).unwrap();
    let archive = tar.into_inner().unwrap();
    let plain = loopback_server_of(archive.clone());
    // 1700000601 is Tue, 14 Nov 2023 22:23:21 GMT.
    let dated = loopback_server_with("Last-Modified: Tue, 14 Nov 2023 22:23:21 GMT\r\n", archive);
    let epoch_of = |name: &str, dockerfile: &str, extra: &[&str]| -> String {
        let ctx = env.context(name, dockerfile, &[]);
        let out_dir = env.path(&format!("{name}-out"));
        let dest = format!("type=local,dest={}", out_dir.display());
        let mut args = vec!["build", "--no-lint", "-o", &dest];
        args.extend_from_slice(extra);
        args.push(&ctx);
        env.ok(&args);
        std::fs::read_to_string(out_dir.join("epoch")).unwrap()
    };
    let run = "FROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo -n \"$SOURCE_DATE_EPOCH\" > /epoch\n";
    let stage = format!(
        "ARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nADD http://127.0.0.1:{plain}/src.tar /\n{run}"
    );
    assert_eq!(epoch_of("stage", &stage, &[]), "1700000402");
    let named = format!("ARG SOURCE_DATE_EPOCH=mysource\n{run}");
    let dated_url = format!("mysource=http://127.0.0.1:{dated}/src.tar");
    assert_eq!(
        epoch_of("named", &named, &["--build-context", &dated_url]),
        "1700000601"
    );
    let plain_url = format!("mysource=http://127.0.0.1:{plain}/src.tar");
    assert_eq!(
        epoch_of("named-archive", &named, &["--build-context", &plain_url]),
        "1700000402"
    );
}
