//! End-to-end tests of the sandbox with a busybox rootfs. They need root and
//! `/bin/busybox` (Debian: `busybox-static`), and fail saying so when either is missing.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use kiln_sandbox::{
    ExitStatus, Mount, Network, Outcome, OutputStream, Rootfs, RunSpec, SandboxError, Stdio, run,
};

const PROBE: &str = include_str!("probe.sh");

fn require_root() {
    let euid = rustix::process::geteuid().as_raw();
    assert_eq!(
        euid, 0,
        "kiln-sandbox's tests need root (effective uid is {euid}): run `sudo -E cargo test -p kiln-sandbox`"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is missing: install busybox-static (apt-get install -y busybox-static)"
    );
}

/// A fresh dir with a busybox rootfs as the lower, and empty upper and work dirs.
struct Fixture {
    dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\naudio:x:29:app\n",
    )
    .unwrap();
    std::fs::write(root.join("kiln-rootfs-marker"), "").unwrap();
    std::fs::write(root.join("probe.sh"), PROBE).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
}

fn fixture() -> Fixture {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("kiln-sandbox-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let lower = dir.path().join("lower");
    busybox_rootfs(&lower);
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    Fixture {
        dir,
        lower,
        upper,
        work,
    }
}

impl Fixture {
    fn spec(&self, script: &str) -> RunSpec {
        let mut spec = RunSpec::new(
            Rootfs::Overlay {
                lowers: vec![self.lower.clone()],
                upper: self.upper.clone(),
                work: self.work.clone(),
            },
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        spec.env = vec![
            "PATH=/bin".into(),
            format!("KILN_TEST_MARKER={}", self.marker()),
        ];
        spec
    }

    /// A string unique to this fixture, put in the env of every container process.
    fn marker(&self) -> String {
        self.dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Relative paths of everything in the upper dir.
    fn upper_entries(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        walk(&self.upper, &self.upper, &mut out);
        out
    }

    /// No mount in our mountinfo mentions the fixture dir, no process carries its marker,
    /// and the staging dir is gone.
    fn assert_no_leftovers(&self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let here = self.dir.path().to_string_lossy().into_owned();
        let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&here)).collect();
        assert!(left.is_empty(), "mounts left behind: {left:#?}");
        let procs = marked_processes(&self.marker());
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let staging: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".kiln-sandbox-")
            })
            .map(|e| e.path())
            .collect();
        assert!(staging.is_empty(), "staging dirs left behind: {staging:?}");
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            walk(base, &p, out);
        }
    }
}

