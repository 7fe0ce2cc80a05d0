//! Manual driver for the sandbox, for trying it on a real rootfs:
//!
//! ```text
//! cargo run -p kiln-sandbox --example sandbox-run -- \
//!     --lower /tmp/debian --upper /tmp/u --work /tmp/w [--net none] [--tty] [--user U] [--cwd D] \
//!     -- apt-get update
//! ```
//!
//! `--dir ROOT` runs in a plain directory instead of an overlay. Ctrl-C interrupts the run.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_sandbox::{Interrupt, Network, OutputStream, Rootfs, RunSpec, Stdio, run};

static INTERRUPT: OnceLock<Interrupt> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(i) = INTERRUPT.get() {
        i.interrupt();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut lowers, mut upper, mut work, mut dir) = (Vec::new(), None, None, None);
    let mut spec_opts: Vec<(String, String)> = Vec::new();
    let mut tty = false;
    let mut cmd = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lower" => lowers.extend(args.next().map(PathBuf::from)),
            "--upper" => upper = args.next().map(PathBuf::from),
            "--work" => work = args.next().map(PathBuf::from),
            "--dir" => dir = args.next().map(PathBuf::from),
            "--tty" => tty = true,
            "--net" | "--user" | "--cwd" => {
                spec_opts.push((a.clone(), args.next().unwrap_or_default()))
            }
            "--" => {
                cmd.extend(args.by_ref());
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let rootfs = match (dir, upper, work) {
        (Some(d), _, _) => Rootfs::Dir(d),
        (None, Some(upper), Some(work)) => Rootfs::Overlay {
            lowers,
            upper,
            work,
        },
        _ => {
            eprintln!("need --dir ROOT or --lower L... --upper U --work W");
            std::process::exit(2);
        }
    };
    let mut spec = RunSpec::new(rootfs, cmd);
    spec.env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
    if let Ok(term) = std::env::var("TERM") {
        spec.env.push(format!("TERM={term}"));
    }
    for (k, v) in spec_opts {
        match k.as_str() {
            "--net" if v == "none" => spec.network = Network::None,
            "--user" => spec.user = v,
            "--cwd" => spec.cwd = v,
            _ => {}
        }
    }
    if tty {
        spec.stdio = Stdio::Tty;
    }
    let _ = INTERRUPT.set(spec.interrupt.clone());
    // SAFETY: installs a handler that only calls the async-signal-safe Interrupt::interrupt.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let result = run(&spec, &mut |stream, chunk| {
        let _ = match stream {
            OutputStream::Stdout => std::io::stdout()
                .write_all(chunk)
                .and_then(|_| std::io::stdout().flush()),
            OutputStream::Stderr => std::io::stderr().write_all(chunk),
        };
    });
    match result {
        Ok(outcome) => {
            if outcome.interrupted {
                eprintln!("interrupted ({:?})", outcome.status);
            }
            std::process::exit(outcome.status.code());
        }
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!("\n  caused by: {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            std::process::exit(125);
        }
    }
}
