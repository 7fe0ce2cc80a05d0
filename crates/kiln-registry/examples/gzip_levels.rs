//! Times `kiln_layer::gzip_parallel` at a few levels on a file: which level a push should use.
#![allow(clippy::print_stdout)]
fn main() {
    let path = std::env::args().nth(1).expect("usage: gzip_levels FILE");
    for level in [1, 2, 3, 4, 6] {
        let file = std::fs::File::open(&path).expect("open");
        let started = std::time::Instant::now();
        let c = kiln_layer::gzip_parallel(
            std::io::BufReader::with_capacity(1 << 20, file),
            std::io::sink(),
            level,
        )
        .expect("gzip");
        println!(
            "level {level}: {:.2}s, {} bytes",
            started.elapsed().as_secs_f64(),
            c.size
        );
    }
}
