//! Terminals: the container's pseudo-terminal, the host terminal in raw mode, window size
//! changes, and the relay between them.
//!
//! The pty pair comes from the container's own `devpts` instance (opened by the setup thread
//! after the pivot), so `tty` inside prints a path that exists there. The master goes to the
//! caller's thread, which relays its stdin to the master and the master's output to the
//! `on_output` callback. While the relay runs, a `SIGWINCH` handler (installed only then, and
//! restored after) wakes the relay through a pipe, and the host window size is copied to the
//! pty; the kernel then signals the container's foreground process group.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios, Winsize};

use crate::{OutputStream, SandboxError};

/// Open a pty pair in the current root's `/dev/ptmx`; returns (master, slave).
pub(crate) fn open_pty() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let err = |call| move |e: Errno| SandboxError::sys(call, "/dev/ptmx", e);
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    // Not `openpt`, which opens the host's /dev/ptmx: this root's devpts is the container's.
    let master = rustix::fs::open(
        c"/dev/ptmx",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(err("open"))?;
    rustix::pty::unlockpt(&master).map_err(err("ioctl TIOCSPTLCK on"))?;
    let slave =
        rustix::pty::ioctl_tiocgptpeer(&master, flags).map_err(err("ioctl TIOCGPTPEER on"))?;
    Ok((master, slave))
}

/// The host window size (from stdin, else stdout), if either is a terminal.
pub(crate) fn host_winsize() -> Option<Winsize> {
    [rustix::stdio::stdin(), rustix::stdio::stdout()]
        .into_iter()
        .find_map(|fd| {
            rustix::termios::tcgetwinsize(fd)
                .ok()
                .filter(|ws| ws.ws_row > 0)
        })
}

/// Set the pty's window size.
pub(crate) fn set_winsize(master: impl AsFd, ws: Winsize) {
    let _ = rustix::termios::tcsetwinsize(master, ws);
}

/// Puts the host terminal in raw mode and restores it on drop.
struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'static>) -> Option<Self> {
        if !rustix::termios::isatty(fd) {
            return None;
        }
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(fd, OptionalActions::Now, &raw);
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.fd, OptionalActions::Drain, &self.saved);
    }
}

static WINCH_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe and reads one byte of a static buffer; the fd
        // is the pipe `Winch` owns, published only while it is open.
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
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .ok()?;
        WINCH_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        // SAFETY: sigaction is plain data (a handler address, flags and a sigset_t), for
        // which all-zero is a value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_winch as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `sa` and `old` are valid sigaction values owned here; the handler only makes
        // an async-signal-safe write.
        unsafe { libc::sigaction(libc::SIGWINCH, &sa, &mut old) };
        Some(Winch {
            read,
            _write: write,
            old,
        })
    }
}

impl Drop for Winch {
    fn drop(&mut self) {
        // SAFETY: `self.old` is the disposition sigaction returned in `install`.
        unsafe { libc::sigaction(libc::SIGWINCH, &self.old, std::ptr::null_mut()) };
        WINCH_FD.store(-1, Ordering::SeqCst);
    }
}

fn write_all(fd: impl AsFd, mut buf: &[u8]) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(&fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Relay until the container side of the pty is closed by every process.
pub(crate) fn relay(master: OwnedFd, on_output: &mut dyn FnMut(OutputStream, &[u8])) {
    let stdin = rustix::stdio::stdin();
    let _raw = RawMode::enter(stdin);
    let winch = Winch::install();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = vec![PollFd::new(&master, PollFlags::IN)];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        if let Some(w) = &winch {
            fds.push(PollFd::new(&w.read, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds.iter().map(|p| !p.revents().is_empty()).collect();
        drop(fds);
        if ready[0] {
            match rustix::io::read(&master, &mut buf) {
                Ok(n) if n > 0 => on_output(OutputStream::Stdout, &buf[..n]),
                Err(Errno::INTR) => {}
                // EIO: no process has the slave open any more.
                _ => return,
            }
        }
        let mut i = 1;
        if stdin_open {
            if ready[i] {
                match rustix::io::read(stdin, &mut buf) {
                    Ok(n) if n > 0 => {
                        if write_all(&master, &buf[..n]).is_err() {
                            stdin_open = false;
                        }
                    }
                    Err(Errno::INTR) => {}
                    _ => stdin_open = false,
                }
            }
            i += 1;
        }
        if let Some(w) = &winch
            && ready[i]
        {
            let mut drain = [0u8; 64];
            // The pipe is non-blocking: this never waits.
            let _ = rustix::io::read(&w.read, &mut drain);
            if let Some(ws) = host_winsize() {
                set_winsize(&master, ws);
            }
        }
    }
}
