//! `kiln init python`: a Dockerfile and a `.dockerignore` for a custom Python base image that
//! follows every lesson of the seed tutorial.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::Output;

/// `kiln init`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln init python\n  kiln init python --variant dev --packages \"libpq-dev\" --port 8000 ./base"
)]
pub struct InitArgs {
    #[command(subcommand)]
    pub template: Template,
}

/// What to write.
#[derive(Debug, Subcommand)]
pub enum Template {
    /// A custom Python base image (the seed tutorial's, done right).
    #[command(
        after_help = "Examples:\n  kiln init python\n  kiln init python --variant dev --packages 'libpq-dev git' base/\n  kiln init python --base ubuntu:24.04 --python 3.12 --port 8000 --cmd python3\n\nThen: kiln build -t my-python-base . && kiln lint"
    )]
    Python(PythonArgs),
}

/// `kiln init python`
#[derive(Debug, Args)]
pub struct PythonArgs {
    /// Where to write Dockerfile and .dockerignore.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The base image: debian:<release> or ubuntu:<release>.
    #[arg(long, default_value = "debian:bookworm")]
    pub base: String,
    /// `3` for the distro's python3, or a version the distro packages (3.11 → python3.11).
    #[arg(long, default_value = "3")]
    pub python: String,
    /// More apt packages (space- or comma-separated; repeatable).
    #[arg(long, value_name = "PKGS")]
    pub packages: Vec<String>,
    /// The working directory for the application.
    #[arg(long, default_value = "/app")]
    pub workdir: String,
    /// The port the application listens on (`EXPOSE`).
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// The default command (exec form is written).
    #[arg(long, default_value = "bash")]
    pub cmd: String,
    /// slim: only the Python runtime; dev: also compilers and headers for wheels built
    /// from source.
    #[arg(long, value_enum, default_value_t = Variant::Slim)]
    pub variant: Variant,
    /// The maintainer label.
    #[arg(long, default_value = "Your Name <you@example.com>")]
    pub maintainer: String,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Which packages the image keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// The interpreter and venv only.
    Slim,
    /// Plus build-essential and the Python headers.
    Dev,
}

/// Runs `kiln init`.
pub fn init(out: &mut Output, args: InitArgs) -> anyhow::Result<ExitCode> {
    match args.template {
        Template::Python(args) => python(out, args),
    }
}

