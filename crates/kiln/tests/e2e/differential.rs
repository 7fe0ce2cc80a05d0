//! Differential tests against the real docker engine (issue 3, acceptance 1): every Dockerfile
//! under `tests/data/differential/<case>/` is built by docker's legacy builder, by BuildKit
//! (both through Debian's `/usr/bin/docker`) and by `kiln build` + `kiln save | docker load`.
//! Then `docker image inspect` must agree on the config fields a Dockerfile sets, `docker
//! export` of a container from each image must agree entry by entry (path, type, mode,
//! uid/gid, size, sha256, link target), and kiln's history (from `docker save`) must be
//! BuildKit's, `empty_layer` included.
//!
//! BuildKit is the reference. Where the legacy builder differs from BuildKit, the case says so
//! (and why) in `legacy`; any other difference fails the test, with a readable diff. A case
//! marked `// needs:` fails until the change it names lands outside this test's reach.
//!
//! `KILN_DIFF_CASES=a,b` runs only those cases (name the base cases a child needs too).
//!
//! Also here: the bad-input tests of acceptance 5 for `kiln build`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::util::*;

/// The image every case starts from, in docker and in kiln's store under the same name.
const BASE: &str = "kiln-diff/busybox";
/// The same PATH on both sides, so that the legacy builder and BuildKit agree on Env.
const BASE_PATH: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The config fields of acceptance 1 (`Author` sits beside `Config` in the inspect JSON).
const FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "ExposedPorts",
    "User",
    "Labels",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
    "Author",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Builder {
    Legacy,
    BuildKit,
    Kiln,
}

impl Builder {
    fn name(self) -> &'static str {
        match self {
            Builder::Legacy => "legacy",
            Builder::BuildKit => "buildkit",
            Builder::Kiln => "kiln",
        }
    }

    fn image(self, case: &str) -> String {
        format!("kiln-diff/{}/{case}:latest", self.name())
    }
}

/// How docker's legacy builder relates to BuildKit for a case.
#[derive(Clone, Copy, Debug)]
enum Legacy {
    /// Same config fields and same files.
    Agrees,
    /// The legacy builder refuses the Dockerfile; the reason is what it says.
    CannotBuild(&'static str),
    /// The legacy builder sets these inspect fields (or, for `"files"`, the exported files)
    /// differently from BuildKit (why: the string). kiln is held to BuildKit; the legacy
    /// result must still differ, so that the note stays true.
    Differs(&'static [&'static str], &'static str),
}

#[derive(Clone, Copy, Debug)]
struct Case {
    /// The directory under `tests/data/differential/`.
    name: &'static str,
    /// `--build-arg`s; `{builder}` becomes the builder's name, `{port}` the http server's port.
    build_args: &'static [&'static str],
    target: Option<&'static str>,
    legacy: Legacy,
    /// docker 20.10's Dockerfile frontends (legacy and BuildKit's built-in one) reject
    /// `ADD --checksum`; docker builds the file with the flag taken out.
    docker_strips_checksum: bool,
    /// The case whose image this one starts FROM (built first, by the same builder).
    base: Option<&'static str>,
    /// More `build` flags, the same for every builder (`--label K=V`).
    flags: &'static [&'static str],
    /// Modes the test gives these context directories first (git keeps no directory modes,
    /// and a checkout's depend on the umask).
    dir_modes: &'static [(&'static str, u32)],
    /// History lines that docker 20.10's BuildKit writes in an older form than the current
    /// reference: (20.10's line, the reference's line), `created_by` only, with `{port}`,
    /// `{platform}`, `{os}` and `{arch}` filled in. kiln is held to the reference; each 20.10
    /// line must still be in BuildKit's history, so that the pair stays true. (EXPOSE lines
    /// need no pair: see `expose_as_docker_20_10`.)
    newer_history: &'static [(&'static str, &'static str)],
    /// Paths whose mode docker 20.10's BuildKit sets otherwise than the current reference:
    /// (path, 20.10's mode, the reference's mode). As with `newer_history`, kiln is held to
    /// the reference, and 20.10's mode must still be what BuildKit gives.
    newer_modes: &'static [(&'static str, u32, u32)],
    /// Directories whose entries below them the current reference gives an owner that docker
    /// 20.10's BuildKit does not: (directory, uid, gid). At least one entry below must have
    /// another owner in 20.10's image, so that the note stays true.
    newer_owners: &'static [(&'static str, u64, u64)],
}

const fn case(name: &'static str) -> Case {
    Case {
        name,
        build_args: &[],
        target: None,
        legacy: Legacy::Agrees,
        docker_strips_checksum: false,
        base: None,
        flags: &[],
        dir_modes: &[],
        newer_history: &[],
        newer_modes: &[],
        newer_owners: &[],
    }
}

/// A case FROM `kiln-diff/${BUILDER}/<base>`: the base case as this builder built it.
const fn child(name: &'static str, base: &'static str) -> Case {
    Case {
        build_args: &["BUILDER={builder}"],
        base: Some(base),
        ..case(name)
    }
}

const LEGACY_REINCLUDED_DIRS: &str = "a directory that .dockerignore excludes but an exception \
     reaches into: BuildKit's context keeps it with its own mode, the legacy builder makes it \
     anew, 0755";

