//! Shared test plumbing: fresh dirs, the kiln binary, the judges, tiny bases.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Fails the test, naming the tool, if it is not installed.
pub fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file());
    match found {
        Some(path) => path,
        None => panic!(
            "this test needs `{tool}`, which is not installed; run scripts/test.sh, which installs it"
        ),
    }
}

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (overlay mounts, namespaces); run it through scripts/test.sh as root"
    );
}

/// The kiln binary under test. KILN_TEST_BIN runs the suite against another build, e.g. to
/// see a new test fail on the code before its fix.
pub fn kiln_bin() -> PathBuf {
    std::env::var_os("KILN_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")))
}

/// A fresh store and work dir for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        require_root();
        // Under /var/tmp, not /tmp: overlayfs upper dirs cannot sit on tmpfs with xattrs off.
        std::fs::create_dir_all("/var/tmp/kiln-tests").unwrap();
        Env {
            dir: tempfile::Builder::new()
                .prefix("t-")
                .tempdir_in("/var/tmp/kiln-tests")
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> PathBuf {
        self.path("store")
    }

    /// A `kiln` command with this test's store.
    pub fn kiln(&self) -> Command {
        let mut cmd = Command::new(kiln_bin());
        cmd.arg("--root")
            .arg(self.root())
            .arg("--progress")
            .arg("plain");
        cmd.env_remove("SOURCE_DATE_EPOCH");
        cmd
    }

    /// Runs kiln and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert_success(&out, &format!("kiln {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kiln and asserts a clean failure (non-zero, no panic); returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().unwrap();
        assert_clean_failure(&out, &format!("kiln {}", args.join(" ")))
    }

    /// Imports a busybox rootfs as `name`.
    pub fn busybox_base(&self, name: &str) {
        let tar = busybox_tar();
        self.ok(&["import", tar.to_str().unwrap(), name]);
    }

    /// Imports a busybox rootfs of `arch` as `name`, for `linux/<arch>`: into `name`'s index
    /// when `name` exists for another platform.
    pub fn busybox_base_for(&self, name: &str, arch: &str) {
        let tar = if arch == kiln_image_host_arch() {
            busybox_tar()
        } else {
            busybox_tar_for(arch)
        };
        let platform = format!("linux/{arch}");
        self.ok(&[
            "import",
            "--platform",
            &platform,
            tar.to_str().unwrap(),
            name,
        ]);
    }
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn assert_clean_failure(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} should have failed\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} should exit 1, got {}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ")),
        "{what} should print `error: …`, got:\n{stderr}"
    );
    stderr
}

/// Runs a command and asserts success; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert_success(&out, &format!("{cmd:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's own docker client (a newer one earlier on PATH may lack buildx).
pub fn docker() -> Command {
    let path = Path::new("/usr/bin/docker");
    assert!(
        path.is_file(),
        "this test needs `docker` from the docker.io package at /usr/bin/docker; run scripts/test.sh"
    );
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::null());
    cmd
}

/// The host's architecture in OCI spelling.
pub fn kiln_image_host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A tarball of a tiny rootfs: busybox-static and its applets, `/etc/passwd`, `/etc/group`.
/// Built once per test run.
pub fn busybox_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.is_file(), "this test needs `busybox-static` (/bin/busybox); run scripts/test.sh");
        std::fs::create_dir_all("/var/tmp/kiln-tests").unwrap();
        let dir = tempfile::Builder::new().prefix("busybox-").tempdir_in("/var/tmp/kiln-tests").unwrap().keep();
        let root = dir.join("rootfs");
        for sub in ["bin", "etc", "tmp", "root", "usr/bin", "var"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        let applets = run(Command::new(busybox).arg("--list"));
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n").unwrap();
        let tar = dir.join("busybox.tar");
        run(Command::new("tar").arg("-C").arg(&root).arg("--numeric-owner").arg("-cf").arg(&tar).arg("."));
        tar
    })
    .clone()
}