/// Pids of processes whose environment carries `marker`.
fn marked_processes(marker: &str) -> Vec<i32> {
    let needle = format!("KILN_TEST_MARKER={marker}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

struct Captured {
    outcome: Outcome,
    stdout: String,
    stderr: String,
}

fn run_capture(spec: &RunSpec) -> Result<Captured, SandboxError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run(spec, &mut |s, chunk| match s {
        OutputStream::Stdout => out.extend_from_slice(chunk),
        OutputStream::Stderr => err.extend_from_slice(chunk),
    })?;
    Ok(Captured {
        outcome,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

#[test]
fn exit_codes_pass_through() {
    let f = fixture();
    for (script, want) in [
        ("exit 0", ExitStatus::Exited(0)),
        ("exit 3", ExitStatus::Exited(3)),
        ("kill -TERM $$", ExitStatus::Signaled(libc::SIGTERM)),
        ("kill -KILL $$", ExitStatus::Signaled(libc::SIGKILL)),
    ] {
        let c = run_capture(&f.spec(script)).unwrap();
        assert_eq!(c.outcome.status, want, "{script}: {}", c.stderr);
        assert!(!c.outcome.interrupted);
    }
    assert_eq!(ExitStatus::Signaled(libc::SIGTERM).code(), 143);
    f.assert_no_leftovers();
}

#[test]
fn env_cwd_and_numeric_user() {
    let f = fixture();
    let mut spec = f.spec("echo \"$GREETING\"; pwd; id -u; id -g; id -G; echo \"$HOME\"");
    spec.env.push("GREETING=hello world".into());
    spec.cwd = "/work/dir".into();
    spec.user = "1234:5678".into();
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    assert_eq!(c.stdout, "hello world\n/work/dir\n1234\n5678\n5678\n/\n");
    // WORKDIR creation is legitimate layer content, as with docker.
    assert!(f.upper.join("work/dir").is_dir());
    let mode = std::fs::metadata(f.upper.join("work/dir")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "WORKDIR is created 0755 as docker does");
    f.assert_no_leftovers();
}

#[test]
fn user_name_from_passwd_gets_its_groups_and_home() {
    let f = fixture();
    let mut spec = f.spec("id -u; id -g; id -G; echo $HOME");
    spec.user = "app".into();
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    // The kernel keeps supplementary groups sorted.
    assert_eq!(c.stdout, "1000\n1000\n1000 29 50\n/home/app\n");
    spec.user = "nobody-such".into();
    let e = run_capture(&spec).err().expect("unknown user must fail");
    assert!(matches!(e, SandboxError::User { .. }), "{e}");
    assert!(e.to_string().contains("nobody-such"), "{e}");
    f.assert_no_leftovers();
}

#[test]
fn missing_program_is_an_error_that_names_it() {
    let f = fixture();
    let mut spec = f.spec("");
    spec.args = vec!["no-such-program".into()];
    let e = run_capture(&spec).err().expect("must fail");
    assert!(e.to_string().contains("no-such-program"), "{e}");
    // A program that exists but cannot be executed: execve's errno and path come back.
    let mut spec = f.spec("");
    spec.args = vec!["/kiln-rootfs-marker".into()];
    let e = run_capture(&spec).err().expect("must fail");
    assert_eq!(e.to_string(), "execve /kiln-rootfs-marker: EACCES");
    f.assert_no_leftovers();
}

#[test]
fn output_streams_as_it_arrives_in_order() {
    let f = fixture();
    let sync = f.dir.path().join("sync");
    std::fs::create_dir(&sync).unwrap();
    // The process waits for a file that the callback creates when it sees the first line:
    // without streaming this would never finish (the watchdog then interrupts it).
    let mut spec = f.spec(
        "echo first; while [ ! -e /sync/go ]; do :; done; echo second >&2; i=0; \
         while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done",
    );
    spec.mounts.push(Mount::Bind {
        source: sync.clone(),
        target: "/sync".into(),
        readonly: true,
    });
    let watchdog = spec.interrupt.clone();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .is_err()
        {
            watchdog.interrupt();
            watchdog.interrupt();
        }
    });
    let mut events = Vec::new();
    let outcome = run(&spec, &mut |s, chunk| {
        let text = String::from_utf8_lossy(chunk).into_owned();
        if s == OutputStream::Stdout && text.contains("first") {
            std::fs::write(sync.join("go"), "").unwrap();
        }
        events.push((s, text));
    })
    .unwrap();
    drop(done_tx);
    dog.join().unwrap();
    assert!(
        !outcome.interrupted,
        "the output did not stream: {events:?}"
    );
    assert!(outcome.status.success());
    assert_eq!(events[0], (OutputStream::Stdout, "first\n".to_string()));
    let stdout: String = events
        .iter()
        .filter(|e| e.0 == OutputStream::Stdout)
        .map(|e| e.1.as_str())
        .collect();
    let want: String = std::iter::once("first\n".to_string())
        .chain((0..500).map(|i| format!("line{i}\n")))
        .collect();
    assert_eq!(stdout, want);
    let stderr: String = events
        .iter()
        .filter(|e| e.0 == OutputStream::Stderr)
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(stderr, "second\n");
    f.assert_no_leftovers();
}

#[test]
fn writes_land_in_upper_only_and_deletions_are_whiteouts() {
    let f = fixture();
    let c = run_capture(
        &f.spec("echo new > /newfile && echo more >> /etc/group && rm /bin/true && mkdir -p /a/b"),
    )
    .unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    assert_eq!(
        std::fs::read_to_string(f.upper.join("newfile")).unwrap(),
        "new\n"
    );
    assert!(
        std::fs::read_to_string(f.upper.join("etc/group"))
            .unwrap()
            .ends_with("more\n")
    );
    let wh = std::fs::symlink_metadata(f.upper.join("bin/true")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "bin/true must be a 0/0 whiteout"
    );
    // The lower is untouched.
    assert!(!f.lower.join("newfile").exists());
    assert!(
        !std::fs::read_to_string(f.lower.join("etc/group"))
            .unwrap()
            .contains("more")
    );
    assert!(
        std::fs::symlink_metadata(f.lower.join("bin/true"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let want: BTreeSet<String> = ["newfile", "etc", "etc/group", "bin", "bin/true", "a", "a/b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        f.upper_entries(),
        want,
        "nothing else (no mountpoints) may reach the upper dir"
    );
    f.assert_no_leftovers();
}

#[test]
fn resolver_files_are_visible_inside_and_absent_from_upper() {
    let f = fixture();
    let c = run_capture(&f.spec(
        "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; cat /etc/hostname; \
         echo x > /etc/hosts 2>/dev/null && echo WRITABLE; true",
    ))
    .unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    let host = |p| std::fs::read_to_string(p).unwrap_or_default();
    let want = format!(
        "{}---\n{}---\n{}",
        host("/etc/resolv.conf"),
        host("/etc/hosts"),
        host("/etc/hostname")
    );
    assert_eq!(c.stdout, want);
    assert!(!c.stdout.contains("WRITABLE"));
    // Nothing at all reached the upper dir: not the files, not /etc, not /proc, /dev or /sys.
    assert_eq!(f.upper_entries(), BTreeSet::new());
    // And when the rootfs has a symlink there, the bind still works and the link survives.
    std::os::unix::fs::symlink("../run/resolv.conf", f.lower.join("etc/resolv.conf")).unwrap();
    let c = run_capture(&f.spec("cat /etc/resolv.conf")).unwrap();
    assert_eq!(c.stdout, host("/etc/resolv.conf"));
    assert_eq!(f.upper_entries(), BTreeSet::new());
    f.assert_no_leftovers();
}

#[test]
fn network_none_has_only_loopback_up() {
    let f = fixture();
    let mut spec = f.spec("ls /sys/class/net; cat /sys/class/net/lo/flags");
    spec.network = Network::None;
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    let lines: Vec<&str> = c.stdout.lines().collect();
    assert_eq!(lines[0], "lo");
    let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "lo must be up"
    );
    assert_eq!(lines.len(), 2);
    f.assert_no_leftovers();
}

#[test]
fn isolation_probe_finds_no_escape() {
    let f = fixture();
    let marker = format!("kiln-escape-{}", f.marker());
    let mut spec = f.spec("");
    spec.args = vec!["/bin/sh".into(), "/probe.sh".into(), marker.clone()];
    spec.hostname = "kiln-probe".into();
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}{}", c.stdout, c.stderr);
    assert!(
        c.stdout.ends_with("done\n"),
        "probe did not finish:\n{}{}",
        c.stdout,
        c.stderr
    );
    let fails: Vec<&str> = c.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        fails.is_empty(),
        "isolation failures:\n{}\n{}",
        fails.join("\n"),
        c.stderr
    );
    // The host's / never got the file.
    assert!(!Path::new("/").join(&marker).exists());
    // Writes through /proc/1/root, if allowed at all, landed in the container's upper dir.
    let upper = f.upper_entries();
    assert!(upper.iter().all(|p| p == &marker), "{upper:?}");
    f.assert_no_leftovers();
}

#[test]
fn interrupt_ends_the_tree_and_is_reported() {
    let f = fixture();
    let spec = f.spec("echo started; sleep 1000 & sleep 1000; echo not-reached");
    let handle = spec.interrupt.clone();
    let mut out = String::new();
    let outcome = run(&spec, &mut |_, chunk| {
        let s = String::from_utf8_lossy(chunk);
        if s.contains("started") {
            handle.interrupt();
        }
        out.push_str(&s);
    })
    .unwrap();
    assert!(outcome.interrupted);
    assert!(!outcome.status.success());
    assert!(!out.contains("not-reached"));
    f.assert_no_leftovers();
    // A tripped handle refuses to start the next run.
    assert!(matches!(run_capture(&spec), Err(SandboxError::Interrupted)));
}

#[test]
fn second_interrupt_kills_a_process_that_ignores_sigterm() {
    let f = fixture();
    let spec = f.spec("trap '' TERM INT; echo started; sleep 1000 & wait; echo not-reached");
    let handle = spec.interrupt.clone();
    let mut out = String::new();
    let outcome = run(&spec, &mut |_, chunk| {
        let s = String::from_utf8_lossy(chunk);
        if s.contains("started") {
            handle.interrupt();
            handle.interrupt();
        }
        out.push_str(&s);
    })
    .unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.status, ExitStatus::Signaled(libc::SIGKILL));
    assert!(!out.contains("not-reached"));
    f.assert_no_leftovers();
}

#[test]
fn failure_leaves_nothing_behind() {
    let f = fixture();
    let c = run_capture(&f.spec("sleep 1000 & echo oops >&2; exit 7")).unwrap();
    assert_eq!(c.outcome.status, ExitStatus::Exited(7));
    assert_eq!(c.stderr, "oops\n");
    f.assert_no_leftovers();
}

#[test]
fn tty_mode_gives_a_controlling_terminal() {
    let f = fixture();
    let mut spec = f.spec("tty; stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys");
    spec.stdio = Stdio::Tty;
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stdout);
    let lines: Vec<&str> = c.stdout.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines[0], "/dev/pts/0", "{lines:?}");
    assert_eq!(lines[1].split(' ').count(), 2, "{lines:?}");
    assert_eq!(lines[2], "all-ttys");
    f.assert_no_leftovers();
}

