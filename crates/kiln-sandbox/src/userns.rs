//! Rootless kiln: a normal user's kiln re-enters itself in a user namespace where it is root.
//!
//! A user namespace maps uid 0 inside to the user's own uid and uids 1..=N to the user's
//! subordinate range (`/etc/subuid`, `/etc/subgid`), written by the setuid helpers
//! `newuidmap`/`newgidmap` (package `uidmap`), as podman and buildah do. Everything kiln does
//! afterwards (store writes, overlay mounts, `lchown` of layer entries, the sandbox) runs as
//! root of that namespace: a file owned by root in the image is uid 0 there, and so uid 0 in
//! the layer tar, whatever the user's own uid is.
//!
//! The sequence, from the binary's `main` before any thread starts:
//! 1. [`reexec`] (the user's process): spawns the same binary with the same arguments and
//!    [`SYNC_ENV`] naming two pipes, waits until the child has unshared, runs `newuidmap` and
//!    `newgidmap` on it, lets it go on, forwards `SIGINT`/`SIGTERM`/`SIGHUP` to it and returns
//!    its exit code.
//! 2. [`enter_if_asked`] (the child, first thing in `main`): `unshare(CLONE_NEWUSER)`, tells
//!    the parent, waits for the maps, and carries on as uid 0 with every capability of the
//!    namespace (none on the host).
//!
//! [`current`] tells any part of kiln whether it runs in such a namespace (overlays then need
//! `userxattr`, opaque dirs `user.overlay.opaque`, and `/sys` of the host's network namespace
//! cannot be mounted).

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::SandboxError;

/// The environment variable that tells a re-executed kiln to enter the user namespace: the
/// numbers of its two pipe fds, `READY_W,GO_R`.
pub const SYNC_ENV: &str = "_KILN_USERNS_SYNC";

/// One contiguous id range of a user namespace's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id inside the namespace.
    pub inside: u32,
    /// The id it maps to outside.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The uid and gid maps of a user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// `/proc/PID/uid_map`'s lines.
    pub uids: Vec<IdRange>,
    /// `/proc/PID/gid_map`'s lines.
    pub gids: Vec<IdRange>,
}

impl fmt::Display for Mapping {
    /// `0->1000, 1->100000..165535`: the uid map, the way people read it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.uids.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.count == 1 {
                write!(f, "{}->{}", r.inside, r.outside)?;
            } else {
                let last = u64::from(r.outside) + u64::from(r.count) - 1;
                write!(f, "{}->{}..{last}", r.inside, r.outside)?;
            }
        }
        Ok(())
    }
}

/// Parses `/proc/PID/uid_map` text. The initial namespace's identity map reads as `None`.
fn parse_proc_map(text: &str) -> Option<Vec<IdRange>> {
    let ranges: Vec<IdRange> = text
        .lines()
        .filter_map(|line| {
            let mut n = line.split_whitespace().map(str::parse::<u32>);
            Some(IdRange {
                inside: n.next()?.ok()?,
                outside: n.next()?.ok()?,
                count: n.next()?.ok()?,
            })
        })
        .collect();
    let identity = ranges.len() == 1
        && ranges[0]
            == IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            };
    (!identity).then_some(ranges)
}

/// The maps of the user namespace this process runs in, or `None` in the initial one.
/// Read once: a process never changes its user namespace after `main` has started.
pub fn current() -> Option<&'static Mapping> {
    static CURRENT: OnceLock<Option<Mapping>> = OnceLock::new();
    CURRENT
        .get_or_init(|| {
            let uids = parse_proc_map(&std::fs::read_to_string("/proc/self/uid_map").ok()?)?;
            let gids = std::fs::read_to_string("/proc/self/gid_map")
                .ok()
                .and_then(|t| parse_proc_map(&t))
                .unwrap_or_default();
            Some(Mapping { uids, gids })
        })
        .as_ref()
}

/// The subordinate ranges of a user, from `/etc/subuid`- or `/etc/subgid`-format text
/// (`NAME_OR_ID:FIRST:COUNT` lines), in file order.
pub fn subordinate_ranges(text: &str, name: Option<&str>, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let owner = f.next()?;
            let first = f.next()?.trim().parse::<u32>().ok()?;
            let count = f.next()?.trim().parse::<u32>().ok()?;
            let ours = owner == id || name.is_some_and(|n| n == owner);
            (ours && count > 0).then_some((first, count))
        })
        .collect()
}

/// The name of `uid` in `/etc/passwd` text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// The map a rootless kiln asks for: 0 is the user's own id, 1.. the first subordinate range
/// (`file` names where it came from, for the error).
fn map_for(
    file: &'static str,
    kind: &'static str,
    user: &str,
    own: u32,
    ranges: &[(u32, u32)],
) -> Result<Vec<IdRange>, SandboxError> {
    let Some(&(first, count)) = ranges.first() else {
        return Err(SandboxError::NoSubordinateIds {
            file,
            kind,
            user: user.to_owned(),
        });
    };
    Ok(vec![
        IdRange {
            inside: 0,
            outside: own,
            count: 1,
        },
        IdRange {
            inside: 1,
            outside: first,
            count,
        },
    ])
}