/// `ARG PORT` given by `--build-arg PORT={port}`.
///
/// The history of an ARG: docker 20.10's BuildKit wrote the Dockerfile's default (`ARG K` when
/// there is none); the reference writes the value the ARG took, `ARG K=<--build-arg, else the
/// expanded default, else the global value>` (dockerfile2llb/convert.go `dispatchArg`, whose
/// default is expanded only when used: BuildKit's testArgDefaultExpansion).
const ARG_PORT_HISTORY: &[(&str, &str)] = &[("ARG PORT", "ARG PORT={port}")];

/// In build order: bases (cmdbase, onbuild-base) before the cases that use them.
const CASES: &[Case] = &[
    Case {
        flags: &[
            "--label",
            "cli.label=from-cli",
            "--label",
            "single=the-cli-wins",
        ],
        ..case("maintainer-label")
    },
    case("env-forms"),
    Case {
        build_args: &["FLAVOR=spicy", "OVERRIDDEN=from-cli", "VERSION=2.0"],
        newer_history: &[
            ("ARG VERSION", "ARG VERSION=2.0"),
            ("ARG FLAVOR=plain", "ARG FLAVOR=spicy"),
            ("ARG OVERRIDDEN=default", "ARG OVERRIDDEN=from-cli"),
            ("ARG FLAVOR=ignored-redeclare", "ARG FLAVOR=spicy"),
        ],
        ..case("arg-meta-from")
    },
    case("workdir"),
    Case {
        build_args: &["PORT=8443"],
        newer_history: &[("ARG PORT=8080", "ARG PORT=8443")],
        ..case("expose")
    },
    case("cmd-entrypoint-exec"),
    case("cmd-entrypoint-shell"),
    case("cmdbase"),
    child("entrypoint-clears-cmd", "cmdbase"),
    child("entrypoint-keeps-own-cmd", "cmdbase"),
    child("cmd-inherited", "cmdbase"),
    case("user-volume-stopsignal"),
    case("shell"),
    case("healthcheck"),
    Case {
        legacy: Legacy::Differs(
            &["Healthcheck"],
            "the legacy builder carries Interval and Timeout over from the HEALTHCHECK that a \
             later one replaces; BuildKit keeps only the later one's options",
        ),
        ..case("healthcheck-shell")
    },
    Case {
        legacy: Legacy::Differs(
            &["Healthcheck"],
            "the legacy builder keeps the options of the HEALTHCHECK that NONE replaces \
             (Interval stays 10s); BuildKit writes {\"Test\":[\"NONE\"]} alone",
        ),
        ..case("healthcheck-none")
    },
    // needs (onbuild-base, onbuild-child, onbuild-forms): no history entry for ONBUILD, as
    // docker 20.10's BuildKit writes none. meta.rs records one because `apply_changes`
    // (build/mod.rs) pops the history after each `meta::apply`; once it truncates to the length
    // from before the call instead, meta.rs can stop recording ONBUILD. Fails until then.
    case("onbuild-base"),
    child("onbuild-child", "onbuild-base"),
    case("copy-basic"),
    case("copy-glob"),
    case("copy-chown"),
    Case {
        legacy: Legacy::CannotBuild("the --chmod option requires BuildKit"),
        // BuildKit's testCopyChmod: directories that COPY --chmod creates take its mode
        // (fsutil 183e7fb, 2025); docker 20.10's made them 0755.
        newer_modes: &[("chmod-dir", 0o755, 0o640), ("added", 0o755, 0o640)],
        ..case("copy-chmod")
    },
    Case {
        dir_modes: &[("build/keep", 0o750)],
        legacy: Legacy::Differs(&["files"], LEGACY_REINCLUDED_DIRS),
        ..case("dockerignore")
    },
    case("copy-from-stage"),
    // needs: stage.rs `base_state` for `scratch` to start from BuildKit's empty image, whose
    // config has WorkingDir "/" and Env ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
    // /sbin:/bin"] (with that PATH also given to `vars.set_base_env`). Fails until then.
    Case {
        legacy: Legacy::Differs(
            &["WorkingDir"],
            "FROM scratch: BuildKit starts from an image with WorkingDir \"/\", the legacy \
             builder's scratch has \"\" (both put the default PATH in Env)",
        ),
        ..case("copy-from-image")
    },
    case("add-local"),
    Case {
        build_args: &["PORT={port}"],
        newer_history: ARG_PORT_HISTORY,
        ..case("add-url")
    },
    Case {
        build_args: &["PORT={port}"],
        docker_strips_checksum: true,
        newer_history: ARG_PORT_HISTORY,
        ..case("add-url-checksum")
    },
    Case {
        target: Some("middle"),
        ..case("multi-stage-target")
    },
    case("scratch"),
    case("seed-python-base"),
    Case {
        legacy: Legacy::Differs(
            &["files"],
            "BuildKit creates a missing WORKDIR (and its parents) as the current USER; the \
             legacy builder makes them root's",
        ),
        ..case("workdir-user")
    },
    Case {
        legacy: Legacy::Differs(
            &["files"],
            "ADD --chown of a tarball into a new directory: BuildKit chowns the directory it \
             creates for the destination, the legacy builder leaves it root's (neither chowns \
             the extracted entries)",
        ),
        // BuildKit's testDockerfileAddChownArchive: today's BuildKit chowns the extracted
        // entries too (its unpack passes --chown as the untar's ChownOpts); 20.10's did not.
        newer_owners: &[("owned-tar", 1000, 1000)],
        ..case("add-chown")
    },
    case("escape-directive"),
    // needs: stage.rs `base_state`, for `FROM <earlier stage>`: the new stage's variables
    // start with the ARGs the parent stage declared, with their values (BuildKit carries them
    // over; `state.vars = vars` there drops them). Fails until then (CHILD_SEES).
    Case {
        legacy: Legacy::Differs(
            &["Env"],
            "BuildKit: a stage FROM another stage inherits the ARGs declared there, so \
             ${STAGE_ONLY} is set in the child; the legacy builder forgets them",
        ),
        newer_history: &[("ARG GLOBAL", "ARG GLOBAL=global-default")],
        ..case("stage-inheritance")
    },
    case("copy-symlinks"),
    case("copy-onto-existing"),
    case("copy-dangling-links"),
    Case {
        legacy: Legacy::CannotBuild(
            "When using COPY with more than one source file, the destination must be a \
             directory and end with a /",
        ),
        ..case("copy-multi-dest")
    },
    case("copy-dest-forms"),
    case("config-edges"),
    Case {
        dir_modes: &[("docs", 0o750), ("node_modules", 0o700)],
        legacy: Legacy::Differs(&["files"], LEGACY_REINCLUDED_DIRS),
        ..case("dockerignore-exceptions")
    },
    Case {
        legacy: Legacy::CannotBuild("COPY failed: no source files were specified"),
        ..case("copy-glob-dirs")
    },
    // needs: bzip2 and xz archives extracted by ADD, as docker's both builders do (gzip works).
    // `kiln_layer::decompress_auto` knows gzip and zstd only, so `is_tar` in copy.rs sees
    // neither; it wants bzip2 (`BZh`) and xz (`FD 37 7A 58 5A 00`) detection and decoders
    // (e.g. the `bzip2` crate on its pure-Rust libbz2-rs-sys backend and `liblzma` or
    // `lzma-rust2`), a dependency change in kiln-layer. Fails until then.
    case("add-compressed"),
    case("copy-names"),
    Case {
        legacy: Legacy::Differs(
            &["Env"],
            "BuildKit gives TARGETPLATFORM, TARGETOS, TARGETARCH and BUILDPLATFORM values; the \
             legacy builder leaves them empty",
        ),
        newer_history: &[
            ("ARG TARGETPLATFORM", "ARG TARGETPLATFORM={platform}"),
            ("ARG TARGETOS", "ARG TARGETOS={os}"),
            ("ARG TARGETARCH", "ARG TARGETARCH={arch}"),
            ("ARG BUILDPLATFORM", "ARG BUILDPLATFORM={platform}"),
        ],
        ..case("platform-args")
    },
    Case {
        build_args: &["PORT={port}"],
        newer_history: ARG_PORT_HISTORY,
        ..case("add-more")
    },
    case("args-and-words"),
    case("onbuild-forms"),
    case("add-tar-edges"),
    Case {
        legacy: Legacy::Differs(
            &["files"],
            "COPY --from --chown of a setuid file: the legacy builder chowns after writing, and \
             the kernel drops the setuid bit (4755 becomes 0755); BuildKit keeps it",
        ),
        ..case("copy-modes")
    },
    // needs: kiln-layer's `apply_layer`, for a hardlink entry, to chmod and lchown the link
    // path with the entry's header, as moby's createTarFile does (the inode then takes the
    // link header's mode and owners). Fails until then.
    case("add-hardlink-header"),
    Case {
        legacy: Legacy::CannotBuild("COPY failed: file not found in build context"),
        // BuildKit builds only the stages the target needs; the legacy builder builds all of
        // them, and the unused one fails. kiln skips it, as BuildKit does.
        ..case("stage-names")
    },
];