#[test]
fn dir_rootfs_keeps_no_trace_of_mountpoints() {
    let f = fixture();
    let root = f.dir.path().join("dirroot");
    busybox_rootfs(&root);
    let before = {
        let mut s = BTreeSet::new();
        walk(&root, &root, &mut s);
        s
    };
    let cache = f.dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let mut spec = f.spec(
        "ls /proc/self >/dev/null && echo hi > /var/cache/x/file && cat /etc/hosts >/dev/null",
    );
    spec.rootfs = Rootfs::Dir(root.clone());
    spec.mounts.push(Mount::Bind {
        source: cache.clone(),
        target: "/var/cache/x".into(),
        readonly: false,
    });
    spec.mounts.push(Mount::Tmpfs {
        target: "/scratch".into(),
        size: Some(1 << 20),
    });
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    assert_eq!(std::fs::read_to_string(cache.join("file")).unwrap(), "hi\n");
    let after = {
        let mut s = BTreeSet::new();
        walk(&root, &root, &mut s);
        s
    };
    assert_eq!(
        before, after,
        "mountpoints created for the run must be removed"
    );
    f.assert_no_leftovers();
}

#[test]
fn many_lowers_are_mounted() {
    let f = fixture();
    let snaps = f.dir.path().join("snapshots");
    let mut lowers = Vec::new();
    for i in 0..130 {
        // Long store paths, one with the option separators ',' and ':' in its name.
        let d = snaps.join(format!("{i:064x}{}", if i == 7 { ",x:y" } else { "" }));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), "").unwrap();
        lowers.push(d);
    }
    lowers.push(f.lower.clone());
    let mut spec = f.spec("ls / | grep -c '^f[0-9]'");
    spec.rootfs = Rootfs::Overlay {
        lowers,
        upper: f.upper.clone(),
        work: f.work.clone(),
    };
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    assert_eq!(c.stdout.trim(), "130");
    f.assert_no_leftovers();
}