/// The map a rootless kiln of the calling user gets, from `/etc/passwd`, `/etc/subuid` and
/// `/etc/subgid`; an error says which line to add when a range is missing.
pub fn mapping_for_current_user() -> Result<Mapping, SandboxError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let read = |path: &'static str| match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(SandboxError::sys("read", path, e)),
    };
    let name = user_name(&read("/etc/passwd")?, uid);
    let shown = name.clone().unwrap_or_else(|| uid.to_string());
    let subuid = subordinate_ranges(&read("/etc/subuid")?, name.as_deref(), uid);
    let subgid = subordinate_ranges(&read("/etc/subgid")?, name.as_deref(), uid);
    Ok(Mapping {
        uids: map_for("/etc/subuid", "uid", &shown, uid, &subuid)?,
        gids: map_for("/etc/subgid", "gid", &shown, gid, &subgid)?,
    })
}

/// Why this kernel refuses an unprivileged user namespace, from the sysctls that forbid one.
fn userns_refusal() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    let checks = [
        (
            "/proc/sys/user/max_user_namespaces",
            "user.max_user_namespaces",
            "0",
            "sysctl -w user.max_user_namespaces=15000",
        ),
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "kernel.unprivileged_userns_clone",
            "0",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "kernel.apparmor_restrict_unprivileged_userns",
            "1",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile \
             for kiln with `userns,`",
        ),
    ];
    for (path, name, off, fix) in checks {
        if read(path).as_deref() == Some(off) {
            return format!("the sysctl {name} is {off}; as root: {fix}");
        }
    }
    "no sysctl forbids them, so a seccomp filter or a container runtime does (inside docker: \
     --security-opt seccomp=unconfined, or build as root)"
        .into()
}

/// Checks, before anything is spawned, that this user can have a rootless kiln: user
/// namespaces allowed, subordinate ranges present, `newuidmap` and `newgidmap` on `PATH`.
pub fn preflight() -> Result<Mapping, SandboxError> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .map(|s| s.trim().to_owned());
    if max.as_deref() == Some("0") {
        return Err(SandboxError::UserNamespaces(userns_refusal()));
    }
    let mapping = mapping_for_current_user()?;
    for tool in ["newuidmap", "newgidmap"] {
        if which(tool).is_none() {
            return Err(SandboxError::IdMap {
                tool,
                message: "not found on PATH: install the uidmap package (apt-get install uidmap, \
                          dnf install shadow-utils)"
                    .into(),
            });
        }
    }
    Ok(mapping)
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The child's pid, for the signal handler of the parent.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, signal) };
    }
}

fn pipe_pair(inherit_write: bool) -> Result<(OwnedFd, OwnedFd), SandboxError> {
    use rustix::pipe::PipeFlags;
    let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::sys("pipe2", "user namespace sync pipe", e))?;
    // The child's end loses CLOEXEC so that it survives the exec; the process is still
    // single-threaded here, so no other fork can inherit it meanwhile.
    let child_end = if inherit_write { &w } else { &r };
    rustix::io::fcntl_setfd(child_end, rustix::io::FdFlags::empty())
        .map_err(|e| SandboxError::sys("fcntl", "user namespace sync pipe", e))?;
    Ok((r, w))
}

fn id_map_args(pid: u32, map: &[IdRange]) -> Vec<String> {
    let mut args = vec![pid.to_string()];
    for r in map {
        args.extend([r.inside, r.outside, r.count].map(|n| n.to_string()));
    }
    args
}

