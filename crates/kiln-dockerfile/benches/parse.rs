//! Parser throughput: the seed's Dockerfile and generated 10k/20k/40k-instruction files.
//!
//! `cargo bench -p kiln-dockerfile --bench parse` (or `bench/parse.sh`). Prints MB/s for
//! `parse` alone and for the full front end (parse + typed instructions + stages + expansion),
//! and the cost per instruction at 10k, 20k and 40k instructions: linear growth shows as a
//! flat ns/instruction column and time ratios of about 2 and 4. Times are this thread's CPU
//! time, so other work on the machine does not distort them. For reference, BuildKit's own
//! parser (Go) measured on the same generated files runs at about 10 MB/s (`--write-generated
//! DIR` saves them).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_dockerfile::shell::EnvList;
use kiln_dockerfile::{Platform, PlatformArgs, Variables, parse, parse_stages};

/// Where the seed tutorial is: `$KILN_SEEDS_DIR`, else `shared/seeds` beside the clone.
fn seed_path() -> PathBuf {
    std::env::var_os("KILN_SEEDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .nth(3)
                .expect("crates/<name> sits two levels inside the clone")
                .join("shared/seeds")
        })
        .join("python-base-image-tutorial.md")
}

/// The "完整 Dockerfile" block of the seed tutorial; `None` if the tutorial is not there (a
/// clone without `shared/`).
fn seed_dockerfile() -> Option<String> {
    let path = seed_path();
    let text = std::fs::read_to_string(&path).ok()?;
    let start = text
        .find("完整 Dockerfile")
        .unwrap_or_else(|| panic!("no 完整 Dockerfile section in {}", path.display()));
    let rest = &text[start..];
    let open = rest.find("```").expect("code block start");
    let body_start = open + rest[open..].find('\n').expect("code block line") + 1;
    let body_len = rest[body_start..].find("```").expect("code block end");
    Some(rest[body_start..body_start + body_len].to_string())
}

/// A Dockerfile of `n` instructions mixing the shapes real files have.
fn generated(n: usize) -> String {
    let mut s = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE=ubuntu:24.04\nFROM ${BASE} AS build\n",
    );
    let mut count = 2;
    let mut i = 0;
    while count < n {
        match i % 10 {
            0 => s.push_str(&format!(
                "RUN apt-get update && \\\n\tapt-get install -y pkg{i} \\\n    # comment in a continuation\n    && rm -rf /var/lib/apt/lists/*\n"
            )),
            1 => s.push_str(&format!("ENV VAR{i}=\"value {i}\" OTHER{i}=${{VAR{i}:-x}}\n")),
            2 => s.push_str(&format!("COPY --chown=app:app --chmod=644 src/{i} /app/{i}/\n")),
            3 => s.push_str(&format!("LABEL org.example.k{i}=\"v{i}\"\n")),
            4 => s.push_str(&format!("RUN --mount=type=cache,target=/root/.cache/{i} [\"pip\", \"install\", \"pkg{i}\"]\n")),
            5 => s.push_str(&format!("ARG A{i}=default{i}\n")),
            6 => s.push_str(&format!("WORKDIR /app/$A{}\n", i - 1)),
            7 => s.push_str(&format!("COPY <<EOF /etc/conf{i}\nkey={i}\nhome=$HOME\nEOF\n")),
            8 => s.push_str("EXPOSE 80/tcp 443\n"),
            _ => s.push_str(&format!("HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost:{i}/\n")),
        }
        count += 1;
        i += 1;
    }
    s
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux). On a shared
/// machine wall-clock time mostly measures waiting for a CPU; CPU time does not.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// A clock: thread CPU time where available, wall-clock time otherwise.
fn now() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    thread_cpu_time().unwrap_or_else(|| START.get_or_init(Instant::now).elapsed())
}

/// Runs `f` for at least `min` of the clock (after a warm-up call); returns the mean time per
/// call. The clock is read once per chunk of calls lasting about a millisecond, so that
/// reading it does not weigh on tiny inputs.
fn time_per_call(min: Duration, mut f: impl FnMut()) -> Duration {
    let warm = Instant::now();
    f();
    let one = warm.elapsed().max(Duration::from_nanos(100));
    let chunk = (Duration::from_millis(1).as_nanos() / one.as_nanos()).clamp(1, 100_000) as u32;
    let start = now();
    let mut calls = 0u32;
    while now() - start < min {
        for _ in 0..chunk {
            f();
        }
        calls += chunk;
    }
    (now() - start) / calls.max(1)
}