fn python(out: &mut Output, args: PythonArgs) -> anyhow::Result<ExitCode> {
    let dockerfile = python_dockerfile(&args)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let files = [
        (args.dir.join("Dockerfile"), dockerfile),
        (args.dir.join(".dockerignore"), DOCKERIGNORE.to_owned()),
    ];
    if !args.force
        && let Some((existing, _)) = files.iter().find(|(p, _)| p.exists())
    {
        anyhow::bail!(
            "{} exists; pass --force to overwrite it",
            existing.display()
        );
    }
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        out.line(&format!("wrote {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

const DOCKERIGNORE: &str = "\
# Keep the build context small and the cache stable: nothing here reaches the image.
.git
.gitignore
.dockerignore
Dockerfile
**/__pycache__
**/*.py[cod]
**/.pytest_cache
**/.mypy_cache
**/.ruff_cache
*.egg-info
.venv
venv
build
dist
.env
*.log
";

fn words(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|p| p.split([' ', ',', '\t', '\n']))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn valid_package(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | ':' | '=' | '~'))
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The Dockerfile text.
pub fn python_dockerfile(args: &PythonArgs) -> anyhow::Result<String> {
    let (distro, release) = args
        .base
        .split_once(':')
        .with_context(|| format!("--base {}: give a tag, e.g. debian:bookworm", args.base))?;
    let distro_name = distro.rsplit('/').next().unwrap_or(distro);
    anyhow::ensure!(
        matches!(distro_name, "debian" | "ubuntu"),
        "--base {}: only Debian and Ubuntu bases are supported (the template uses apt)",
        args.base
    );
    anyhow::ensure!(
        !release.is_empty() && release != "latest",
        "--base {}: pin a release (debian:bookworm, ubuntu:24.04); latest moves",
        args.base
    );
    let python = match args.python.trim_start_matches("python") {
        "" | "3" => "python3".to_owned(),
        v if v.starts_with("3.") && v[2..].chars().all(|c| c.is_ascii_digit()) && v.len() > 2 => {
            format!("python{v}")
        }
        other => {
            anyhow::bail!("--python {other}: give 3 (the distro's python3) or a version like 3.11")
        }
    };
    anyhow::ensure!(
        args.workdir.starts_with('/'),
        "--workdir {}: must be an absolute path",
        args.workdir
    );
    let extra = words(&args.packages);
    if let Some(bad) = extra.iter().find(|p| !valid_package(p)) {
        anyhow::bail!("--packages: {bad:?} is not a package name");
    }
    let mut packages = vec![python.clone(), format!("{python}-venv")];
    if args.variant == Variant::Dev {
        packages.push(format!("{python}-dev"));
        packages.push("build-essential".into());
    }
    packages.extend(extra);
    let cmd: Vec<String> = args.cmd.split_whitespace().map(json_string).collect();
    anyhow::ensure!(!cmd.is_empty(), "--cmd: give a command, e.g. bash");

    let mut d = String::new();
    let variant = match args.variant {
        Variant::Slim => "slim: the Python runtime only",
        Variant::Dev => "dev: with compilers and headers for wheels built from source",
    };
    writeln!(
        d,
        "# A custom Python base image ({variant}), written by `kiln init python`."
    )?;
    writeln!(
        d,
        "# Every application image starts FROM it. Build: kiln build -t my-python-base ."
    )?;
    writeln!(d, "FROM {}", args.base)?;
    writeln!(d)?;
    writeln!(d, "# LABEL, not the deprecated MAINTAINER.")?;
    writeln!(d, "LABEL maintainer={}", json_string(&args.maintainer))?;
    writeln!(d)?;
    writeln!(
        d,
        "# No pip cache, no .pyc files, unbuffered logs; the venv comes first on PATH."
    )?;
    writeln!(d, "ENV PIP_NO_CACHE_DIR=1 \\")?;
    writeln!(d, "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\")?;
    writeln!(d, "    PYTHONDONTWRITEBYTECODE=1 \\")?;
    writeln!(d, "    PYTHONUNBUFFERED=1 \\")?;
    writeln!(d, "    VIRTUAL_ENV=/opt/venv \\")?;
    writeln!(
        d,
        "    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )?;
    writeln!(d)?;
    writeln!(
        d,
        "# The stable, slow step first, so that it stays cached. One RUN installs and cleans up:"
    )?;
    writeln!(
        d,
        "# files removed in a later RUN would still sit in this layer. No recommended packages."
    )?;
    writeln!(d, "RUN apt-get update \\")?;
    writeln!(
        d,
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\"
    )?;
    for p in &packages {
        writeln!(d, "        {p} \\")?;
    }
    writeln!(d, " && apt-get clean \\")?;
    writeln!(d, " && rm -rf /var/lib/apt/lists/* \\")?;
    if args.variant == Variant::Slim {
        writeln!(d, " && {python} -m venv /opt/venv \\")?;
        // As the official python images do: no setuptools in the environment (Python 3.12's
        // venv leaves it out; pip fetches it when an sdist needs it), and no byte code or
        // test suite: a quarter of the Python files, and nothing at run time needs them.
        writeln!(d, " && /opt/venv/bin/pip uninstall -q -y setuptools \\")?;
        writeln!(
            d,
            " && find /usr/lib/python3* /opt/venv -depth \\( -name __pycache__ -o -path '/usr/lib/python3*/test' \\) -exec rm -rf {{}} +"
        )?;
    } else {
        writeln!(d, " && {python} -m venv /opt/venv")?;
    }
    writeln!(d)?;
    writeln!(
        d,
        "# WORKDIR creates the directory and lasts for later steps (no mkdir, no cd)."
    )?;
    writeln!(d, "WORKDIR {}", args.workdir)?;
    writeln!(d, "EXPOSE {}", args.port)?;
    writeln!(
        d,
        "# Exec form: the command is PID 1 and gets the stop signal."
    )?;
    writeln!(d, "CMD [{}]", cmd.join(", "))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(variant: Variant) -> PythonArgs {
        PythonArgs {
            dir: ".".into(),
            base: "debian:bookworm".into(),
            python: "3".into(),
            packages: vec!["git, curl".into()],
            workdir: "/app".into(),
            port: 80,
            cmd: "bash".into(),
            variant,
            maintainer: "A <a@example.com>".into(),
            force: false,
        }
    }

    #[test]
    fn both_variants_lint_clean() {
        for variant in [Variant::Slim, Variant::Dev] {
            let text = python_dockerfile(&args(variant)).expect("template");
            let findings = kiln_lint::lint(&text).expect("lint");
            assert!(findings.is_empty(), "{variant:?}: {findings:?}\n{text}");
        }
    }

    #[test]
    fn slim_has_no_compilers_and_dev_has_them() {
        let slim = python_dockerfile(&args(Variant::Slim)).expect("template");
        assert!(!slim.contains("build-essential") && !slim.contains("-dev "));
        assert!(slim.contains("-name __pycache__"), "{slim}");
        let dev = python_dockerfile(&args(Variant::Dev)).expect("template");
        assert!(dev.contains("build-essential") && dev.contains("python3-dev"));
        assert!(dev.contains("        git \\\n        curl \\\n"));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut a = args(Variant::Slim);
        let refused = |a: &PythonArgs| python_dockerfile(a).unwrap_err().to_string();
        a.base = "alpine:3.20".into();
        assert_eq!(
            refused(&a),
            "--base alpine:3.20: only Debian and Ubuntu bases are supported (the template uses apt)"
        );
        a.base = "debian:latest".into();
        assert_eq!(
            refused(&a),
            "--base debian:latest: pin a release (debian:bookworm, ubuntu:24.04); latest moves"
        );
        let mut a = args(Variant::Slim);
        a.packages = vec!["x; rm -rf /".into()];
        assert_eq!(refused(&a), "--packages: \"x;\" is not a package name");
    }
}
