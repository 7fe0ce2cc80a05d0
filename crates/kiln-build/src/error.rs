//! The errors of building, loading and saving.

use std::path::PathBuf;

/// What went wrong, with the path or step it went wrong on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] kiln_image::Error),
    /// A file-system call failed.
    #[error(transparent)]
    Io(#[from] kiln_image::IoError),
    /// Reading or writing an archive stream failed.
    #[error("{op}")]
    Archive {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Applying or writing a layer failed.
    #[error(transparent)]
    Layer(#[from] kiln_layer::Error),
    /// Input that kiln cannot use, with what to do instead.
    #[error("{0}")]
    BadInput(String),
    /// The Dockerfile does not parse or expand; the text is the rendered diagnostic.
    #[error("{0}")]
    Dockerfile(String),
    /// A `FROM` names an image the store does not have.
    #[error("FROM {name}: the image is not in the local store (Dockerfile line {line})")]
    BaseNotFound {
        /// The image.
        name: String,
        /// The FROM line.
        line: usize,
    },
    /// A `RUN` exited non-zero; the first line ends as BuildKit's does (`process "…" did not
    /// complete successfully`), which scripts and users grep for.
    #[error("RUN at Dockerfile line {line} failed with exit code {code}: process {:?} did not complete successfully\n  step: {instruction}\n  command: {command:?}\n  last output:\n{}", command.join(" "), tail.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))]
    RunFailed {
        /// The RUN line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// The argv run.
        command: Vec<String>,
        /// Exit code (128 + signal for a signal).
        code: i32,
        /// The last lines of output.
        tail: Vec<String>,
    },
    /// The sandbox could not start the process.
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    /// A `RUN` whose process the sandbox could not start (no shell in the image, ...).
    /// Its message has the sandbox's (not a source too: it would be printed twice).
    #[error("RUN at Dockerfile line {line} could not start: {cause}\n  step: {instruction}")]
    RunStart {
        /// The RUN line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// Why.
        cause: kiln_sandbox::SandboxError,
    },
    /// The build was interrupted (Ctrl-C or SIGTERM); nothing of the step was kept.
    #[error("interrupted; the store keeps every step completed before")]
    Interrupted,
    /// Talking to a registry failed.
    #[error("{what}")]
    Registry {
        /// What was being done.
        what: String,
        /// The registry error.
        #[source]
        source: kiln_registry::Error,
    },
    /// An archive that is not what it claims to be.
    #[error("not a valid image archive: {0}")]
    BadArchive(String),
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let io = kiln_image::IoError::at(op, path);
        move |source| Error::Io(io(source))
    }

    pub(crate) fn archive(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Archive { op, source }
    }
}
