//! Variable expansion of typed instructions, per instruction kind, as BuildKit dispatches it.
//!
//! | instruction | what is expanded |
//! |---|---|
//! | `ENV`, `LABEL` | keys and values |
//! | `ADD` | sources, destination, `--chown`, `--chmod`, `--checksum`; heredoc bodies with an unquoted delimiter |
//! | `COPY` | sources, destination, `--chown`, `--chmod`; heredoc bodies with an unquoted delimiter; `--from` must not use variables |
//! | `WORKDIR`, `USER`, `STOPSIGNAL` | the value |
//! | `VOLUME` | each path |
//! | `EXPOSE` | each word, then split into words |
//! | `FROM` | base and `--platform` (against the meta ARGs: pass the global scope) |
//! | `ARG` | defaults (keys are not expanded) |
//! | `RUN` | only `--mount` values |
//! | `CMD`, `ENTRYPOINT`, `SHELL`, `HEALTHCHECK`, `ONBUILD`, `MAINTAINER` | nothing |

use super::{
    AddInstruction, ArgDefinition, CopyInstruction, FromInstruction, InlineSource, Instruction,
    InstructionError, KeyValue, RunInstruction, Spanned, mount,
};
use crate::shell::{Env, ExpandError, Lexer};

/// Why an instruction's expansion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionExpandError {
    /// A word did not expand (bad substitution, `${X:?}` on an unset variable, ...).
    #[error(transparent)]
    Word(#[from] ExpandError),
    /// The expanded instruction is not valid (e.g. a `--mount` value after expansion).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// What to write instead.
        hint: Option<String>,
    },
}

impl InstructionExpandError {
    /// A hint telling the user what to write instead.
    pub fn hint(&self) -> Option<String> {
        match self {
            InstructionExpandError::Word(e) => Some(e.hint().to_string()),
            InstructionExpandError::Invalid { hint, .. } => hint.clone(),
        }
    }
}

struct Expander<'a> {
    lexer: Lexer,
    env: &'a dyn Env,
}

impl Expander<'_> {
    fn word(&self, w: &str) -> Result<String, ExpandError> {
        self.lexer.expand_word(w, self.env)
    }

    fn opt(&self, w: &Option<String>) -> Result<Option<String>, ExpandError> {
        w.as_deref().map(|w| self.word(w)).transpose()
    }

    fn all(&self, ws: &[String]) -> Result<Vec<String>, ExpandError> {
        ws.iter().map(|w| self.word(w)).collect()
    }

    fn kvs(&self, kvs: &[KeyValue]) -> Result<Vec<KeyValue>, ExpandError> {
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(&kv.key)?,
                    value: self.word(&kv.value)?,
                    legacy: kv.legacy,
                })
            })
            .collect()
    }

    /// Heredoc bodies are expanded with quotes left alone and `\` as escape.
    fn inline(&self, sources: &[InlineSource]) -> Result<Vec<InlineSource>, ExpandError> {
        let raw = Lexer {
            skip_process_quotes: true,
            ..Lexer::new('\\')
        };
        sources
            .iter()
            .map(|s| {
                let data = if s.expand {
                    raw.expand_word(&s.data, self.env)?
                } else {
                    s.data.clone()
                };
                Ok(InlineSource { data, ..s.clone() })
            })
            .collect()
    }
}