fn front_end(text: &str) {
    let parsed = parse(text).expect("benchmark input parses");
    let (meta, stages) = parse_stages(&parsed).expect("benchmark input is valid");
    let mut global = Variables::new(
        &PlatformArgs::same(Platform::new("linux", "amd64", "")),
        Vec::<(String, String)>::new(),
    );
    global
        .declare_meta_args(&meta, parsed.escape)
        .expect("meta args");
    let base_env = EnvList::from_pairs([("PATH", "/usr/bin"), ("HOME", "/root")]);
    for stage in &stages {
        let _ = black_box(stage.from.expand(global.global(), parsed.escape));
        let mut vars = global.for_stage();
        vars.set_base_env(base_env.to_env_strings());
        for inst in &stage.instructions {
            let _ = black_box(vars.expand_and_apply(inst, parsed.escape));
        }
    }
}

fn mb_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

#[allow(clippy::print_stdout)]
fn time_seed(seed: &str, min: Duration) {
    assert!(parse(seed).is_ok(), "the seed Dockerfile must parse");
    let t = (0..5)
        .map(|_| {
            time_per_call(min / 5, || {
                black_box(parse(black_box(seed)).ok());
            })
        })
        .min()
        .unwrap_or_default();
    println!(
        "seed Dockerfile ({} bytes, {} instructions): parse {:.1} µs = {:.1} MB/s",
        seed.len(),
        parse(seed).map(|p| p.nodes.len()).unwrap_or(0),
        t.as_secs_f64() * 1e6,
        mb_per_s(seed.len(), t)
    );
}

#[allow(clippy::print_stdout)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `--parse-only N REPS`: parse a generated N-instruction file REPS times and print nothing,
    // for instruction counting under valgrind (bench/parse.sh --instructions).
    if let Some(i) = args.iter().position(|a| a == "--parse-only") {
        let n: usize = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000);
        let reps: usize = args.get(i + 2).and_then(|s| s.parse().ok()).unwrap_or(1);
        let text = generated(n);
        for _ in 0..reps {
            black_box(parse(black_box(&text)).ok());
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--write-generated DIR` saves the generated files, to time other parsers on them.
    if let Some(dir) = args
        .iter()
        .position(|a| a == "--write-generated")
        .and_then(|i| args.get(i + 1))
    {
        for n in [10_000, 20_000, 40_000] {
            let path = Path::new(dir).join(format!("Dockerfile.{n}"));
            std::fs::write(&path, generated(n))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        if let Some(seed) = seed_dockerfile() {
            std::fs::write(Path::new(dir).join("Dockerfile.seed"), seed).expect("write seed");
        }
    }
    // Time spent per size and measurement.
    let min = if quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };

    println!(
        "clock: {}",
        if thread_cpu_time().is_some() {
            "thread CPU time (/proc/thread-self/schedstat)"
        } else {
            "wall clock"
        }
    );
    match seed_dockerfile() {
        Some(seed) => time_seed(&seed, min),
        None => println!(
            "seed Dockerfile: {} not found, its row is left out",
            seed_path().display()
        ),
    }

    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>8} {:>14} {:>10}",
        "instrs", "bytes", "parse", "MB/s", "ns/inst", "front end", "MB/s"
    );
    // KILN_BENCH_SIZES=2500,5000,... overrides the sizes (the first is the reference).
    let sizes: Vec<usize> = std::env::var("KILN_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![10_000, 20_000, 40_000]);
    // Sizes are timed round-robin, batch by batch, and each keeps its fastest batch: load from
    // other processes then hits every size alike instead of skewing the ratios.
    let texts: Vec<String> = sizes.iter().map(|&n| generated(n)).collect();
    let rounds = 5;
    let batch = min / rounds;
    let mut best_parse = vec![Duration::MAX; sizes.len()];
    let mut best_front = vec![Duration::MAX; sizes.len()];
    for _ in 0..rounds {
        for (i, text) in texts.iter().enumerate() {
            let tp = time_per_call(batch, || {
                black_box(parse(black_box(text)).ok());
            });
            let tf = time_per_call(batch, || front_end(black_box(text)));
            best_parse[i] = best_parse[i].min(tp);
            best_front[i] = best_front[i].min(tf);
        }
    }
    let mut ratios = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let (text, tp, tf) = (&texts[i], best_parse[i], best_front[i]);
        println!(
            "{:>8} {:>10} {:>10.2}ms {:>10.1} {:>8.0} {:>12.2}ms {:>10.1}",
            n,
            text.len(),
            tp.as_secs_f64() * 1e3,
            mb_per_s(text.len(), tp),
            tp.as_secs_f64() * 1e9 / n as f64,
            tf.as_secs_f64() * 1e3,
            mb_per_s(text.len(), tf)
        );
        if i > 0 {
            ratios.push((
                n as f64 / sizes[0] as f64,
                tp.as_secs_f64() / best_parse[0].as_secs_f64(),
            ));
        }
    }
    for (size, time) in &ratios {
        println!("{size:.0}x instructions -> {time:.2}x parse time");
    }
    let linear = ratios.iter().all(|(size, time)| *time < *size * 1.5);
    println!(
        "linear: {}",
        if linear {
            "yes"
        } else {
            "NO (superlinear growth)"
        }
    );
}
