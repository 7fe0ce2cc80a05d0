//! What a step may ask of the kernel: the seccomp filter, keyrings, and the caller's terminal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::util::*;

/// The probe (probe.c) compiled static, once per test run.
fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let gcc = require("gcc");
            std::fs::create_dir_all("/var/tmp/kiln-tests").unwrap();
            let dir = tempfile::Builder::new()
                .prefix("probe-")
                .tempdir_in("/var/tmp/kiln-tests")
                .unwrap()
                .keep();
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/security/probe.c");
            let bin = dir.join("probe");
            let out = Command::new(gcc)
                .args(["-static", "-O1", "-o"])
                .arg(&bin)
                .arg(&src)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "gcc -static {} failed (static glibc comes with libc6-dev; scripts/test.sh installs it):\n{}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            bin
        })
        .clone()
}

/// A context with the probe at its root and `dockerfile`.
fn probe_context(env: &Env, name: &str, dockerfile: &str) -> String {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(probe(), dir.join("probe")).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir.to_string_lossy().into_owned()
}

/// Runs the probe on the host.
fn host_probe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(probe()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Removes a key from root's user keyring when the test ends, however it ends.
struct HostKey(String);

impl Drop for HostKey {
    fn drop(&mut self) {
        host_probe(&["key-unlink", &self.0]);
    }
}

#[test]
fn a_run_step_cannot_reach_the_hosts_keyrings() {
    let env = Env::new();
    env.busybox_base("busybox");
    let nonce =
        format!("{}-{}", std::process::id(), env.dir.path().display()).replace(['/', '.'], "-");
    // Host root keeps a secret in its user keyring, as a credential helper would.
    let secret = HostKey(format!("kiln-test-host-{nonce}"));
    let (code, out) = host_probe(&["key-add", &secret.0, "host-secret-payload"]);
    assert_eq!(code, Some(0), "the host adds its key: {out}");
    let (code, out) = host_probe(&["key-read", &secret.0]);
    assert_eq!(
        code,
        Some(0),
        "the probe reads keys where nothing stops it: {out}"
    );
    assert!(out.contains("payload host-secret-payload"), "{out}");

    let planted = HostKey(format!("kiln-test-run-{nonce}"));
    let ctx = probe_context(
        &env,
        "keys",
        &format!(
            "FROM busybox\nCOPY probe /probe\n\
             RUN /probe key-read {}; /probe key-add {} planted-by-run; true\n",
            secret.0, planted.0
        ),
    );
    let (_, log) = env.build(&["-t", "keys", &ctx]);
    assert!(
        !log.contains("host-secret-payload"),
        "a RUN step read the host's key:\n{log}"
    );
    assert!(
        log.contains("key-read: EPERM"),
        "keyctl must be refused with EPERM, as docker's profile does:\n{log}"
    );
    assert!(
        log.contains("key-add: EPERM"),
        "add_key must be refused with EPERM:\n{log}"
    );
    let (code, out) = host_probe(&["key-read", &planted.0]);
    assert_eq!(
        code,
        Some(11),
        "a key added in RUN reached the host's keyring: {out}"
    );
    assert!(out.contains("key-read: ENOKEY"), "{out}");
}

#[test]
fn a_run_step_cannot_unshare_a_user_namespace_to_mount() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = probe_context(
        &env,
        "userns",
        "FROM busybox\n\
         RUN unshare -U -r -m sh -c 'mount -t tmpfs none /tmp && echo MOUNTED-IN-USERNS-$((6*7))' 2>&1; echo unshare-exit=$?\n\
         RUN grep -E '^Seccomp:' /proc/self/status\n",
    );
    let (_, log) = env.build(&["-t", "userns", &ctx]);
    assert!(
        !log.contains("MOUNTED-IN-USERNS-42"),
        "a RUN step mounted a tmpfs from its own user namespace:\n{log}"
    );
    assert!(
        log.contains("unshare-exit=1"),
        "busybox unshare must fail:\n{log}"
    );
    assert!(
        log.contains("Operation not permitted"),
        "unshare must be refused with EPERM:\n{log}"
    );
    // Mode 2: a seccomp filter is in force.
    assert!(
        log.lines().any(|l| l.ends_with("Seccomp:\t2")),
        "/proc/self/status must show a seccomp filter:\n{log}"
    );
}

