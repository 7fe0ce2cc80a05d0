//! ARG and ENV scoping, as BuildKit applies it while walking a Dockerfile.
//!
//! - The *global scope* holds the built-in platform ARGs (`TARGETPLATFORM`, `BUILDARCH`, ...)
//!   and the meta ARGs (those before the first `FROM`). `FROM` lines expand against it.
//! - A stage starts with an empty scope plus the base image's `Env`. A global ARG is visible
//!   in the stage only after the stage declares it again (`ARG NAME` without a default takes
//!   the global value).
//! - `ARG` and `ENV` set variables from their line on; a variable used before its `ARG` line
//!   expands to empty. An `ENV` after an `ARG` of the same name overrides it. (As in
//!   BuildKit, an `ARG` with a value declared *after* an `ENV` of the same name replaces it in
//!   the build environment, but never in the image config.)
//! - `--build-arg` values override ARG defaults, for meta ARGs and stage ARGs alike.
//!
//! ```
//! use kiln_dockerfile::{Platform, PlatformArgs, Variables};
//! use kiln_dockerfile::shell::expand_word;
//!
//! let platforms = PlatformArgs::same(Platform::new("linux", "amd64", ""));
//! let mut global = Variables::new(&platforms, [("VERSION", "3.12")]);
//! global.declare_meta_arg("VERSION", Some("3.11"), '\\').unwrap();
//! global.declare_meta_arg("BASE", Some("python:${VERSION}"), '\\').unwrap();
//! assert_eq!(expand_word("$BASE", global.global(), '\\').unwrap(), "python:3.12");
//!
//! let mut stage = global.for_stage();
//! stage.set_base_env(["PATH=/usr/bin", "HOME=/root"]);
//! assert_eq!(expand_word("${VERSION:-unset}", &stage, '\\').unwrap(), "unset");
//! stage.declare_arg("VERSION", None, '\\').unwrap();
//! stage.set_env("APP", "/app");
//! assert_eq!(expand_word("$HOME $VERSION $APP", &stage, '\\').unwrap(), "/root 3.12 /app");
//! assert_eq!(stage.config_env(), ["PATH=/usr/bin", "HOME=/root", "APP=/app"]);
//! ```

use std::collections::BTreeMap;

use crate::instructions::{ArgDefinition, Instruction, InstructionError, Spanned};
use crate::shell::{Env, EnvList, ExpandError, Lexer};
use crate::stages::MetaArg;

/// An OS/architecture/variant triple, e.g. linux/arm/v7.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, ... or empty.
    pub variant: String,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.into(),
        }
    }

    /// The platform this program was compiled for, in OCI terms (`linux/amd64`, ...).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, "")
    }

    /// `os/arch[/variant]`.
    pub fn format(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

/// The build and target platforms behind the built-in platform ARGs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformArgs {
    /// The platform doing the build (`BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`).
    pub build: Platform,
    /// The platform of the image (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`).
    pub target: Platform,
    /// The target stage name (`TARGETSTAGE`), "default" when building the last stage.
    pub target_stage: String,
}

impl PlatformArgs {
    /// Build and target on the same platform.
    pub fn same(platform: Platform) -> Self {
        PlatformArgs {
            build: platform.clone(),
            target: platform,
            target_stage: "default".into(),
        }
    }

    /// The built-in ARGs with their values, in BuildKit's order.
    pub fn builtin_args(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BUILDPLATFORM", self.build.format()),
            ("BUILDOS", self.build.os.clone()),
            ("BUILDOSVERSION", String::new()),
            ("BUILDARCH", self.build.architecture.clone()),
            ("BUILDVARIANT", self.build.variant.clone()),
            ("TARGETPLATFORM", self.target.format()),
            ("TARGETOS", self.target.os.clone()),
            ("TARGETOSVERSION", String::new()),
            ("TARGETARCH", self.target.architecture.clone()),
            ("TARGETVARIANT", self.target.variant.clone()),
            ("TARGETSTAGE", self.target_stage.clone()),
        ]
    }
}

