//! Terminals: the container's pseudo-terminal, the host terminal in raw mode, window size
//! changes, and the relay between them.
//!
//! The pty pair comes from the container's own `devpts` instance (opened by the setup thread
//! after the pivot), so `tty` inside prints a path that exists there. The master goes to the
//! caller's thread, which relays its stdin to the master and the master's output to the
//! `on_output` callback. While the relay runs, a `SIGWINCH` handler (installed only then, and
//! restored after) wakes the relay through a pipe, and the host window size is copied to the
//! pty; the kernel then signals the container's foreground process group.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::{OutputStream, SandboxError};

/// Open a pty pair in the current root's `/dev/ptmx`; returns (master, slave).
pub(crate) fn open_pty() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let err = |call, path: &str| SandboxError::sys(call, path, io::Error::last_os_error());
    // SAFETY: open with a static C string; the fd is owned right away.
    let m = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(err("open", "/dev/ptmx"));
    }
    // SAFETY: m is a fresh fd nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    if unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(err("ioctl TIOCSPTLCK on", "/dev/ptmx"));
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
    let s = unsafe {
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(err("ioctl TIOCGPTPEER on", "/dev/ptmx"));
    }
    // SAFETY: s is a fresh fd nothing else owns.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }))
}

/// The host window size (from stdin, else stdout), if either is a terminal.
pub(crate) fn host_winsize() -> Option<libc::winsize> {
    for fd in [0, 1] {
        // SAFETY: winsize is plain data.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(ws);
        }
    }
    None
}

/// Set the pty's window size.
pub(crate) fn set_winsize(master: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads a winsize.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, ws) };
}

/// Puts the host terminal in raw mode and restores it on drop.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: RawFd) -> Option<Self> {
        // SAFETY: isatty/tcgetattr/tcsetattr on an fd number with valid termios pointers.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) < 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(fd, libc::TCSANOW, &raw);
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

static WINCH_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; one byte from a static buffer.
        unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
    }
}

/// A `SIGWINCH` handler writing to a pipe, restored on drop.
struct Winch {
    read: OwnedFd,
    _write: OwnedFd,
    old: libc::sigaction,
}

impl Winch {
    fn install() -> Option<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return None;
        }
        // SAFETY: fresh fds owned right away.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WINCH_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        // SAFETY: sigaction with valid pointers; the handler only does an async-signal-safe write.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_winch as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGWINCH, &sa, &mut old);
            Some(Winch {
                read,
                _write: write,
                old,
            })
        }
    }
}

impl Drop for Winch {
    fn drop(&mut self) {
        // SAFETY: restores the previous disposition.
        unsafe { libc::sigaction(libc::SIGWINCH, &self.old, std::ptr::null_mut()) };
        WINCH_FD.store(-1, Ordering::SeqCst);
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Relay until the container side of the pty is closed by every process.
pub(crate) fn relay(master: OwnedFd, on_output: &mut dyn FnMut(OutputStream, &[u8])) {
    let _raw = RawMode::enter(0);
    let winch = Winch::install();
    let m = master.as_raw_fd();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = vec![libc::pollfd {
            fd: m,
            events: libc::POLLIN,
            revents: 0,
        }];
        if stdin_open {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(w) = &winch {
            fds.push(libc::pollfd {
                fd: w.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                on_output(OutputStream::Stdout, &buf[..n as usize]);
            } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // EIO: no process has the slave open any more.
                return;
            }
        }
        let mut i = 1;
        if stdin_open {
            if fds[i].revents != 0 {
                // SAFETY: buf is valid for its length.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    if write_all(m, &buf[..n as usize]).is_err() {
                        stdin_open = false;
                    }
                } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                {
                    stdin_open = false;
                }
            }
            i += 1;
        }
        if let Some(w) = &winch
            && fds[i].revents != 0
        {
            let mut drain = [0u8; 64];
            // SAFETY: drain is valid; the pipe is non-blocking.
            unsafe { libc::read(w.read.as_raw_fd(), drain.as_mut_ptr().cast(), drain.len()) };
            if let Some(ws) = host_winsize() {
                set_winsize(m, &ws);
            }
        }
    }
}
