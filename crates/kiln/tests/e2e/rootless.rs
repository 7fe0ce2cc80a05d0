//! Rootless kiln: a normal user with subordinate id ranges builds the same image as root, and a
//! user without them, or without user namespaces, is told what to do.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::*;

/// A throwaway login (`useradd`), removed with its subordinate ranges when dropped, and a
/// directory of its own (its home, its store under `$XDG_DATA_HOME`, its build contexts).
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    dir: tempfile::TempDir,
}

impl TestUser {
    /// With `ranges`, `useradd` gives the user its next free subordinate uid and gid ranges
    /// (login.defs' SUB_UID_COUNT); a system user (`--system`) gets none.
    fn new(tag: &str, ranges: bool) -> TestUser {
        require_root();
        for tool in ["useradd", "userdel", "setpriv", "newuidmap", "newgidmap"] {
            require(tool);
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kr{}{tag}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::create_dir_all("/var/tmp/kiln-tests").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("rootless-")
            .tempdir_in("/var/tmp/kiln-tests")
            .unwrap();
        let home = dir.path().join("home");
        let mut add = Command::new("useradd");
        add.args(["--no-create-home", "--home-dir"]).arg(&home);
        if !ranges {
            add.arg("--system");
        }
        run(add.arg(&name));
        let id = |flag: &str| -> u32 {
            run(Command::new("id").arg(flag).arg(&name))
                .trim()
                .parse()
                .unwrap()
        };
        let user = TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
            dir,
        };
        std::fs::create_dir(&home).unwrap();
        for path in [user.dir.path(), home.as_path()] {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
        }
        if ranges {
            assert!(
                !user.subuid_range().is_empty(),
                "useradd gave {} no range in /etc/subuid (SUB_UID_COUNT in /etc/login.defs)",
                user.name
            );
        }
        user
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `FIRST:COUNT` of the user's line in /etc/subuid.
    fn subuid_range(&self) -> String {
        let text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{}:", self.name)))
            .unwrap_or_default()
            .to_owned()
    }

    /// `kiln` as this user, with the environment a login gives it and no `--root`: the store
    /// is the default one, `$XDG_DATA_HOME/kiln`.
    fn kiln(&self) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(kiln_bin())
            .args(["--progress", "plain"])
            .env_clear()
            .env("HOME", self.path("home"))
            .env("USER", &self.name)
            .env("XDG_DATA_HOME", self.path("xdg"))
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .current_dir(self.dir.path());
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert_success(&out, &format!("kiln {} (as {})", args.join(" "), self.name));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert_clean_failure(&out, &format!("kiln {} (as {})", args.join(" "), self.name))
    }

