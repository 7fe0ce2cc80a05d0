//! Opening a path inside a root directory, as a chroot would resolve it.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How often an `EAGAIN` is retried before it is returned.
const MAX_RETRIES: u32 = 64;

/// Opens `rel` under the directory `root` with every component, symlinks included, resolved
/// inside it (`RESOLVE_IN_ROOT`): `..` and absolute symlink targets stop at `root`, and magic
/// links (`/proc/self/fd/N`) are refused (`RESOLVE_NO_MAGICLINKS`). An empty `rel` opens `root`
/// itself. `O_CLOEXEC` is always added to `flags`.
///
/// The kernel answers `EAGAIN` when a rename anywhere on the file system raced with a `..`
/// lookup; the call is then retried, as the kernel asks, a bounded number of times.
pub fn open_in_root(root: impl AsFd, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            root.as_fd(),
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN) if tries < MAX_RETRIES => tries += 1,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), "inside\n").unwrap();
        // Absolute and `..`-climbing targets both land inside the root.
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../etc/passwd", root.path().join("up")).unwrap();
        let dir = rustix::fs::open(root.path(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        for name in [&b"abs"[..], b"up", b"/etc/passwd", b"../etc/passwd"] {
            let fd = open_in_root(&dir, name, OFlags::RDONLY).unwrap();
            let text = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
            assert_eq!(text, "inside\n", "{}", String::from_utf8_lossy(name));
        }
        let fd = open_in_root(&dir, b"", OFlags::RDONLY | OFlags::DIRECTORY).unwrap();
        let stat = rustix::fs::fstat(&fd).unwrap();
        assert_eq!(stat.st_ino, rustix::fs::fstat(&dir).unwrap().st_ino);
    }
}