/// ARGs that configure BuildKit itself and never become environment variables.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// The variables in scope at one point of a build. Clone it to start a stage that is based on
/// another stage (`FROM builder`): the new stage inherits the builder's ARGs and ENV.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    build_args: BTreeMap<String, String>,
    global: EnvList,
    env: EnvList,
    config_env: EnvList,
    declared: Vec<(String, Option<String>)>,
    declared_index: BTreeMap<String, usize>,
}

impl Variables {
    /// The global scope: built-in platform ARGs (overridable by `build_args`) and the user's
    /// `--build-arg` values, which override ARG defaults.
    pub fn new<K: Into<String>, V: Into<String>>(
        platforms: &PlatformArgs,
        build_args: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let build_args: BTreeMap<String, String> = build_args
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let mut global = EnvList::new();
        for (k, v) in platforms.builtin_args() {
            let v = build_args.get(k).cloned().unwrap_or(v);
            global.set(k, v);
        }
        Variables {
            build_args,
            global,
            ..Default::default()
        }
    }

    /// Declares one meta ARG (before the first `FROM`): its value is the `--build-arg`, else
    /// the default expanded against the global scope so far. Without either, it stays unset.
    pub fn declare_meta_arg(
        &mut self,
        key: &str,
        default: Option<&str>,
        escape: char,
    ) -> Result<(), ExpandError> {
        let value = match self.build_args.get(key) {
            Some(v) => Some(v.clone()),
            None => match default {
                Some(d) => Some(Lexer::new(escape).expand_word(d, &self.global)?),
                None => None,
            },
        };
        if let Some(v) = value {
            self.global.set(key, v);
        }
        Ok(())
    }

    /// Declares all meta ARGs of [`crate::parse_stages`], in order.
    pub fn declare_meta_args(
        &mut self,
        args: &[MetaArg],
        escape: char,
    ) -> Result<(), InstructionError> {
        for a in args {
            self.declare_meta_arg(&a.definition.key, a.definition.default.as_deref(), escape)
                .map_err(|e| InstructionError::new(a.span, e.to_string()).hint(e.hint()))?;
        }
        Ok(())
    }

    /// The global scope, to expand `FROM` lines with.
    pub fn global(&self) -> &EnvList {
        &self.global
    }

    /// A fresh stage scope (`FROM <image>`): the same global scope and build args, nothing
    /// declared yet.
    pub fn for_stage(&self) -> Variables {
        Variables {
            build_args: self.build_args.clone(),
            global: self.global.clone(),
            ..Default::default()
        }
    }

    /// Seeds the stage with the base image config's `Env` (`KEY=value` strings).
    pub fn set_base_env<S: AsRef<str>>(&mut self, env: impl IntoIterator<Item = S>) {
        for item in env {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            self.env.set(k, v);
            self.config_env.set(k, v);
        }
    }

    /// `ARG key[=default]` inside a stage (BuildKit's `dispatchArg`): the value is the
    /// `--build-arg`, else the default expanded against the stage, else the global value
    /// when there is no default. Returns the value, if any.
    pub fn declare_arg(
        &mut self,
        key: &str,
        default: Option<&str>,
        escape: char,
    ) -> Result<Option<String>, ExpandError> {
        let value = if let Some(v) = self.build_args.get(key) {
            Some(v.clone())
        } else if let Some(d) = default {
            Some(Lexer::new(escape).expand_word(d, &self.env)?)
        } else {
            self.global.lookup(key).map(str::to_string)
        };
        if let Some(v) = &value
            && !NON_ENV_ARGS.contains(&key)
        {
            self.env.set(key, v.clone());
        }
        match self.declared_index.get(key) {
            Some(&i) => self.declared[i].1 = value.clone(),
            None => {
                self.declared_index
                    .insert(key.to_string(), self.declared.len());
                self.declared.push((key.to_string(), value.clone()));
            }
        }
        Ok(value)
    }