    /// `kiln import - NAME` of a rootfs tarball read by the test (the user cannot read root's
    /// cache).
    fn import(&self, tar: &Path, extra: &[&str], name: &str) {
        let mut child = self
            .kiln()
            .arg("import")
            .args(extra)
            .args(["-", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::copy(&mut std::fs::File::open(tar).unwrap(), &mut stdin).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("kiln import - {name} (as {})", self.name));
    }

    /// A copy of `dockerfile` as a context the user owns.
    fn context(&self, name: &str, dockerfile: &str) -> String {
        let dir = self.path(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        for path in [&dir, &dir.join("Dockerfile")] {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap();
        }
        dir.to_string_lossy().into_owned()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // userdel also drops the user's lines of /etc/subuid and /etc/subgid.
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The isolation line a rootless build prints, for `user`.
fn isolation_line(user: &TestUser) -> String {
    let (first, count) = user
        .subuid_range()
        .split_once(':')
        .map_or((0, 0), |(f, c)| {
            (f.parse::<u64>().unwrap(), c.parse::<u64>().unwrap())
        });
    format!(
        "isolation: rootless (user namespace 0->{}, 1->{first}..{})",
        user.uid,
        first + count - 1
    )
}

/// One layer entry as `tar -tv` shows it, without the time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerEntry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    link: String,
}

/// A docker-archive's (`kiln save`) layers, bottom first: each the digest-named member and its
/// entries by path.
fn saved_layers(archive: &Path) -> Vec<(String, BTreeMap<String, LayerEntry>)> {
    let mut manifest = String::new();
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("manifest.json") {
            entry.read_to_string(&mut manifest).unwrap();
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let names: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    let mut layers: BTreeMap<String, BTreeMap<String, LayerEntry>> = BTreeMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in outer.entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !names.contains(&name) {
            continue;
        }
        let mut listing = BTreeMap::new();
        for inner in tar::Archive::new(entry).entries().unwrap() {
            let inner = inner.unwrap();
            let h = inner.header();
            let kind = match h.entry_type() {
                tar::EntryType::Regular => 'f',
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Char => 'c',
                _ => '?',
            };
            let path = String::from_utf8_lossy(&inner.path_bytes()).into_owned();
            listing.insert(
                path.trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_owned(),
                LayerEntry {
                    kind,
                    mode: h.mode().unwrap() & 0o7777,
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    size: h.size().unwrap(),
                    link: inner
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default(),
                },
            );
        }
        layers.insert(name, listing);
    }
    names
        .iter()
        .map(|n| (n.clone(), layers.remove(n).unwrap_or_default()))
        .collect()
}

const OWNERS: &str =
    "FROM bb\nRUN touch /rootfile && mkdir /app && echo hi > /app/u && chown 1000:1000 /app/u\n";

#[test]
fn a_rootless_build_writes_the_same_layers_as_root() {
    let env = Env::new();
    env.busybox_base("bb");
    let root_ctx = env.context("ctx", OWNERS, &[]);
    env.build(&[
        "--build-arg",
        "SOURCE_DATE_EPOCH=0",
        "-t",
        "owners",
        &root_ctx,
    ]);
    let root_tar = env.path("root.tar");
    env.ok(&["save", "owners", "-o", root_tar.to_str().unwrap()]);

    let user = TestUser::new("bb", true);
    user.import(&busybox_tar(), &[], "bb");
    let ctx = user.context("ctx", OWNERS);
    let log = user.ok(&[
        "build",
        "--build-arg",
        "SOURCE_DATE_EPOCH=0",
        "-t",
        "owners",
        &ctx,
    ]);
    assert!(
        log.contains(&isolation_line(&user)),
        "the build says which isolation it chose ({}):\n{log}",
        isolation_line(&user)
    );
    assert!(
        user.path("xdg/kiln/oci/index.json").is_file(),
        "the store is $XDG_DATA_HOME/kiln"
    );
    let user_tar = user.path("user.tar");
    user.ok(&["save", "owners", "-o", user_tar.to_str().unwrap()]);

    let ours = saved_layers(&user_tar);
    let roots = saved_layers(&root_tar);
    let names = |layers: &[(String, BTreeMap<String, LayerEntry>)]| -> Vec<String> {
        layers.iter().map(|(n, _)| n.clone()).collect()
    };
    assert_eq!(
        names(&ours),
        names(&roots),
        "the rootless build's layers are root's, byte for byte"
    );
    let step = &ours.last().unwrap().1;
    let owner = |path: &str| step.get(path).map(|e| (e.uid, e.gid));
    assert_eq!(owner("rootfile"), Some((0, 0)), "{step:?}");
    assert_eq!(owner("app/u"), Some((1000, 1000)), "{step:?}");

    let inside = user.ok(&[
        "run",
        "--rm",
        "owners",
        "sh",
        "-c",
        "id -u; stat -c %u:%g /app/u",
    ]);
    assert!(inside.contains("0\n1000:1000"), "{inside}");

    // /proc and /sys are the run's own, read-only /sys whatever the network (the host's with
    // --network host), and the host's clones that stood in for the mounts are gone.
    for network in ["default", "host", "none"] {
        let seen = user.ok(&[
            "run",
            "--rm",
            "--network",
            network,
            "owners",
            "sh",
            "-c",
            "grep -E '^(proc /proc|sysfs /sys) ' /proc/mounts; ls -a /dev",
        ]);
        assert!(
            seen.contains("proc /proc proc") && seen.contains("sysfs /sys sysfs ro,"),
            "--network {network}: {seen}"
        );
        assert!(
            seen.contains("\nnull\n") && !seen.contains(".kiln-visible"),
            "--network {network}: {seen}"
        );
    }

    // Limits it cannot enforce are refused by name, not dropped.
    let err = user.fails(&["build", "--memory", "64m", "-t", "x", &ctx]);
    assert!(
        err.contains("--memory") && err.contains("rootless"),
        "{err}"
    );
}

#[test]
fn the_seed_image_builds_rootless_as_root_builds_it() {
    let env = Env::new();
    env.debian_base("debian:bookworm");
    let dockerfile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-base/Dockerfile"),
    )
    .unwrap();
    let root_ctx = env.context("python-base", &dockerfile, &[]);
    env.build(&["-t", "my-python-base", &root_ctx]);
    let root_tar = env.path("root.tar");
    env.ok(&["save", "my-python-base", "-o", root_tar.to_str().unwrap()]);

    let user = TestUser::new("py", true);
    user.import(&debian_tar(), &DEBIAN_CHANGES, "debian:bookworm");
    let ctx = user.context("python-base", &dockerfile);
    let log = user.ok(&["build", "-t", "my-python-base", &ctx]);
    assert!(log.contains(&isolation_line(&user)), "{log}");
    assert!(log.contains("Setting up python3"), "apt-get ran:\n{log}");
    let version = user.ok(&["run", "--rm", "my-python-base", "python3", "-V"]);
    assert!(version.starts_with("Python 3."), "{version}");

    let user_tar = user.path("user.tar");
    user.ok(&["save", "my-python-base", "-o", user_tar.to_str().unwrap()]);
    let (ours, roots) = (saved_layers(&user_tar), saved_layers(&root_tar));
    assert_eq!(ours.len(), roots.len(), "as many layers");
    let mut diffs = Vec::new();
    for (i, ((_, a), (_, b))) in ours.iter().zip(&roots).enumerate() {
        for (path, x) in a {
            match b.get(path) {
                None => diffs.push(format!("layer {i}: only rootless: {path}")),
                Some(y) => {
                    let same_size = x.size == y.size || crate::python_base::records_time(path);
                    if (x.kind, x.mode, x.uid, x.gid, &x.link)
                        != (y.kind, y.mode, y.uid, y.gid, &y.link)
                        || !same_size
                    {
                        diffs.push(format!(
                            "layer {i}: {path}\n  rootless: {x:?}\n  root:     {y:?}"
                        ));
                    }
                }
            }
        }
        for path in b.keys().filter(|p| !a.contains_key(*p)) {
            if !crate::python_base::records_time(path) {
                diffs.push(format!("layer {i}: only root's: {path}"));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "the rootless and root images differ in {} places:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Owners other than root survive too: apt's _apt (uid 42) in the base, root in the step.
    let apt_layer = &ours[1].1;
    assert_eq!(
        apt_layer.get("usr/bin/python3.11").map(|e| (e.uid, e.gid)),
        Some((0, 0)),
        "python3 is root's in the layer"
    );
}

#[test]
fn a_user_without_a_subordinate_range_is_told_what_to_add() {
    let user = TestUser::new("nosub", false);
    let err = user.fails(&["images"]);
    let line = format!("echo \"{}:100000:65536\" >> /etc/subuid", user.name);
    assert!(
        err.contains("/etc/subuid") && err.contains(&line),
        "the error names the file and the line to add ({line}):\n{err}"
    );
}

#[test]
fn a_kernel_without_user_namespaces_is_named() {
    use std::io::{BufRead, Write};
    let user = TestUser::new("nons", true);
    require("unshare");
    // user.max_user_namespaces is per user namespace: 0 in a namespace of the test's own
    // leaves the host's alone. The test maps it 1:1 (as root it may), so the user keeps its
    // uid there; the shell says when it runs in the namespace and waits for the maps.
    let kiln = user.kiln();
    let mut argv = vec![kiln.get_program().to_owned()];
    argv.extend(kiln.get_args().map(ToOwned::to_owned));
    argv.push("images".into());
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    // The maps arrive after unshare(1) exec'd the shell, which had no capabilities then:
    // a second exec, as uid 0 of the namespace, gets them.
    let inner = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {}",
        quoted.join(" ")
    );
    let outer = "exec 2>&1; echo unshared; read mapped; exec sh -c \"$0\"";
    let mut child = Command::new("unshare")
        .args(["--user", "--", "sh", "-c", outer, &inner])
        .env_clear()
        .envs(kiln.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(user.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "unshared\n");
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{}/{map}", child.id()), "0 0 65536\n").unwrap();
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut text = String::new();
    stdout.read_to_string(&mut text).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "kiln fails cleanly:\n{text}");
    assert!(
        text.starts_with("error: ") && !text.contains("panicked"),
        "{text}"
    );
    assert!(
        text.contains("user.max_user_namespaces") && text.contains("sysctl -w"),
        "the error names the sysctl and how to set it:\n{text}"
    );
}
