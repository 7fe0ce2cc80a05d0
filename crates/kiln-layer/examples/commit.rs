//! Commits a directory into a layer tar, as `kiln` does after a `RUN` step,
//! and prints the diff_id, the size and the time it took.
//!
//! ```text
//! cargo run --release -p kiln-layer --example commit -- DIR [--plain] [--out FILE]
//! ```
//!
//! Without `--out` the tar goes to a sink: only walking, reading and hashing
//! are measured, as `tar -cf - DIR | sha256sum` does. `SOURCE_DATE_EPOCH` is honoured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kiln_layer::{DiffOptions, write_layer_from_dir, write_layer_from_upper};

fn main() {
    let mut dir = None;
    let mut plain = false;
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--plain" => plain = true,
            "--out" => out = args.next().map(PathBuf::from),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: commit DIR [--plain] [--out FILE]");
        std::process::exit(2);
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok());
    let opts = DiffOptions {
        source_date_epoch: epoch,
    };
    let sink: Box<dyn Write + Send> = match &out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: creating {}: {e}", p.display());
                std::process::exit(1);
            }
        },
        None => Box::new(std::io::sink()),
    };
    let start = Instant::now();
    let r = if plain {
        write_layer_from_dir(&dir, sink, opts)
    } else {
        write_layer_from_upper(&dir, sink, opts)
    };
    match r {
        Ok(s) => println!(
            "{} {} {:.3}s",
            s.diff_id,
            s.size,
            start.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