impl Instruction {
    /// Returns the instruction with its variables expanded from `env`, exactly where
    /// BuildKit expands them for this kind of instruction (see the module table). `escape`
    /// is the Dockerfile's escape character ([`crate::Parsed::escape`]).
    ///
    /// For `FROM`, pass the global scope ([`crate::Variables::global`]); for every other
    /// instruction, the stage's variables.
    pub fn expand(
        &self,
        env: &dyn Env,
        escape: char,
    ) -> Result<Instruction, InstructionExpandError> {
        let x = Expander {
            lexer: Lexer::new(escape),
            env,
        };
        Ok(match self {
            Instruction::Env(kvs) => Instruction::Env(x.kvs(kvs)?),
            Instruction::Label(kvs) => Instruction::Label(x.kvs(kvs)?),
            Instruction::Add(a) => Instruction::Add(AddInstruction {
                sources: x.all(&a.sources)?,
                inline_sources: x.inline(&a.inline_sources)?,
                dest: x.word(&a.dest)?,
                chown: x.opt(&a.chown)?,
                chmod: x.opt(&a.chmod)?,
                checksum: x.opt(&a.checksum)?,
                ..a.clone()
            }),
            Instruction::Copy(c) => {
                if let Some(from) = &c.from {
                    // BuildKit: the value must not change when expanded with no variables.
                    let unchanged = Lexer::new(escape)
                        .expand_word(from, &crate::shell::NoEnv)
                        .is_ok_and(|v| &v == from);
                    if !unchanged {
                        return Err(InstructionExpandError::Invalid {
                            message: "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into(),
                            hint: Some("add `ARG NAME` before the first FROM and `FROM ${NAME} AS src`, then `COPY --from=src`".into()),
                        });
                    }
                }
                Instruction::Copy(CopyInstruction {
                    sources: x.all(&c.sources)?,
                    inline_sources: x.inline(&c.inline_sources)?,
                    dest: x.word(&c.dest)?,
                    chown: x.opt(&c.chown)?,
                    chmod: x.opt(&c.chmod)?,
                    ..c.clone()
                })
            }
            Instruction::Workdir(p) => Instruction::Workdir(x.word(p)?),
            Instruction::User(u) => Instruction::User(x.word(u)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(x.word(s)?),
            Instruction::Volume(v) => Instruction::Volume(x.all(v)?),
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(x.lexer.expand_words(p, env)?);
                }
                Instruction::Expose(out)
            }
            Instruction::From(f) => Instruction::From(FromInstruction {
                base: x.word(&f.base)?,
                stage_name: f.stage_name.clone(),
                platform: x.opt(&f.platform)?,
            }),
            Instruction::Arg(defs) => Instruction::Arg(
                defs.iter()
                    .map(|d| {
                        Ok(ArgDefinition {
                            key: d.key.clone(),
                            default: x.opt(&d.default)?,
                        })
                    })
                    .collect::<Result<_, ExpandError>>()?,
            ),
            Instruction::Run(r) => {
                let mut mounts = Vec::with_capacity(r.mount_specs.len());
                for spec in &r.mount_specs {
                    let mut word_error = None;
                    let parsed = mount::parse_mount(spec, &mut |v| {
                        x.word(v).map_err(|e| {
                            let m = mount::MountError {
                                message: e.to_string(),
                                hint: None,
                            };
                            word_error = Some(e);
                            m
                        })
                    });
                    match parsed {
                        Ok(m) => mounts.push(m),
                        Err(e) => {
                            if let Some(w) = word_error {
                                return Err(w.into());
                            }
                            return Err(InstructionExpandError::Invalid {
                                message: e.message,
                                hint: Some(
                                    e.hint.unwrap_or_else(|| mount::SYNTAX_HINT.to_string()),
                                ),
                            });
                        }
                    }
                }
                Instruction::Run(RunInstruction {
                    mounts,
                    ..r.clone()
                })
            }
            Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Shell(_)
            | Instruction::Healthcheck(_)
            | Instruction::Onbuild(_)
            | Instruction::Maintainer(_) => self.clone(),
        })
    }
}

impl Spanned<Instruction> {
    /// [`Instruction::expand`], keeping the span and reporting errors with it.
    pub fn expand(
        &self,
        env: &dyn Env,
        escape: char,
    ) -> Result<Spanned<Instruction>, InstructionError> {
        match self.value.expand(env, escape) {
            Ok(value) => Ok(Spanned {
                value,
                span: self.span,
                original: self.original.clone(),
                keyword: self.keyword.clone(),
            }),
            Err(e) => {
                let mut err = InstructionError::new(self.span, e.to_string());
                err.hint = e.hint();
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InstructionExpandError;
    use crate::instructions::{CommandLine, parse_instruction};
    use crate::shell::{EnvList, ExpandErrorKind};
    use crate::{Instruction, parse};

    fn first(src: &str) -> Instruction {
        let p = parse(src).unwrap();
        parse_instruction(&p.nodes[0]).unwrap().value
    }

    #[test]
    fn expands_per_kind() {
        let env = EnvList::from_pairs([
            ("HOME", "/root"),
            ("P", "80 443"),
            ("U", "app"),
            ("D", "/cache"),
        ]);
        let x = |src: &str| first(src).expand(&env, '\\').unwrap();
        assert_eq!(
            x("WORKDIR $HOME/app"),
            Instruction::Workdir("/root/app".into())
        );
        assert_eq!(x("USER ${U}:${U}"), Instruction::User("app:app".into()));
        assert_eq!(
            x("EXPOSE $P"),
            Instruction::Expose(vec!["80".into(), "443".into()])
        );
        assert_eq!(
            x("CMD echo $HOME"),
            Instruction::Cmd(CommandLine::Shell("echo $HOME".into()))
        );
        let Instruction::Run(run) = x("RUN --mount=type=cache,target=$D echo $HOME") else {
            panic!()
        };
        assert_eq!(run.mounts[0].target.as_deref(), Some("/cache"));
        assert_eq!(run.command, CommandLine::Shell("echo $HOME".into()));
        let Instruction::Copy(c) =
            x("COPY --chown=$U <<EOF <<'RAW' $HOME/\nhome=$HOME\nEOF\nraw=$HOME\nRAW\n")
        else {
            panic!()
        };
        assert_eq!(c.chown.as_deref(), Some("app"));
        assert_eq!(c.dest, "/root/");
        assert_eq!(c.inline_sources[0].data, "home=/root\n");
        assert_eq!(c.inline_sources[1].data, "raw=$HOME\n");
        let err = |text| first(text).expand(&env, '\\').unwrap_err();
        assert!(
            matches!(err("COPY --from=$U a b"), InstructionExpandError::Invalid { ref message, .. }
                if message.starts_with("variable expansion is not supported for --from")),
            "{:?}",
            err("COPY --from=$U a b")
        );
        assert!(
            matches!(err("WORKDIR ${HOME"), InstructionExpandError::Word(ref e)
                if e.kind == ExpandErrorKind::MissingBrace),
            "{:?}",
            err("WORKDIR ${HOME")
        );
    }
}