/// Unmounts on drop, so that a failed assertion leaves nothing mounted.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn overlay_upper_dirs_are_plain_whatever_the_layer_paths() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("kiln-overlay-test-")
        .tempdir_in("/tmp")
        .unwrap();
    // A lower longer than one fsconfig value (255 bytes), with ':' and ',' in it, and an upper
    // with a '\', which overlayfs would read as an escape.
    let lower = dir
        .path()
        .join("a:b,c")
        .join("x".repeat(200))
        .join("y".repeat(100));
    assert!(lower.as_os_str().len() > 255);
    std::fs::create_dir_all(lower.join("dir")).unwrap();
    std::fs::write(lower.join("dir/f"), "in dir").unwrap();
    std::fs::write(lower.join("file"), "content").unwrap();
    let [upper, work, merged] = ["up\\per", "work", "merged"].map(|d| dir.path().join(d));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let lowers = [lower.clone()];
    kiln_sandbox::overlay::Overlay {
        lowers: &lowers,
        upper: Some((&upper, &work)),
    }
    .mount(&merged)
    .unwrap();
    let _mounted = Mounted(merged.clone());
    assert_eq!(
        std::fs::read_to_string(merged.join("dir/f")).unwrap(),
        "in dir"
    );

    // redirect_dir=off: renaming a directory of a lower is refused (mv then copies), never
    // recorded as a redirect xattr pointing into the lower.
    let err = std::fs::rename(merged.join("dir"), merged.join("moved")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    // metacopy=off: a chmod copies the data up with the metadata.
    std::fs::set_permissions(
        merged.join("file"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(upper.join("file")).unwrap(),
        "content"
    );
    assert_eq!(
        std::fs::metadata(upper.join("file")).unwrap().mode() & 0o7777,
        0o600
    );
    // index=off: no index dir beside the work dir.
    assert!(
        work.join("work").is_dir(),
        "the overlay did not use its work dir"
    );
    assert!(!work.join("index").exists());
    // nodev, and the options stated where the kernel shows them.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*merged.to_string_lossy()))
        .expect("the overlay is in mountinfo");
    assert!(
        line.contains(" overlay ") && line.contains("nodev"),
        "{line}"
    );

    // Without an upper the overlay is read-only, and overlayfs wants two lowers.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let err = kiln_sandbox::overlay::Overlay {
        lowers: &lowers,
        upper: None,
    }
    .mount(&ro)
    .unwrap_err();
    assert!(err.to_string().contains("overlayfs needs 2"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let two = [lower.clone(), empty];
    kiln_sandbox::overlay::Overlay {
        lowers: &two,
        upper: None,
    }
    .mount(&ro)
    .unwrap();
    let _ro = Mounted(ro.clone());
    assert_eq!(std::fs::read_to_string(ro.join("file")).unwrap(), "content");
    let err = std::fs::write(ro.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

#[test]
fn extra_mounts_readonly_bind_and_tmpfs() {
    let f = fixture();
    let secret = f.dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let mut spec = f.spec(
        "cat /run/secrets/token; echo; echo x > /run/secrets/token 2>/dev/null && echo WRITABLE; \
         echo t > /scratch/t && cat /scratch/t",
    );
    spec.mounts.push(Mount::Bind {
        source: secret.clone(),
        target: "/run/secrets/token".into(),
        readonly: true,
    });
    spec.mounts.push(Mount::Tmpfs {
        target: "/scratch".into(),
        size: None,
    });
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    assert_eq!(c.stdout, "s3cret\nt\n");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret");
    // Neither the secret nor its mountpoint nor the tmpfs content reach the layer.
    assert_eq!(f.upper_entries(), BTreeSet::new());
    f.assert_no_leftovers();
}

#[test]
fn mountpoint_under_a_symlinked_dir_is_removed_after_the_run() {
    let f = fixture();
    // /var/run -> /run: the init layer cannot hold /var/run/secrets/token, so the sandbox
    // creates it in the merged rootfs and removes it again afterwards.
    std::fs::create_dir_all(f.lower.join("run")).unwrap();
    std::fs::create_dir_all(f.lower.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", f.lower.join("var/run")).unwrap();
    let secret = f.dir.path().join("token");
    std::fs::write(&secret, "t0k3n").unwrap();
    let mut spec = f.spec("cat /var/run/secrets/token");
    spec.mounts.push(Mount::Bind {
        source: secret,
        target: "/var/run/secrets/token".into(),
        readonly: true,
    });
    let c = run_capture(&spec).unwrap();
    assert!(c.outcome.status.success(), "{}", c.stderr);
    assert_eq!(c.stdout, "t0k3n");
    let upper = f.upper_entries();
    assert!(
        !upper.iter().any(|p| p.contains("secrets")),
        "the mountpoint must not stay in the upper dir: {upper:?}"
    );
    f.assert_no_leftovers();
}

/// Helper for `inherit_mode_passes_the_callers_fds`: runs only when spawned by it.
#[test]
#[ignore = "helper process of inherit_mode_passes_the_callers_fds"]
fn helper_inherit() {
    let Ok(dir) = std::env::var("KILN_SANDBOX_HELPER_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowers: vec![dir.join("lower")],
            upper: dir.join("upper"),
            work: dir.join("work"),
        },
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "read line; echo \"out:$line\"; echo err >&2; exit 5".into(),
        ],
    );
    spec.env = vec!["PATH=/bin".into()];
    spec.stdio = Stdio::Inherit;
    let outcome = run(&spec, &mut |_, _| {
        panic!("no output callback in Inherit mode")
    })
    .unwrap();
    std::process::exit(outcome.status.code());
}

#[test]
fn inherit_mode_passes_the_callers_fds() {
    use std::io::Write;
    let f = fixture();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_inherit",
            "--include-ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env("KILN_SANDBOX_HELPER_DIR", f.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("out:hello\n"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err\n"),
        "{out:?}"
    );
    f.assert_no_leftovers();
}

/// Helper for `sigint_to_the_caller_kills_the_tree`: runs only when spawned by it.
#[test]
#[ignore = "helper process of sigint_to_the_caller_kills_the_tree"]
fn helper_run_until_killed() {
    let Ok(dir) = std::env::var("KILN_SANDBOX_HELPER_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let marker = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowers: vec![dir.join("lower")],
            upper: dir.join("upper"),
            work: dir.join("work"),
        },
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "sleep 1000 & echo started; sleep 1000".into(),
        ],
    );
    spec.env = vec!["PATH=/bin".into(), format!("KILN_TEST_MARKER={marker}")];
    let _ = run(&spec, &mut |_, chunk| {
        use std::io::Write;
        let mut o = std::io::stdout();
        let _ = o.write_all(chunk);
        let _ = o.flush();
    });
}

#[test]
fn sigint_to_the_caller_kills_the_tree() {
    use std::io::BufRead;
    let f = fixture();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_run_until_killed",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_SANDBOX_HELPER_DIR", f.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    /// Kills the helper if an assertion fails before it is reaped.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("helper ended before the container started")
            .unwrap();
        if line.contains("started") {
            break;
        }
    }
    let procs = marked_processes(&f.marker());
    // busybox sh execs its last command: two sleeps.
    assert!(procs.len() >= 2, "expected two sleeps, found {procs:?}");
    let pidfds: Vec<_> = procs
        .iter()
        .filter_map(|&p| {
            rustix::process::pidfd_open(
                rustix::process::Pid::from_raw(p).unwrap(),
                rustix::process::PidfdFlags::empty(),
            )
            .ok()
        })
        .collect();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
    let status = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGINT)
    );
    // Wait (event-driven, with a generous failsafe) for every container process to end.
    for fd in &pidfds {
        let mut p = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(fd),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: valid pollfd array.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 1, 60_000) };
        assert_eq!(r, 1, "a container process outlived the killed caller");
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&*f.dir.path().to_string_lossy()));
    assert!(marked_processes(&f.marker()).is_empty());
}