/// Splits the cases into `n` lanes that can be built side by side: a case goes in its base's
/// lane, after it; the others take turns.
fn lanes<'a>(cases: &[&'a Case], n: usize) -> Vec<Vec<&'a Case>> {
    let mut lanes = vec![Vec::new(); n];
    let mut lane_of: HashMap<&str, usize> = HashMap::new();
    let mut turn = 0;
    for case in cases {
        let lane = match case.base.and_then(|b| lane_of.get(b)) {
            Some(lane) => *lane,
            None => {
                turn += 1;
                turn % n
            }
        };
        lane_of.insert(case.name, lane);
        lanes[lane].push(*case);
    }
    lanes
}

/// The cases to run: all of them, or those named in `KILN_DIFF_CASES` (comma-separated; for
/// working on one case; name the bases a child needs too).
fn selected_cases() -> Vec<&'static Case> {
    let only = std::env::var("KILN_DIFF_CASES").unwrap_or_default();
    let only: Vec<&str> = only.split(',').filter(|c| !c.is_empty()).collect();
    for name in &only {
        assert!(
            CASES.iter().any(|c| c.name == *name),
            "KILN_DIFF_CASES names {name:?}, which is not a case"
        );
    }
    CASES
        .iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
        .collect()
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/differential")
}

/// `python3 -m http.server` on 127.0.0.1, killed on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let python = require("python3");
        let mut child = Command::new(python)
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        // It prints `Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ...` once bound.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("python3 -m http.server said {line:?}, not its port"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "http server on port {port} never accepted"
            );
            std::thread::yield_now();
        }
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a build of one case needs besides the case.
struct Setup<'a> {
    env: &'a Env,
    port: u16,
}