fn run_id_tool(tool: &'static str, args: &[String]) -> Result<(), SandboxError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| SandboxError::IdMap {
            tool,
            message: format!("could not be started: {e} (apt-get install uidmap)"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(SandboxError::IdMap {
        tool,
        message: format!(
            "{} failed ({}): {}; check the ranges in /etc/subuid and /etc/subgid",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Runs this binary again, with the same arguments and `env` added, as root of a new user
/// namespace with `mapping`, and returns its exit code (128 + the signal if one killed it).
/// Call it from `main` before any thread starts (the pipes' inheritance relies on it).
pub fn reexec(mapping: &Mapping, env: &[(&str, &std::ffi::OsStr)]) -> Result<i32, SandboxError> {
    let (ready_r, ready_w) = pipe_pair(true)?;
    let (go_r, go_w) = pipe_pair(false)?;
    let exe =
        std::env::current_exe().map_err(|e| SandboxError::sys("readlink", "/proc/self/exe", e))?;
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1)).env(
        SYNC_ENV,
        format!("{},{}", ready_w.as_raw_fd(), go_r.as_raw_fd()),
    );
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| SandboxError::sys("spawn", exe.display().to_string(), e))?;
    drop((ready_w, go_r));
    let pid = child.id();
    CHILD.store(pid as i32, Ordering::Relaxed);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls kill (async-signal-safe) on an atomic
        // pid; sighandler_t is the handler's address, as signal(2) takes it.
        unsafe { libc::signal(signal, forward_signal as *const () as libc::sighandler_t) };
    }
    let mut byte = [0u8; 1];
    let unshared = std::fs::File::from(ready_r).read(&mut byte).unwrap_or(0) == 1;
    if unshared {
        let mapped = run_id_tool("newuidmap", &id_map_args(pid, &mapping.uids))
            .and_then(|()| run_id_tool("newgidmap", &id_map_args(pid, &mapping.gids)));
        if let Err(e) = mapped {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        // A child that died meanwhile shows in its exit status below.
        let _ = std::fs::File::from(go_w).write_all(b"g");
    } else {
        // The child said why it could not unshare; its exit status carries the failure.
        drop(go_w);
    }
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SandboxError::sys("waitpid", format!("kiln ({pid})"), e)),
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// In a kiln started by [`reexec`]: enters the new user namespace and waits for its maps.
/// Returns `Ok(false)` when this process was not started that way. Call it first in `main`,
/// before any thread starts: `unshare(CLONE_NEWUSER)` refuses a multi-threaded caller.
pub fn enter_if_asked() -> Result<bool, SandboxError> {
    let Some(value) = std::env::var_os(SYNC_ENV) else {
        return Ok(false);
    };
    // SAFETY: main calls this before it starts any thread, so nothing reads the environment
    // concurrently; the variable must not reach the processes kiln starts.
    unsafe { std::env::remove_var(SYNC_ENV) };
    let fds: Vec<RawFd> = value
        .to_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    let [ready_w, go_r] = fds[..] else {
        return Err(SandboxError::Spec(format!(
            "{SYNC_ENV}={value:?} is not two fd numbers (it is set by kiln itself)"
        )));
    };
    let is_fd = |fd| rustix::io::fcntl_getfd(borrow_for_check(fd)).is_ok();
    if !is_fd(ready_w) || !is_fd(go_r) {
        return Err(SandboxError::Spec(format!(
            "{SYNC_ENV}={value:?} names fds that are not open (it is set by kiln itself)"
        )));
    }
    // SAFETY: both fds were checked open above, were inherited from the parent kiln for this
    // purpose only, and nothing else in this process owns them.
    let (ready_w, go_r) = unsafe { (OwnedFd::from_raw_fd(ready_w), OwnedFd::from_raw_fd(go_r)) };
    // A parent killed outright takes this kiln down the way Ctrl-C would (it stops its runs
    // and leaves the store consistent); a parent that died before this call shows as EOF on
    // the go pipe below.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .map_err(|e| SandboxError::sys("prctl PR_SET_PDEATHSIG", "kiln", e))?;
    crate::namespaces::unshare(libc::CLONE_NEWUSER).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM | libc::ENOSPC | libc::EACCES) => {
            SandboxError::UserNamespaces(userns_refusal())
        }
        _ => e,
    })?;
    std::fs::File::from(ready_w)
        .write_all(b"r")
        .map_err(|e| SandboxError::sys("write", "user namespace sync pipe", e))?;
    let mut byte = [0u8; 1];
    let go = std::fs::File::from(go_r).read(&mut byte).unwrap_or(0) == 1;
    if !go || !rustix::process::geteuid().is_root() {
        return Err(SandboxError::IdMap {
            tool: "newuidmap",
            message: "the parent kiln did not map this process's user namespace".into(),
        });
    }
    Ok(true)
}

/// A borrowed fd for a validity check only.
fn borrow_for_check(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for fcntl(F_GETFD), which is harmless on any number: a closed fd gives
    // EBADF, and nothing is read from or written to it.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_not_rootless() {
        assert_eq!(parse_proc_map("         0          0 4294967295\n"), None);
        let map = parse_proc_map("0 1000 1\n1 100000 65536\n").unwrap();
        let m = Mapping {
            uids: map,
            gids: vec![],
        };
        assert_eq!(m.to_string(), "0->1000, 1->100000..165535");
    }

    #[test]
    fn subordinate_ranges_match_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:1000\nbob:200000:0\n# x\nbob:400000:10\n";
        assert_eq!(
            subordinate_ranges(text, Some("alice"), 1000),
            vec![(100000, 65536)]
        );
        assert_eq!(
            subordinate_ranges(text, Some("carol"), 1001),
            vec![(300000, 1000)]
        );
        // An empty range is no range.
        assert_eq!(
            subordinate_ranges(text, Some("bob"), 1002),
            vec![(400000, 10)]
        );
        assert!(subordinate_ranges(text, None, 7).is_empty());
    }

    #[test]
    fn a_missing_range_says_what_to_add() {
        let e = map_for("/etc/subuid", "uid", "dave", 1003, &[]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/etc/subuid"), "{text}");
        assert!(text.contains("dave:100000:65536"), "{text}");
    }

    #[test]
    fn passwd_names_the_uid() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 7), None);
    }
}