    /// `ENV key=value` (value already expanded): visible to later instructions and recorded
    /// in the image config.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.set(key, value);
        self.config_env.set(key, value);
    }

    /// Expands `inst` the way BuildKit does (FROM against the global scope, everything else
    /// against this stage), then applies its effect on the scope (`ENV` sets variables, `ARG`
    /// declares them). Returns the expanded instruction.
    ///
    /// For `ARG`, each definition comes back with the value it took (the `--build-arg`, else
    /// the expanded default, else the global value), or none: what BuildKit's `dispatchArg`
    /// writes to the history (`ARG KEY=value`). The value is final text, not to be expanded
    /// again. A default is expanded only when it is used, so `ARG B=${A:?msg}` with
    /// `--build-arg B=…` is no error.
    pub fn expand_and_apply(
        &mut self,
        inst: &Spanned<Instruction>,
        escape: char,
    ) -> Result<Spanned<Instruction>, InstructionError> {
        match &inst.value {
            Instruction::From(_) => inst.expand(&self.global, escape),
            Instruction::Arg(defs) => {
                let mut taken = Vec::with_capacity(defs.len());
                for d in defs {
                    let value = self
                        .declare_arg(&d.key, d.default.as_deref(), escape)
                        .map_err(|e| {
                            InstructionError::new(inst.span, e.to_string()).hint(e.hint())
                        })?;
                    taken.push(ArgDefinition {
                        key: d.key.clone(),
                        default: value,
                    });
                }
                Ok(Spanned {
                    value: Instruction::Arg(taken),
                    ..inst.clone()
                })
            }
            Instruction::Env(_) => {
                let expanded = inst.expand(&*self, escape)?;
                if let Instruction::Env(kvs) = &expanded.value {
                    for kv in kvs {
                        self.set_env(&kv.key, &kv.value);
                    }
                }
                Ok(expanded)
            }
            _ => inst.expand(&*self, escape),
        }
    }

    /// The environment of processes started by `RUN`: base image env, ARG values and ENV,
    /// as `KEY=value` strings.
    pub fn run_env(&self) -> Vec<String> {
        self.env.to_env_strings()
    }

    /// The image config's `Env`: base image env and `ENV` instructions only.
    pub fn config_env(&self) -> Vec<String> {
        self.config_env.to_env_strings()
    }

    /// The ARGs declared in this stage, with their values, in order of first declaration
    /// (docker records them in a `RUN` history entry as `|N KEY=value … command`).
    pub fn declared_args(&self) -> &[(String, Option<String>)] {
        &self.declared
    }

    /// BuildKit's text for a `RUN` history entry (after `"RUN "`): the declared ARGs as
    /// `|N KEY=value …` (current values), then the argv, e.g.
    /// `|1 VERSION=3.12 /bin/sh -c pip install flask`. Docker appends ` # buildkit`.
    pub fn run_command_string(&self, argv: &[String]) -> String {
        let mut parts: Vec<String> = Vec::with_capacity(self.declared.len() + argv.len() + 1);
        if !self.declared.is_empty() {
            parts.push(format!("|{}", self.declared.len()));
            for (key, value) in &self.declared {
                let v = self
                    .env
                    .lookup(key)
                    .map(str::to_string)
                    .or_else(|| value.clone())
                    .unwrap_or_default();
                parts.push(format!("{key}={v}"));
            }
        }
        parts.extend(argv.iter().cloned());
        parts.join(" ")
    }

    /// The value of a variable as expansion sees it.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        self.env.lookup(name)
    }
}

impl Env for Variables {
    fn get(&self, name: &str) -> Option<String> {
        self.env.lookup(name).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::new(
            &PlatformArgs::same(Platform::new("linux", "arm", "v7")),
            [("B", "from-cli")],
        )
    }

