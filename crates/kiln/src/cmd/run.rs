//! `kiln run`: a container from an image, as `docker run` starts one.

use std::process::ExitCode;

use clap::Args;
use kiln_build::snapshot::{self, StepDirs};
use kiln_image::Store;
use kiln_sandbox::{Network, Rootfs, RunSpec, Stdio};

/// `kiln run`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln run --rm -it my-python-base\n  kiln run --rm my-python-base python3 -c 'import sys; print(sys.version)'\n  kiln run --rm -e A=1 -w /tmp -u nobody --network none busybox sh -c 'id; pwd'"
)]
pub struct RunArgs {
    /// Remove the container's file-system changes when it exits (kiln always does; the flag is
    /// accepted for docker compatibility).
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: name, uid, or uid:gid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Network: default (private, with outbound access), host or none.
    #[arg(long, default_value = "default")]
    pub network: String,
    #[command(flatten)]
    pub limits: super::LimitFlags,
    /// The platform to run from a multi-platform image (default: the host's); a foreign one
    /// runs under qemu-user (binfmt_misc).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The image.
    pub image: String,
    /// The command and its arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs the container and returns its exit code as ours.
pub fn run(store: &Store, args: RunArgs) -> anyhow::Result<ExitCode> {
    let platform = super::platform_flag(args.platform.as_deref())?;
    let image = store.resolve_platform(&args.image, platform.as_ref())?;
    let actual = image.config.platform();
    if !actual.architecture.is_empty() && !actual.matches(&kiln_image::Platform::host()) {
        kiln_sandbox::check_emulation(&actual.architecture).map_err(|why| {
            anyhow::anyhow!("{} is {actual}, which cannot run here: {why}", args.image)
        })?;
    }
    let config = image.config.config.clone().unwrap_or_default();
    let mut argv = config.entrypoint.clone().unwrap_or_default();
    if args.command.is_empty() {
        argv.extend(config.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(args.command.iter().cloned());
    }
    anyhow::ensure!(
        !argv.is_empty(),
        "image {} has no CMD or ENTRYPOINT: give a command after the image name",
        args.image
    );
    let dirs = StepDirs::new(store, "run")?;
    let mut lowers = snapshot::lowers(store, &image)?;
    if lowers.is_empty() {
        lowers.push(dirs.empty());
    }
    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowers,
            upper: dirs.upper(),
            work: dirs.work(),
        },
        argv,
    );
    let mut env =
        kiln_dockerfile::shell::EnvList::from_env_strings(config.env.clone().unwrap_or_default());
    for kv in &args.env {
        match kv.split_once('=') {
            Some((k, v)) => env.set(k, v),
            None => match std::env::var(kv) {
                Ok(v) => env.set(kv.as_str(), v),
                Err(_) => env.remove(kv),
            },
        }
    }
    spec.env = env.to_env_strings();
    spec.cwd = args.workdir.clone().unwrap_or_else(|| {
        if config.working_dir.is_empty() {
            "/".into()
        } else {
            config.working_dir.clone()
        }
    });
    spec.user = args.user.clone().unwrap_or_else(|| config.user.clone());
    spec.network = args
        .network
        .parse::<Network>()
        .map_err(|e| anyhow::anyhow!("--network: {e}"))?;
    spec.limits = args.limits.limits()?;
    spec.stdio = if args.tty { Stdio::Tty } else { Stdio::Inherit };
    let interrupt = spec.interrupt.clone();
    super::on_interrupt(interrupt);
    let mut stdout = std::io::stdout();
    let outcome = kiln_sandbox::run(&spec, &mut |_, chunk| {
        use std::io::Write;
        let _ = stdout.write_all(chunk);
        let _ = stdout.flush();
    })?;
    drop(dirs);
    let code = outcome.status.code();
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
