//! The private network of a run: a network namespace of its own whose only way out is
//! `slirp4netns`, a user-mode TCP/IP stack that NATs the container's connections through
//! ordinary sockets on the host.
//!
//! This is what `docker build` gives `RUN` (a bridge with NAT'd egress), without touching the
//! host's network configuration: no veth, no nftables rules, no `ip_forward`, so nothing is left
//! behind when kiln is killed, and the same path works for rootless runs later.
//! `--disable-host-loopback` keeps the host's `127.0.0.1` services out of reach (slirp's
//! gateway would otherwise forward to them), and the namespace has its own abstract unix
//! sockets and packet sockets, so a step sees none of the host's traffic.
//!
//! Lifecycle without polling: slirp4netns writes to a ready pipe once the interface is
//! configured, and exits when the write end of its exit pipe closes, which happens when
//! [`PrivateNetwork`] is dropped or kiln dies.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::SandboxError;

/// The program, found on `PATH`.
const SLIRP: &str = "slirp4netns";

/// A network namespace with `lo` up and a `tap0` that slirp4netns serves.
pub(crate) struct PrivateNetwork {
    namespace: File,
    slirp: Child,
    /// Closing it tells slirp4netns to exit.
    exit_w: Option<OwnedFd>,
}

impl PrivateNetwork {
    /// Creates the namespace and waits until slirp4netns has configured it.
    pub(crate) fn start() -> Result<PrivateNetwork, SandboxError> {
        let namespace = new_namespace()?;
        let (ready_r, ready_w) = crate::container::pipe()?;
        let (exit_r, exit_w) = crate::container::pipe()?;
        let mut log = tempfile::tempfile()
            .map_err(|e| SandboxError::sys("create", "slirp4netns log file", e))?;
        let log_w = log
            .try_clone()
            .map_err(|e| SandboxError::sys("dup", "slirp4netns log file", e))?;
        // The child gets the namespace, the ready pipe and the exit pipe as fds 3, 4 and 5.
        // Copies numbered 10 and up first, so that no dup2 onto 3..5 clobbers a source.
        let high = |fd: std::os::fd::BorrowedFd<'_>| {
            rustix::io::fcntl_dupfd_cloexec(fd, 10)
                .map_err(|e| SandboxError::sys("dup", "slirp4netns fds", std::io::Error::from(e)))
        };
        let sources: [OwnedFd; 3] = [
            high(namespace.as_fd())?,
            high(ready_w.as_fd())?,
            high(exit_r.as_fd())?,
        ];
        let inherited = sources.each_ref().map(|fd| fd.as_raw_fd());
        let mut cmd = Command::new(SLIRP);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--netns-type=path",
            "--ready-fd=4",
            "--exit-fd=5",
            "/proc/self/fd/3",
            "tap0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_w);
        let place_fds = move || {
            for (target, fd) in (3..).zip(inherited) {
                // dup2 onto fds 3..5; the copies are not close-on-exec.
                // SAFETY: dup2 onto a fixed number in the child: `fd` is one of `sources`,
                // open until the spawn returns, and whatever `target` was is replaced.
                if unsafe { libc::dup2(fd, target) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the closure runs in the forked child before exec and only calls dup2, which
        // is async-signal-safe; it allocates nothing and takes no lock.
        unsafe { cmd.pre_exec(place_fds) };
        let slirp = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SandboxError::Spec(
                    "the private network of a step needs slirp4netns, which is not on PATH: \
                     apt-get install slirp4netns (or pass --network host or --network none)"
                        .into(),
                )
            } else {
                SandboxError::sys("spawn", SLIRP, e)
            }
        })?;
        drop((ready_w, exit_r, sources));
        let mut network = PrivateNetwork {
            namespace,
            slirp,
            exit_w: Some(exit_w),
        };
        let mut byte = [0u8; 1];
        let ready = File::from(ready_r).read(&mut byte).unwrap_or(0) == 1;
        if !ready {
            let mut message = String::new();
            let _ = log.rewind();
            let _ = log.read_to_string(&mut message);
            network.stop();
            // Distributions make /dev/net/tun 0666 (systemd's udev rules); a rootless kiln's
            // slirp4netns opens it as the user.
            let hint = if message.contains("/dev/net/tun") && crate::userns::current().is_some() {
                "; a rootless kiln's slirp4netns opens /dev/net/tun as the user: as root, \
                 `chmod 0666 /dev/net/tun` (its mode on distributions with systemd), or pass \
                 --network none or --network host"
            } else {
                ""
            };
            return Err(SandboxError::Network(format!(
                "slirp4netns did not configure the step's network: {}{hint}",
                message.trim()
            )));
        }
        Ok(network)
    }

    /// Moves the calling thread into the namespace.
    pub(crate) fn enter(&self) -> Result<(), SandboxError> {
        rustix::thread::move_into_link_name_space(
            self.namespace.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| {
            SandboxError::sys(
                "setns",
                "the step's network namespace",
                std::io::Error::from(e),
            )
        })
    }

    fn stop(&mut self) {
        self.exit_w.take();
        let _ = self.slirp.wait();
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new network namespace with `lo` up, made on a thread of its own so that no other thread
/// changes namespace; the returned handle keeps it alive.
fn new_namespace() -> Result<File, SandboxError> {
    std::thread::Builder::new()
        .name("kiln-netns".into())
        .spawn(|| {
            crate::namespaces::unshare(libc::CLONE_NEWNET)?;
            crate::namespaces::loopback_up()?;
            File::open("/proc/thread-self/ns/net")
                .map_err(|e| SandboxError::sys("open", "/proc/thread-self/ns/net", e))
        })
        .map_err(|e| SandboxError::sys("spawn thread", "kiln-netns", e))?
        .join()
        .map_err(|_| SandboxError::Panicked)?
}