fn build_args(case: &Case, builder: Builder, port: u16) -> Vec<String> {
    case.build_args
        .iter()
        .map(|a| {
            a.replace("{builder}", builder.name())
                .replace("{port}", &port.to_string())
        })
        .collect()
}

/// Builds one case with one builder; `Err` carries the builder's output.
fn build(setup: &Setup<'_>, case: &Case, builder: Builder) -> Result<(), String> {
    let dir = data_dir().join(case.name);
    for (sub, mode) in case.dir_modes {
        let path = dir.join(sub);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(*mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    let image = builder.image(case.name);
    let mut cmd = match builder {
        Builder::Kiln => {
            let mut cmd = setup.env.kiln();
            cmd.arg("build");
            cmd
        }
        docker_builder => {
            let mut cmd = docker();
            cmd.env(
                "DOCKER_BUILDKIT",
                if docker_builder == Builder::BuildKit {
                    "1"
                } else {
                    "0"
                },
            );
            cmd.args(["build", "--progress=plain"].iter().filter(|a| {
                // `--progress` is a BuildKit flag; the legacy builder rejects it.
                docker_builder == Builder::BuildKit || !a.starts_with("--progress")
            }));
            if case.docker_strips_checksum {
                let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
                let stripped: String = text
                    .lines()
                    .map(|l| {
                        l.split(' ')
                            .filter(|w| !w.starts_with("--checksum="))
                            .collect::<Vec<_>>()
                            .join(" ")
                            + "\n"
                    })
                    .collect();
                let file = setup
                    .env
                    .path(&format!("{}.{}.Dockerfile", case.name, builder.name()));
                std::fs::write(&file, stripped).unwrap();
                cmd.arg("-f").arg(file);
            }
            cmd
        }
    };
    cmd.args(["-t", &image]);
    for arg in build_args(case, builder, setup.port) {
        cmd.args(["--build-arg", &arg]);
    }
    cmd.args(case.flags);
    if let Some(target) = case.target {
        cmd.args(["--target", target]);
    }
    cmd.arg(&dir);
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "{} build failed ({}):\n{}{}",
            builder.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if builder == Builder::Kiln {
        let mut save = setup
            .env
            .kiln()
            .args(["save", &image])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let load = docker()
            .arg("load")
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        let saved = save.wait_with_output().unwrap();
        if !saved.status.success() || !load.status.success() {
            return Err(format!(
                "kiln save | docker load failed:\n{}{}",
                String::from_utf8_lossy(&saved.stderr),
                String::from_utf8_lossy(&load.stderr)
            ));
        }
    }
    Ok(())
}

/// One entry of a filesystem listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha256: String,
    link: String,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{} size={}",
            self.kind, self.mode, self.uid, self.gid, self.size
        )?;
        if !self.sha256.is_empty() {
            write!(f, " sha256={}", &self.sha256[..12])?;
        }
        if !self.link.is_empty() {
            write!(f, " -> {}", self.link)?;
        }
        Ok(())
    }
}

type Listing = BTreeMap<String, Entry>;

fn normalize(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

/// Lists a tar stream entry by entry, hashing regular files.
fn list_tar(reader: impl Read) -> Listing {
    let mut archive = tar::Archive::new(reader);
    let mut listing = Listing::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        if path.is_empty() {
            continue;
        }
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            other => panic!("unexpected tar entry type {other:?} at {path}"),
        };
        let mut sha256 = String::new();
        if kind == "file" {
            let mut hasher = Sha256::new();
            std::io::copy(&mut entry, &mut hasher).unwrap();
            sha256 = hex::encode(hasher.finalize());
        }
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let link = if kind == "hardlink" {
            normalize(&link)
        } else {
            link
        };
        listing.insert(
            path,
            Entry {
                kind,
                mode: header.mode().unwrap() & 0o7777,
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                size: if kind == "file" {
                    header.size().unwrap()
                } else {
                    0
                },
                sha256,
                link,
            },
        );
    }
    listing
}