    #[test]
    fn builtin_platform_args() {
        let v = vars();
        assert_eq!(v.global().lookup("TARGETPLATFORM"), Some("linux/arm/v7"));
        assert_eq!(v.global().lookup("BUILDARCH"), Some("arm"));
        assert_eq!(v.global().lookup("TARGETVARIANT"), Some("v7"));
        // Not visible in a stage until declared.
        let mut s = v.for_stage();
        assert_eq!(s.lookup("TARGETARCH"), None);
        s.declare_arg("TARGETARCH", None, '\\').unwrap();
        assert_eq!(s.lookup("TARGETARCH"), Some("arm"));
    }

    #[test]
    fn scoping() {
        let mut g = vars();
        g.declare_meta_arg("A", Some("meta"), '\\').unwrap();
        g.declare_meta_arg("B", Some("default"), '\\').unwrap();
        let mut s = g.for_stage();
        assert_eq!(
            s.lookup("A"),
            None,
            "meta args are invisible until redeclared"
        );
        s.declare_arg("A", None, '\\').unwrap();
        assert_eq!(s.lookup("A"), Some("meta"));
        s.declare_arg("B", Some("x"), '\\').unwrap();
        assert_eq!(s.lookup("B"), Some("from-cli"), "--build-arg wins");
        s.declare_arg("C", Some("${A}-c"), '\\').unwrap();
        assert_eq!(s.lookup("C"), Some("meta-c"));
        s.set_env("C", "env");
        assert_eq!(s.lookup("C"), Some("env"), "ENV overrides ARG");
        assert_eq!(s.config_env(), ["C=env"]);
        assert_eq!(s.declared_args().len(), 3);
        s.declare_arg("NOVALUE", None, '\\').unwrap();
        assert_eq!(s.lookup("NOVALUE"), None);
        assert_eq!(
            s.run_command_string(&["/bin/sh".into(), "-c".into(), "make".into()]),
            "|4 A=meta B=from-cli C=env NOVALUE= /bin/sh -c make"
        );
    }

    /// BuildKit's testArgDefaultExpansion: a default is expanded only when it is used.
    #[test]
    fn an_arg_comes_back_with_the_value_it_took() {
        let arg = |line: &str| {
            let parsed = crate::parse(&format!("FROM scratch\n{line}\n")).unwrap();
            crate::parse_instruction(&parsed.nodes[1]).unwrap()
        };
        let taken = |vars: &mut Variables, line: &str| match vars
            .expand_and_apply(&arg(line), '\\')
            .map(|i| i.value)
        {
            Ok(Instruction::Arg(defs)) => Ok(defs
                .into_iter()
                .map(|d| (d.key, d.default))
                .collect::<Vec<_>>()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.message),
        };
        let platforms = PlatformArgs::same(Platform::new("linux", "amd64", ""));
        let mut cli = Variables::new(&platforms, [("BAR", "a$b'c")]).for_stage();
        assert_eq!(
            taken(&mut cli, r#"ARG BAR=${FOO:?"foo missing"}"#),
            Ok(vec![("BAR".into(), Some("a$b'c".into()))]),
            "the --build-arg, as given, and the default never expanded"
        );
        let mut none = Variables::new(&platforms, Vec::<(String, String)>::new());
        none.declare_meta_arg("G", Some("global"), '\\').unwrap();
        let mut none = none.for_stage();
        let err = taken(&mut none, r#"ARG BAR=${FOO:?"foo missing"}"#).unwrap_err();
        assert!(err.contains("FOO: foo missing"), "{err}");
        assert_eq!(
            taken(&mut none, "ARG A='$x' G NONE"),
            Ok(vec![
                ("A".into(), Some("$x".into())),
                ("G".into(), Some("global".into())),
                ("NONE".into(), None),
            ])
        );
    }
}
