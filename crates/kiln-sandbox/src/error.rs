//! The crate's error type.

use std::io;

/// Why a run could not be set up or waited for.
///
/// A non-zero exit of the process is not an error: it is an
/// [`Outcome`](crate::Outcome). Syscall errors name the call and the path, e.g.
/// `mount overlay on /var/lib/kiln/tmp/x/root: EINVAL`, with the OS message as the source.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox needs root: it mounts filesystems and creates namespaces.
    #[error("the sandbox needs root (running with effective uid {euid}); run kiln as root")]
    NotRoot {
        /// The effective uid we run with.
        euid: u32,
    },
    /// `--isolation chroot` needs `CAP_SYS_CHROOT`.
    #[error(
        "--isolation chroot needs CAP_SYS_CHROOT, which kiln (effective uid {euid}) does not \
         have: run the container as root (docker's default capabilities include it), or use \
         --isolation rootless where user namespaces are allowed"
    )]
    NoChroot {
        /// The effective uid we run with.
        euid: u32,
    },
    /// The spec cannot be run as it is.
    #[error("invalid run spec: {0}")]
    Spec(String),
    /// A syscall failed.
    #[error("{syscall} {path}: {}", errno_name(.source))]
    Syscall {
        /// What was called, with enough words to say what for ("mount overlay on").
        syscall: &'static str,
        /// The path (or object) it was called on.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a file of the rootfs failed.
    #[error("read {path} in the rootfs: {source}")]
    ReadRootfs {
        /// Path inside the container.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The user spec could not be resolved against `/etc/passwd` and `/etc/group`.
    #[error("user {spec:?}: {reason}")]
    User {
        /// The spec as given.
        spec: String,
        /// What did not match.
        reason: String,
    },
    /// `argv[0]` was not found.
    #[error("exec {program:?}: executable file not found in $PATH ({path}) inside the rootfs")]
    NotFound {
        /// `argv[0]`.
        program: String,
        /// The PATH searched.
        path: String,
    },
    /// The seccomp profile (`seccomp/profile.toml`) or a syscall table could not be compiled
    /// into a filter.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// The [`Interrupt`](crate::Interrupt) was triggered before the run started.
    #[error("interrupted before the process started")]
    Interrupted,
    /// More sandboxes ran at once under one [`Interrupt`](crate::Interrupt) than it can stop.
    #[error("more than {max} sandboxes at once under one interrupt handle (lower --jobs)")]
    TooManyRuns {
        /// [`MAX_CONCURRENT_RUNS`](crate::MAX_CONCURRENT_RUNS).
        max: usize,
    },
    /// The run's memory or process limits cannot be enforced on this machine.
    #[error(
        "--memory/--pids-limit need a cgroup of the run's own, and {path} failed: {source} \
         (cgroups mounted read-write at /sys/fs/cgroup, as root)"
    )]
    Limits {
        /// The cgroup file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A mount's target lies inside another mount, and its mountpoint cannot be made there.
    #[error(
        "mount target {target}: its mountpoint cannot be made inside the mount on {outer}: \
         {}{}",
        errno_name(.source),
        nested_hint(.source)
    )]
    NestedMountpoint {
        /// The inner target.
        target: String,
        /// The target of the mount that holds it.
        outer: String,
        /// The OS error of the mkdir or create.
        #[source]
        source: io::Error,
    },
    /// The run's private network could not be set up.
    #[error("{0}")]
    Network(String),
    /// A rootless kiln needs a subordinate id range for the user, and there is none.
    #[error(
        "no subordinate {kind} range for user {user} in {file}: a rootless kiln maps the \
         image's ids into one; as root, add one with `echo \"{user}:100000:65536\" >> {file}` \
         (a range no other user has; `usermod --add-subuids 100000-165535 --add-subgids \
         100000-165535 {user}` adds both)"
    )]
    NoSubordinateIds {
        /// `/etc/subuid` or `/etc/subgid`.
        file: &'static str,
        /// `uid` or `gid`.
        kind: &'static str,
        /// The user's name (or uid when it has none).
        user: String,
    },
    /// The kernel refuses this user a user namespace.
    #[error(
        "a rootless kiln needs an unprivileged user namespace, and the kernel refuses one: {0}"
    )]
    UserNamespaces(String),
    /// `newuidmap` or `newgidmap` is missing or refused the map.
    #[error("{tool} {message}")]
    IdMap {
        /// The helper.
        tool: &'static str,
        /// What went wrong and what to do.
        message: String,
    },
    /// The sandbox's setup thread panicked (a bug).
    #[error("the sandbox setup thread panicked")]
    Panicked,
}

impl SandboxError {
    pub(crate) fn sys(
        syscall: &'static str,
        path: impl Into<String>,
        err: impl Into<io::Error>,
    ) -> Self {
        SandboxError::Syscall {
            syscall,
            path: path.into(),
            source: err.into(),
        }
    }

    pub(crate) fn errno(syscall: &'static str, path: impl Into<String>, errno: i32) -> Self {
        Self::sys(syscall, path, io::Error::from_raw_os_error(errno))
    }

    /// The raw errno of a [`SandboxError::Syscall`], if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SandboxError::Syscall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What to do about a mountpoint that cannot be made in an outer mount.
fn nested_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EROFS) => {
            " (that mount is read-only: its source must have the directory already, or mount \
             it read-write)"
        }
        Some(libc::ENOTDIR) => " (the outer mount is a file)",
        _ => "",
    }
}

/// `EPERM`-style name of an OS error, falling back to the OS message.
fn errno_name(err: &io::Error) -> String {
    let Some(code) = err.raw_os_error() else {
        return err.to_string();
    };
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return err.to_string(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_errors_name_the_call_the_path_and_the_errno() {
        let e = SandboxError::errno("mount overlay on", "/x", libc::EPERM);
        assert_eq!(e.to_string(), "mount overlay on /x: EPERM");
        let src = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        assert!(src.contains("Operation not permitted"), "{src}");
    }
}