/// `docker create` + `docker export` of an image, listed. The daemon, busy with the other
/// tests' builds, has been seen to fail an export once; a second failure fails the test, with
/// docker's own words.
fn export(image: &str) -> Listing {
    let mut failures = Vec::new();
    for _ in 0..2 {
        let id = run(docker().args(["create", image, "/nonexistent-cmd"]))
            .trim()
            .to_owned();
        let mut child = docker()
            .args(["export", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let listing = list_tar(child.stdout.take().unwrap());
        let out = child.wait_with_output().unwrap();
        let _ = docker().args(["rm", &id]).output();
        if out.status.success() {
            return listing;
        }
        failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    panic!("docker export {image} failed twice: {failures:?}");
}

/// What `docker save` says of an image: the paths its own layers hold (whiteouts applied) and
/// its history, one `created_by (empty layer)` line per entry.
struct Saved {
    paths: BTreeSet<String>,
    history: Vec<String>,
}

fn saved(image: &str) -> Saved {
    let saved = docker()
        .args(["save", image])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_success(&saved, &format!("docker save {image}"));
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(&saved.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let mut paths = BTreeSet::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let layer = &files[&normalize(layer.as_str().unwrap())];
        for path in list_tar(&layer[..]).into_keys() {
            let (dir, name) = match path.rsplit_once('/') {
                Some((dir, name)) => (format!("{dir}/"), name),
                None => (String::new(), path.as_str()),
            };
            if name == ".wh..wh..opq" {
                paths.retain(|p: &String| !p.starts_with(&dir) || p.len() == dir.len());
            } else if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = format!("{dir}{gone}");
                let below = format!("{gone}/");
                paths.retain(|p: &String| *p != gone && !p.starts_with(&below));
            } else {
                paths.insert(path);
            }
        }
    }
    let config: serde_json::Value =
        serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
    let history = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    format!(
                        "{}{}",
                        e["created_by"].as_str().unwrap_or(""),
                        if e["empty_layer"] == true {
                            " (empty layer)"
                        } else {
                            ""
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Saved { paths, history }
}

/// BuildKit's history as the current reference writes it: docker 20.10's, with the case's
/// `newer_history` pairs applied. Also the pairs whose 20.10 line is not there (stale notes).
fn reference_history(case: &Case, port: u16, history: &[String]) -> (Vec<String>, Vec<String>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let fill = |line: &str| {
        line.replace("{port}", &port.to_string())
            .replace("{platform}", &format!("linux/{arch}"))
            .replace("{os}", "linux")
            .replace("{arch}", arch)
    };
    let mut history = history.to_vec();
    let mut stale = Vec::new();
    for (old, new) in case.newer_history {
        let (old, new) = (fill(old), fill(new));
        let mut seen = false;
        for line in &mut history {
            let (created_by, empty) = match line.strip_suffix(" (empty layer)") {
                Some(c) => (c, " (empty layer)"),
                None => (line.as_str(), ""),
            };
            if created_by == old {
                *line = format!("{new}{empty}");
                seen = true;
            }
        }
        if !seen {
            stale.push(format!(
                "  buildkit's history has no {old:?}, which the case says 20.10 writes where the \
                 reference writes {new:?}: update the case"
            ));
        }
    }
    (history, stale)
}

/// BuildKit's files as the current reference makes them: docker 20.10's, with the case's
/// `newer_modes` and `newer_owners` applied. Also the notes that no longer hold.
fn reference_files(case: &Case, files: &Listing) -> (Listing, Vec<String>) {
    let mut files = files.clone();
    let mut stale = Vec::new();
    for (path, old, new) in case.newer_modes {
        match files.get_mut(*path) {
            Some(entry) if entry.mode == *old => entry.mode = *new,
            other => stale.push(format!(
                "  the case says buildkit gives /{path} mode {old:04o} (the reference {new:04o}), \
                 but it has {other:?}: update the case"
            )),
        }
    }
    for (dir, uid, gid) in case.newer_owners {
        let below = format!("{dir}/");
        let mut changed = false;
        for (_, entry) in files.iter_mut().filter(|(p, _)| p.starts_with(&below)) {
            changed |= (entry.uid, entry.gid) != (*uid, *gid);
            (entry.uid, entry.gid) = (*uid, *gid);
        }
        if !changed {
            stale.push(format!(
                "  the case says buildkit leaves entries below /{dir} owned otherwise than \
                 {uid}:{gid}, but all are: update the case"
            ));
        }
    }
    (files, stale)
}

/// kiln's EXPOSE history line in docker 20.10's form, to compare with it. The reference writes
/// `EXPOSE [1234/udp 2375/tcp]`, the port list (BuildKit's testHistory; since moby/buildkit
/// 98eab32, 2025); 20.10 wrote the config's map, `EXPOSE map[1234/udp:{} 2375/tcp:{}]`: the
/// same ports, sorted, each once. The list's order is pinned by kiln-build's unit test
/// `expose_history_lists_the_ports_as_buildkit_prints_them`. `Err` (a line that cannot match)
/// if kiln wrote the old form.
fn expose_as_docker_20_10(line: &str) -> Result<String, String> {
    let (created_by, empty) = match line.strip_suffix(" (empty layer)") {
        Some(c) => (c, " (empty layer)"),
        None => (line, ""),
    };
    if created_by.starts_with("EXPOSE map[") {
        return Err(format!(
            "{line} (kiln wrote docker 20.10's form, not the reference's)"
        ));
    }
    let Some(list) = created_by
        .strip_prefix("EXPOSE [")
        .and_then(|l| l.strip_suffix(']'))
    else {
        return Ok(line.to_owned());
    };
    let ports: BTreeSet<&str> = list.split(' ').filter(|p| !p.is_empty()).collect();
    // Go prints a map's keys sorted as strings, as a BTreeSet holds them.
    let map: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
    Ok(format!("EXPOSE map[{}]{empty}", map.join(" ")))
}

/// Readable differences between two histories (a line diff: what kiln lacks, what it has
/// extra); empty when they agree.
fn diff_histories(what: &str, want: &[String], got: &[String]) -> Vec<String> {
    if want == got {
        return Vec::new();
    }
    // Longest common subsequence, then walk it.
    let (n, m) = (want.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if want[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = vec![format!("  {what}: history differs (- missing, + extra):")];
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && want[i] == got[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("    + #{j} {:?}", got[j]));
            j += 1;
        } else {
            out.push(format!("    - #{i} {:?}", want[i]));
            i += 1;
        }
    }
    out
}

/// The inspect fields of acceptance 1, `null` where the image has none.
fn inspect(image: &str) -> BTreeMap<&'static str, serde_json::Value> {
    let out = run(docker().args(["image", "inspect", image]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let image = &json[0];
    FIELDS
        .iter()
        .map(|f| {
            let value = if *f == "Author" {
                image[*f].clone()
            } else {
                image["Config"][*f].clone()
            };
            (*f, value)
        })
        .collect()
}

/// Readable differences between two listings; empty when they agree.
fn diff_listings(what: &str, want: &Listing, got: &Listing) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => out.push(format!("  {what}: /{path}: missing (want {w})")),
            Some(g) if g != w => out.push(format!("  {what}: /{path}: got {g}, want {w}")),
            Some(_) => {}
        }
    }
    for (path, g) in got {
        if !want.contains_key(path) {
            out.push(format!("  {what}: /{path}: unexpected ({g})"));
        }
    }
    out
}

fn diff_configs(
    what: &str,
    want: &BTreeMap<&str, serde_json::Value>,
    got: &BTreeMap<&str, serde_json::Value>,
) -> Vec<String> {
    FIELDS
        .iter()
        .filter(|f| want[*f] != got[*f])
        .map(|f| format!("  {what}: {f}: got {}, want {}", got[*f], want[*f]))
        .collect()
}

/// What docker itself adds to a container's filesystem at create time: docker's export of its
/// own image minus what that image's layers hold. Only these paths may be dropped.
fn added_by_docker(image: &str, own: &BTreeSet<String>, exported: &Listing) -> BTreeSet<String> {
    let added: BTreeSet<String> = exported
        .keys()
        .filter(|p| !own.contains(*p))
        .cloned()
        .collect();
    let expected = |p: &str| {
        matches!(
            p,
            ".dockerenv" | "etc" | "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab"
        ) || ["dev", "proc", "sys"]
            .iter()
            .any(|m| p == *m || p.starts_with(&format!("{m}/")))
    };
    let odd: Vec<&String> = added.iter().filter(|p| !expected(p)).collect();
    assert!(
        odd.is_empty(),
        "docker added unexpected paths to a container of {image}: {odd:?}"
    );
    added
}

/// Both of docker's builders must be there, and be what they say: BuildKit's plain progress
/// starts with `[internal] load build definition`, the legacy builder's with `Step 1/`.
fn check_docker_builders() {
    for (buildkit, marker) in [("1", "[internal] load build definition"), ("0", "Step 1/")] {
        let mut child = docker()
            .env("DOCKER_BUILDKIT", buildkit)
            .args(["build", "-t", "kiln-diff/probe:latest", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            format!("FROM {BASE}\nLABEL probe=1\n").as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains(marker),
            "{} is unavailable through /usr/bin/docker with DOCKER_BUILDKIT={buildkit} (BuildKit \
             is built into docker.io's engine; this test needs it and the legacy builder):\n{text}",
            if buildkit == "1" {
                "BuildKit"
            } else {
                "the legacy builder"
            }
        );
    }
}

/// Removes the images the test made from docker, however the test ends (the kiln store goes
/// with the `Env`).
struct RemoveImages<'a>(&'a [&'a Case]);

impl Drop for RemoveImages<'_> {
    fn drop(&mut self) {
        let mut images = vec![
            "kiln-diff/probe:latest".to_owned(),
            format!("{BASE}:latest"),
        ];
        for case in self.0 {
            for builder in [Builder::Legacy, Builder::BuildKit, Builder::Kiln] {
                images.push(builder.image(case.name));
            }
        }
        let _ = docker()
            .arg("rmi")
            .args(&images)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds every case with the three builders, then compares.
#[test]
#[expect(
    clippy::print_stderr,
    reason = "the timing line is for whoever runs the test"
)]
fn kiln_agrees_with_docker_legacy_and_buildkit() {
    let started = Instant::now();
    let env = Env::new();
    let tar = busybox_tar();
    let tar = tar.to_str().unwrap();
    run(docker().args(["import", "--change", BASE_PATH, tar, BASE]));
    env.ok(&["import", "--change", BASE_PATH, tar, BASE]);
    let cases = selected_cases();
    let _cleanup = RemoveImages(&cases);
    check_docker_builders();
    let server = HttpServer::start(&data_dir().join("http-served"));
    let setup = Setup {
        env: &env,
        port: server.port,
    };

    // Builders side by side, each building its lane of cases in order (bases before their
    // children). The legacy builder commits a container per step and is the slowest: it gets
    // two lanes; BuildKit and kiln one each.
    let work: Vec<(Builder, Vec<&Case>)> = [
        (Builder::Legacy, 2),
        (Builder::BuildKit, 1),
        (Builder::Kiln, 1),
    ]
    .into_iter()
    .flat_map(|(builder, n)| {
        lanes(&cases, n)
            .into_iter()
            .map(move |lane| (builder, lane))
    })
    .collect();
    let results: BTreeMap<(&str, &str), Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .iter()
            .map(|(builder, lane)| {
                let setup = &setup;
                let builder = *builder;
                s.spawn(move || {
                    let started = Instant::now();
                    let results = lane
                        .iter()
                        .map(|case| ((builder.name(), case.name), build(setup, case, builder)))
                        .collect::<Vec<_>>();
                    eprintln!(
                        "differential: {} built {} cases in {:.1}s",
                        builder.name(),
                        lane.len(),
                        started.elapsed().as_secs_f64()
                    );
                    results
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let built = Instant::now();

    let mut report = Vec::new();
    let compare = |case: &Case| -> Vec<String> {
        let mut problems = Vec::new();
        let mut outcome = |builder: Builder| -> bool {
            match (&results[&(builder.name(), case.name)], builder, case.legacy) {
                (Ok(()), Builder::Legacy, Legacy::CannotBuild(why)) => {
                    problems.push(format!(
                        "  legacy built it, but the case says it cannot ({why}): update the case"
                    ));
                    false
                }
                (Ok(()), _, _) => true,
                (Err(out), Builder::Legacy, Legacy::CannotBuild(why)) => {
                    if !out.contains(why) {
                        problems.push(format!("  legacy failed, but not with {why:?}:\n{out}"));
                    }
                    false
                }
                (Err(out), _, _) => {
                    problems.push(format!("  {out}"));
                    false
                }
            }
        };
        let legacy_ok = outcome(Builder::Legacy);
        let buildkit_ok = outcome(Builder::BuildKit);
        let kiln_ok = outcome(Builder::Kiln);
        if !buildkit_ok {
            return problems;
        }
        let reference = Builder::BuildKit.image(case.name);
        let want_config = inspect(&reference);
        let want_files = export(&reference);
        let want_saved = saved(&reference);
        let added = added_by_docker(&reference, &want_saved.paths, &want_files);
        let strip = |mut l: Listing| {
            l.retain(|p, _| !added.contains(p));
            l
        };
        let want_files = strip(want_files);
        for (builder, ok) in [(Builder::Kiln, kiln_ok), (Builder::Legacy, legacy_ok)] {
            if !ok {
                continue;
            }
            let image = builder.image(case.name);
            let what = format!("{} vs buildkit", builder.name());
            let mut got_config = inspect(&image);
            let got_files = strip(export(&image));
            // The legacy builder writes its own history (`/bin/sh -c #(nop) …`); kiln writes
            // BuildKit's, empty layers included, in the reference's form (`newer_history`).
            if builder == Builder::Kiln {
                let (want, stale) = reference_history(case, setup.port, &want_saved.history);
                problems.extend(stale);
                let got: Vec<String> = saved(&image)
                    .history
                    .iter()
                    .map(|l| expose_as_docker_20_10(l).unwrap_or_else(|why| why))
                    .collect();
                problems.extend(diff_histories(&what, &want, &got));
            }
            let mut files_differ = if builder == Builder::Kiln {
                let (want, stale) = reference_files(case, &want_files);
                problems.extend(stale);
                diff_listings(&what, &want, &got_files)
            } else {
                diff_listings(&what, &want_files, &got_files)
            };
            if let (Builder::Legacy, Legacy::Differs(fields, why)) = (builder, case.legacy) {
                if fields.contains(&"files") {
                    if files_differ.is_empty() {
                        problems.push(format!(
                            "  legacy agrees with buildkit on the files, but the case says they \
                             differ ({why}): update the case"
                        ));
                    }
                    files_differ.clear();
                }
                for field in fields.iter().filter(|f| **f != "files") {
                    // Documented: compare kiln with BuildKit only, and check the note still holds.
                    let legacy = got_config.insert(field, want_config[field].clone());
                    if legacy.as_ref() == Some(&want_config[field]) {
                        problems.push(format!(
                            "  legacy agrees with buildkit on {field}, but the case says it \
                             differs ({why}): update the case"
                        ));
                    }
                }
            }
            problems.extend(diff_configs(&what, &want_config, &got_config));
            problems.extend(files_differ);
        }
        problems
    };
    // Three workers: the machine has two cores, and dockerd does most of the work.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut found: Vec<(usize, Vec<String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(case) = cases.get(i) else {
                            return mine;
                        };
                        mine.push((i, compare(case)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    found.sort_by_key(|(i, _)| *i);
    for (i, problems) in found {
        if !problems.is_empty() {
            report.push(format!("case {}:\n{}", cases[i].name, problems.join("\n")));
        }
    }

    eprintln!(
        "differential: {} cases, built in {:.1}s, compared in {:.1}s",
        cases.len(),
        (built - started).as_secs_f64(),
        built.elapsed().as_secs_f64()
    );
    assert!(
        report.is_empty(),
        "kiln and docker disagree ({} of {} cases):\n\n{}",
        report.len(),
        cases.len(),
        report.join("\n\n")
    );
}

/// Acceptance 5 for `kiln build`: each bad input exits 1 with `error: …` (no panic), says what
/// is wrong and where, and leaves a store that still lists.
#[test]
fn build_bad_input_fails_cleanly() {
    let env = Env::new();
    env.busybox_base("bad/base");
    let context = env.path("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("present.txt"), "here\n").unwrap();
    let dir = context.to_str().unwrap();
    let dockerfile = |text: &str| std::fs::write(context.join("Dockerfile"), text).unwrap();
    // `--progress quiet`: with plain progress the step lines come first on stderr, as docker's do.
    let listable = || {
        let images = env.ok(&["images"]);
        assert!(images.contains("bad/base"), "{images}");
    };

    // A missing context file for COPY.
    dockerfile("FROM bad/base\nCOPY present.txt missing.txt /dest/\n");
    let err = env.fails(&["build", "--progress", "quiet", "-t", "bad/out", dir]);
    assert!(err.contains("missing.txt"), "{err}");
    listable();

    // An unknown stage in --target, and in COPY --from.
    dockerfile(
        "FROM bad/base AS first\nFROM bad/base AS second\nCOPY --from=first /etc/passwd /p\n",
    );
    let err = env.fails(&[
        "build",
        "--progress",
        "quiet",
        "-t",
        "bad/out",
        "--target",
        "thrid",
        dir,
    ]);
    assert!(err.contains("thrid"), "{err}");
    assert!(
        err.contains("first, second"),
        "names the stages there are: {err}"
    );
    listable();
    dockerfile("FROM bad/base AS first\nFROM bad/base\nCOPY --from=frist /etc/passwd /p\n");
    let err = env.fails(&["build", "--progress", "quiet", "-t", "bad/out", dir]);
    assert!(err.contains("--from=frist"), "{err}");
    listable();

    // A bad --build-arg: no `=` and not in the environment; an empty name.
    dockerfile("FROM bad/base\nARG NOT_IN_ENV\n");
    let out = env
        .kiln()
        .env_remove("NOT_IN_ENV")
        .args(["build", "--progress", "quiet", "-t", "bad/out"])
        .args(["--build-arg", "NOT_IN_ENV", dir])
        .output()
        .unwrap();
    let err = assert_clean_failure(&out, "kiln build --build-arg NOT_IN_ENV");
    assert!(err.contains("NOT_IN_ENV"), "{err}");
    let err = env.fails(&[
        "build",
        "--progress",
        "quiet",
        "-t",
        "bad/out",
        "--build-arg",
        "=value",
        dir,
    ]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    listable();

    // An unknown instruction: a "did you mean" and Dockerfile:LINE.
    dockerfile("FROM bad/base\nENV A=1\nCOPPY present.txt /\n");
    let err = env.fails(&["build", "--progress", "quiet", "-t", "bad/out", dir]);
    assert!(err.contains("COPPY"), "{err}");
    assert!(err.contains("did you mean COPY"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
    let unknown_instruction = err;
    listable();

    // FROM an image that is not in the store: say how to get it.
    dockerfile("FROM not/in-the-store:1.0\n");
    let err = env.fails(&["build", "--progress", "quiet", "-t", "bad/out", dir]);
    assert!(err.contains("not/in-the-store:1.0"), "{err}");
    assert!(
        err.contains("kiln import") && err.contains("kiln load"),
        "says how to get it: {err}"
    );
    listable();

    // ADD of a URL whose --checksum does not match, and of a URL that is not there.
    let server = HttpServer::start(&data_dir().join("http-served"));
    let url = format!("http://127.0.0.1:{}", server.port);
    let zeros = "0".repeat(64);
    dockerfile(&format!(
        "FROM bad/base\nADD --checksum=sha256:{zeros} {url}/payload.txt /p\n"
    ));
    let err = env.fails(&["build", "--progress", "quiet", "-t", "bad/out", dir]);
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains("sha256:02d4fb914c7f792366cb398f3f1ff0aae9cdd9639e6b6a2e4fff3c314bd88c57"),
        "names the digest it got: {err}"
    );
    dockerfile(&format!("FROM bad/base\nADD {url}/no-such-file /p\n"));
    let err = env.fails(&["build", "--progress", "quiet", "-t", "bad/out", dir]);
    assert!(err.contains("no-such-file") && err.contains("404"), "{err}");
    listable();

    // A failed build tags nothing.
    assert!(!env.ok(&["images"]).contains("bad/out"));

    // needs: one `error:` prefix. The rendered diagnostic (kiln-dockerfile's
    // `render_diagnostic`) starts with `error: ` and the CLI's renderer adds another, so
    // stderr reads `error: error: unknown instruction: COPPY`. Checked last, so that the
    // checks above still run until that is fixed.
    assert!(
        !unknown_instruction.contains("error: error:"),
        "doubled prefix:\n{unknown_instruction}"
    );
}