#[test]
fn the_legitimate_uses_next_to_the_filter_keep_working() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = probe_context(
        &env,
        "legit",
        "FROM busybox\n\
         RUN su -s /bin/sh app -c id\n\
         RUN setpriv --nnp grep NoNewPrivs /proc/self/status\n\
         RUN --network=none ping -c 1 127.0.0.1\n\
         RUN chroot / /bin/sh -c 'echo chroot-works-$((1+1))'\n\
         RUN mount -t tmpfs tmpfs /tmp 2>/dev/null && echo MOUNTED-$((1)) || echo mount-refused-$((1))\n\
         RUN echo data > /f && sync && sync /f && echo synced-$?\n",
    );
    let (_, log) = env.build(&["-t", "legit", &ctx]);
    assert!(
        log.contains("uid=1000(app) gid=1000(app)"),
        "su switches users:\n{log}"
    );
    assert!(
        log.contains("NoNewPrivs:\t1"),
        "setpriv sets no_new_privs:\n{log}"
    );
    assert!(
        log.contains("1 packets received"),
        "ping (a raw socket, CAP_NET_RAW) works:\n{log}"
    );
    assert!(log.contains("chroot-works-2"), "chroot works:\n{log}");
    assert!(log.contains("mount-refused-1"), "mount still fails:\n{log}");
    assert!(log.contains("synced-0"), "sync works:\n{log}");
}

#[test]
fn syncs_are_no_ops_in_build_steps_unless_asked_for() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = probe_context(
        &env,
        "sync",
        "FROM busybox\nCOPY probe /probe\nRUN /probe fsync-badfd; true\n",
    );
    // fsync of an fd that is not open returns 0 only if the call never reached the kernel.
    let (_, log) = env.build(&["--no-cache", "-t", "sync", &ctx]);
    assert!(
        log.contains("fsync-badfd: returned 0"),
        "fsync must be a no-op in RUN:\n{log}"
    );
    let (_, log) = env.build(&["--no-cache", "--sync", "-t", "sync", &ctx]);
    assert!(
        log.contains("fsync-badfd: EBADF"),
        "--sync keeps real syncs:\n{log}"
    );
    let out = env
        .kiln()
        .env("KILN_SYNC", "1")
        .args(["build", "--no-cache", "-t", "sync", &ctx])
        .output()
        .unwrap();
    assert_success(&out, "KILN_SYNC=1 kiln build");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("fsync-badfd: EBADF"),
        "KILN_SYNC=1 keeps real syncs:\n{log}"
    );
    // `kiln run` is not a build step: its syncs are real.
    let out = env
        .kiln()
        .args(["run", "--rm", "sync", "/probe", "fsync-badfd"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "{stdout}");
    assert!(stdout.contains("fsync-badfd: EBADF"), "{stdout}");
}

/// A pseudo-terminal pair: the test plays the user's terminal.
fn open_pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: posix_openpt returns a new fd or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(
        master >= 0,
        "posix_openpt: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd, owned from here.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: grantpt and unlockpt on the master we own.
    assert_eq!(unsafe { libc::grantpt(master.as_raw_fd()) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::unlockpt(master.as_raw_fd()) }, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is valid for its length.
    let r = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    assert_eq!(r, 0);
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let slave = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    assert!(
        slave >= 0,
        "open pty slave: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd, owned from here.
    (master, unsafe { OwnedFd::from_raw_fd(slave) })
}

/// Bytes waiting in the terminal's input queue: what the user's shell would read next.
fn queued_input(slave: &OwnedFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n
}

#[test]
fn kiln_run_without_a_tty_cannot_type_into_the_callers_terminal() {
    let env = Env::new();
    env.busybox_base("busybox");
    let ctx = probe_context(&env, "tty", "FROM busybox\nCOPY probe /probe\n");
    env.build(&["-t", "probe", &ctx]);
    let (master, slave) = open_pty();
    let mut cmd = env.kiln();
    cmd.args(["run", "--rm", "probe", "/probe", "tiocsti", "echo pwned\n"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe; the slave is fd 0 by then. The terminal
    // becomes kiln's controlling terminal, as a shell's terminal is for the commands it runs.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().unwrap();
    let typed = queued_input(&slave);
    assert_eq!(
        typed, 0,
        "the container typed {typed} bytes into the caller's terminal (exit {status})"
    );
    assert_eq!(
        status.code(),
        Some(11),
        "the probe must run and be refused (11), got {status}"
    );
    // What the probe said reached the terminal: read it from the master side.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("tiocsti: EPERM") {
        // SAFETY: buf is valid for its length. The probe's line was written before it exited,
        // so it is in the terminal's buffers and this read returns.
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(
            n > 0,
            "read pty master: {}",
            std::io::Error::last_os_error()
        );
        seen.extend_from_slice(&buf[..n as usize]);
    }
}
