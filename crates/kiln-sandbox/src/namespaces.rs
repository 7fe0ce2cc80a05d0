//! Namespaces: which ones a run gets, entering them from the setup thread, bringing up the
//! loopback interface of a new network namespace, and leaving the mount namespace again.
//!
//! The setup thread calls `unshare(2)`: mount, pid (for its children), ipc, uts, and net for
//! [`Network::None`]. `unshare(CLONE_NEWNS)` implies `CLONE_FS`, so the
//! thread's root, cwd and umask become its own and the caller's other threads never see its
//! mounts or its `pivot_root`. At the end the thread `setns(2)`s back into the host mount
//! namespace; being the last member, the container's mount namespace is torn down, with all its
//! mounts, before that call returns.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use crate::{Network, SandboxError};

/// The `unshare(2)` flags of a run.
pub(crate) fn unshare_flags(network: Network) -> libc::c_int {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // A private network's namespace exists before the run and is entered with setns.
    if network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// A handle on the mount namespace the thread started in.
pub(crate) struct HostMountNs(File);

impl HostMountNs {
    /// Open `/proc/thread-self/ns/mnt`.
    pub(crate) fn open() -> Result<Self, SandboxError> {
        File::open("/proc/thread-self/ns/mnt")
            .map(HostMountNs)
            .map_err(|e| SandboxError::sys("open", "/proc/thread-self/ns/mnt", e))
    }

    /// `setns(2)` back into it (this thread has an fs_struct of its own: CLONE_FS unshared).
    pub(crate) fn enter(&self) -> Result<(), SandboxError> {
        rustix::thread::move_into_link_name_space(
            self.0.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Mount),
        )
        .map_err(|e| SandboxError::sys("setns", "host mount namespace", e))
    }
}

/// `unshare(2)` the calling thread into new namespaces.
pub(crate) fn unshare(flags: libc::c_int) -> Result<(), SandboxError> {
    // SAFETY: unshare has no memory-safety preconditions; it affects the calling thread only
    // (none of CLONE_THREAD, CLONE_VM, CLONE_SIGHAND is requested).
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(SandboxError::sys(
            "unshare",
            format!("namespaces {flags:#x}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Moves the calling thread, and every thread it starts later, into a mount namespace of its
/// own whose mounts never propagate to the host's. Every overlay kiln mounts outside a
/// sandbox (COPY's writable view, a `--mount=from=` source) then lives and dies with the
/// process: a `kill -9` leaves nothing mounted on the host, as buildah's own mount namespace
/// does. Call it from `main` before any thread starts: `unshare` moves only the caller.
pub fn enter_private_mount_namespace() -> Result<(), SandboxError> {
    unshare(libc::CLONE_NEWNS)?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| SandboxError::sys("mount make-rprivate", "/", std::io::Error::from(e)))
}

/// Set the hostname of the (new) UTS namespace.
pub(crate) fn set_hostname(name: &str) -> Result<(), SandboxError> {
    rustix::system::sethostname(name.as_bytes())
        .map_err(|e| SandboxError::sys("sethostname", name, e))
}

/// Bring `lo` up in the (new) network namespace.
pub(crate) fn loopback_up() -> Result<(), SandboxError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let err = |call| SandboxError::sys(call, "lo", std::io::Error::last_os_error());
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| SandboxError::sys("socket for", "lo", e))?;
    // rustix has no wrapper for the interface flags: these are the ioctls `ip link set up`
    // makes.
    // SAFETY: ifreq is plain data (a name and a union of integers), for which all-zero is a
    // value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name of `req` and writes its flags, within
    // the ifreq owned here.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(err("ioctl SIOCGIFFLAGS on"));
    }
    // SAFETY: reads the union field SIOCGIFFLAGS has just written.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags of `req`, owned here; it writes nothing.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(err("ioctl SIOCSIFFLAGS on"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_keeps_the_net_namespace() {
        let f = unshare_flags(Network::Host);
        assert_eq!(f & libc::CLONE_NEWNET, 0);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
        ] {
            assert_ne!(f & ns, 0);
        }
        assert_ne!(unshare_flags(Network::None) & libc::CLONE_NEWNET, 0);
        assert_eq!(unshare_flags(Network::Private) & libc::CLONE_NEWNET, 0);
    }
}
