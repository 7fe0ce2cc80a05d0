//! Applies a layer blob (plain, gzip or zstd) into a directory and prints
//! what it did and the time it took.
//!
//! ```text
//! cargo run --release -p kiln-layer --example apply -- LAYER DIR [--overlay]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use kiln_layer::{ApplyMode, ApplyOptions, apply_layer, decompress_auto};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(layer), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: apply LAYER DIR [--overlay]");
        std::process::exit(2);
    };
    let mode = if args.iter().any(|a| a == "--overlay") {
        ApplyMode::Overlay
    } else {
        ApplyMode::Merged
    };
    let file = match std::fs::File::open(layer) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: opening {layer}: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let opts = ApplyOptions {
        preserve_owner: rustix::process::geteuid().is_root(),
        ..Default::default()
    };
    let r =
        decompress_auto(file).and_then(|r| apply_layer(r, std::path::Path::new(dir), mode, opts));
    match r {
        Ok(s) => println!(
            "{} entries, {} files, {} bytes, {} warnings, {:.3}s",
            s.entries,
            s.files,
            s.bytes,
            s.warnings.len(),
            start.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