/// The busybox rootfs of [`busybox_tar`] for another Debian architecture (`arm64`): its
/// busybox-static is taken from the Debian archive by `mmdebstrap --variant=extract`, which
/// runs nothing. Built once per test run and architecture.
pub fn busybox_tar_for(arch: &str) -> PathBuf {
    static TARS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut tars = TARS.lock().unwrap();
    if let Some((_, tar)) = tars.iter().find(|(a, _)| a == arch) {
        return tar.clone();
    }
    let mmdebstrap = require("mmdebstrap");
    let dir = tempfile::Builder::new()
        .prefix(&format!("busybox-{arch}-"))
        .tempdir_in("/var/tmp/kiln-tests")
        .unwrap()
        .keep();
    let extract = dir.join("extract");
    run(Command::new(mmdebstrap)
        .args(["--quiet", "--variant=extract", "--include=busybox-static"])
        .arg(format!("--architectures={arch}"))
        .args(["--format=directory", "bookworm"])
        .arg(&extract));
    // The host's rootfs, with the other architecture's busybox in place of its own.
    let root = dir.join("rootfs");
    run(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-xf")
        .arg(busybox_tar())
        .arg("--one-top-level=rootfs"));
    std::fs::copy(extract.join("bin/busybox"), root.join("bin/busybox")).unwrap();
    let tar = dir.join("busybox.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("--numeric-owner")
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tars.push((arch.to_owned(), tar.clone()));
    tar
}

/// Fails, naming what to install, unless binaries of `arch` run here through binfmt_misc.
pub fn require_emulation(arch: &str) {
    let qemu = match arch {
        "arm64" => "aarch64",
        other => other,
    };
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    assert!(
        entry.exists(),
        "this test needs an emulator for {arch}: install qemu-user-static and binfmt-support \
         and mount binfmt_misc (scripts/test.sh does)"
    );
}

/// The names in a directory, sorted (none if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether any mount of the current namespace sits under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// The Debian bookworm minbase rootfs tarball, made once per test run by
/// scripts/make-debian-base.sh and cached where it caches it: `$KILN_BASE_CACHE` (scripts/test.sh
/// sets a fresh one per run), else /var/cache/kiln-bases.
pub fn debian_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| make_debian_tar("minbase")).clone()
}

/// The slim variant of [`debian_tar`] (`make-debian-base.sh --variant slim`): Debian's slim
/// path excludes, as `debian:bookworm-slim` has them.
pub fn debian_slim_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| make_debian_tar("slim")).clone()
}

fn make_debian_tar(variant: &str) -> PathBuf {
    require("mmdebstrap");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-debian-base.sh");
    // The script makes the tarball and imports it; importing into a scratch store is cheap.
    let scratch = tempfile::Builder::new()
        .prefix("debian-")
        .tempdir_in("/var/tmp")
        .unwrap();
    run(Command::new("bash")
        .arg(&script)
        .args(["--variant", variant, "debian:bookworm"])
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", scratch.path()));
    let cache = std::env::var_os("KILN_BASE_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/kiln-bases"), PathBuf::from);
    let tar = cache.join(format!("debian-bookworm-{variant}.tar"));
    assert!(
        tar.is_file(),
        "scripts/make-debian-base.sh did not leave {}",
        tar.display()
    );
    tar
}

/// The `docker import --change` flags that give docker the same base config as kiln's.
pub const DEBIAN_CHANGES: [&str; 4] = [
    "--change",
    "CMD [\"bash\"]",
    "--change",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
];

impl Env {
    /// Imports the Debian base into this store as `name`.
    pub fn debian_base(&self, name: &str) {
        self.import_debian(&debian_tar(), name);
    }

    /// Imports the slim Debian base into this store as `name`.
    pub fn debian_slim_base(&self, name: &str) {
        self.import_debian(&debian_slim_tar(), name);
    }

    fn import_debian(&self, tar: &Path, name: &str) {
        let mut args = vec!["import"];
        args.extend(DEBIAN_CHANGES);
        args.push(tar.to_str().unwrap());
        args.push(name);
        self.ok(&args);
    }

    /// A build context `name` in the test's dir: `Dockerfile` and `files` (parents made).
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> String {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        for (path, content) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir.to_string_lossy().into_owned()
    }

    /// Runs `kiln build` whatever its outcome: the output, and stdout and stderr together
    /// (a step's output and the errors both).
    pub fn build_output(&self, args: &[&str]) -> (Output, String) {
        let out = self.kiln().arg("build").args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    /// The blob files of this test's store, sorted.
    pub fn blobs(&self) -> Vec<String> {
        entries(&self.root().join("oci/blobs/sha256"))
    }

    /// Builds `dockerfile` (in a context of its own, named `name`) as `name`, expecting it to
    /// fail; returns the error output.
    pub fn build_error(&self, name: &str, dockerfile: &str) -> String {
        let context = self.context(name, dockerfile, &[]);
        self.fails(&["build", "--no-lint", "-t", name, &context])
    }

    /// `kiln build --no-lint -o type=local,dest=DIR ARGS…` (the context last in `args`), into
    /// a fresh `DIR` named `dir` under the test's directory; returns it.
    pub fn build_to_dir(&self, dir: &str, args: &[&str]) -> PathBuf {
        let out = self.path(dir);
        let dest = format!("type=local,dest={}", out.display());
        let mut all = vec!["build", "--no-lint", "-o", &dest];
        all.extend_from_slice(args);
        self.ok(&all);
        out
    }

    /// Runs kiln with `args` and `input` on its stdin (`kiln build -`, `kiln lint -`, a tar
    /// context).
    pub fn with_stdin(&self, args: &[&str], input: impl AsRef<[u8]>) -> Output {
        use std::io::Write as _;
        let mut child = self
            .kiln()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // kiln may refuse before reading it all; its output says why.
        let _ = stdin.write_all(input.as_ref());
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Runs `kiln build` and returns (stdout, stderr), asserting success.
    pub fn build(&self, args: &[&str]) -> (String, String) {
        let out = self.kiln().arg("build").args(args).output().unwrap();
        assert_success(&out, &format!("kiln build {}", args.join(" ")));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// How many steps (`#N [stage i/n] INSTRUCTION` lines) a plain-progress build log shows.
pub fn step_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with('#') && l.contains("] "))
        .count()
}

/// What the step whose instruction contains `instruction` logged after its step line, without
/// the `#N ` prefix: output, `committed …`, `DONE 0.1s` or `CACHED`. Fails if no step matches.
pub fn step_log<'a>(log: &'a str, instruction: &str) -> Vec<&'a str> {
    let step = log
        .lines()
        .find(|l| l.starts_with('#') && l.contains("] ") && l.contains(instruction))
        .unwrap_or_else(|| panic!("no step `{instruction}` in the build log:\n{log}"));
    let prefix = format!("{} ", step.split(' ').next().unwrap_or(step));
    log.lines()
        .filter(|l| *l != step)
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// Imports the Debian base into docker as `name` (idempotent).
pub fn docker_debian_base(name: &str) {
    let tar = debian_tar();
    let mut cmd = docker();
    cmd.arg("import").args(DEBIAN_CHANGES).arg(&tar).arg(name);
    run(&mut cmd);
}

/// Pipes `kiln save IMAGE` into `docker load`.
pub fn kiln_to_docker(env: &Env, image: &str) {
    let mut save = env
        .kiln()
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = save.stdout.take().unwrap();
    let load = docker().arg("load").stdin(stdout).output().unwrap();
    assert_success(&load, "docker load");
    assert!(save.wait().unwrap().success(), "kiln save failed");
}

/// One entry of a `docker export` listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub sha256: String,
    pub link: String,
}

/// `docker create` + `docker export` of an image: its merged file system, entry by entry.
pub fn docker_export(image: &str) -> Vec<ExportEntry> {
    use sha2::Digest;
    use std::io::Read;
    let id = run(docker().args(["create", image, "/nonexistent"]))
        .trim()
        .to_owned();
    let mut child = docker()
        .args(["export", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut archive = tar::Archive::new(child.stdout.take().unwrap());
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_end_matches('/')
            .to_owned();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            _ => '?',
        };
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        entries.push(ExportEntry {
            path,
            kind,
            mode: header.mode().unwrap() & 0o7777,
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            size: header.size().unwrap(),
            sha256: hex::encode(hasher.finalize()),
            link,
        });
    }
    child.wait().unwrap();
    run(docker().args(["rm", &id]));
    entries.sort();
    entries
}

/// An HTTP server on the host's loopback that answers every request with `body`; its port.
pub fn loopback_server(body: &'static str) -> u16 {
    loopback_server_of(body.as_bytes().to_vec())
}

/// [`loopback_server`] for any bytes.
pub fn loopback_server_of(body: Vec<u8>) -> u16 {
    loopback_server_with("", body)
}

/// [`loopback_server_of`] with extra response header lines (each ending in `\r\n`).
pub fn loopback_server_with(headers: &'static str, body: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n{headers}\r\n",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, head.as_bytes());
            let _ = std::io::Write::write_all(&mut stream, &body);
        }
    });
    port
}
