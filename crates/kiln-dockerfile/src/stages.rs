//! Grouping typed instructions into build stages (BuildKit's `instructions.Parse`).

use crate::ast::Parsed;
use crate::error::Span;
use crate::instructions::{
    ArgDefinition, Instruction, InstructionError, Spanned, parse_instruction,
};

/// An `ARG` before the first `FROM`: visible to `FROM` lines, and inside a stage only when the
/// stage declares the same `ARG` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaArg {
    /// The name and default.
    pub definition: ArgDefinition,
    /// The `ARG` line.
    pub span: Span,
}

/// One build stage: a `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position of the stage in the file (0-based), usable as `COPY --from=<index>`.
    pub index: usize,
    /// The name after `AS`, lower-cased.
    pub name: Option<String>,
    /// The base image or stage, unexpanded (expand with the global scope).
    pub base: String,
    /// `FROM --platform=…`, unexpanded.
    pub platform: Option<String>,
    /// The `FROM` instruction itself.
    pub from: Spanned<Instruction>,
    /// The instructions after `FROM`, in order.
    pub instructions: Vec<Spanned<Instruction>>,
    /// From the `FROM` line to the stage's last line.
    pub span: Span,
}

impl Stage {
    /// The stage named `name` (as after `FROM … AS name`; compared case-insensitively, as
    /// BuildKit lower-cases stage names): what an expanded `FROM name` refers to. `None`
    /// means an image.
    pub fn find_by_name<'a>(stages: &'a [Stage], name: &str) -> Option<&'a Stage> {
        let lower = crate::text::to_lower(name);
        stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    /// The stage a `COPY --from=` value refers to: a stage index (`--from=0`) or a stage name.
    /// `None` means an image.
    pub fn find_for_copy<'a>(stages: &'a [Stage], from: &str) -> Option<&'a Stage> {
        match from.parse::<i64>() {
            Ok(i) => usize::try_from(i).ok().and_then(|i| stages.get(i)),
            Err(_) => Self::find_by_name(stages, from),
        }
    }
}

/// Converts every node and groups the result: meta ARGs, then stages.
///
/// Errors: any instruction that is not valid (unknown instruction with a "did you mean",
/// unknown flag, wrong argument count, ...), and an instruction other than `ARG` before the
/// first `FROM`.
pub fn parse_stages(parsed: &Parsed) -> Result<(Vec<MetaArg>, Vec<Stage>), InstructionError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &parsed.nodes {
        let inst = parse_instruction(node)?;
        match &inst.value {
            Instruction::Arg(defs) if stages.is_empty() => {
                meta_args.extend(defs.iter().map(|d| MetaArg {
                    definition: d.clone(),
                    span: inst.span,
                }));
            }
            Instruction::From(from) => {
                stages.push(Stage {
                    index: stages.len(),
                    name: from.stage_name.clone(),
                    base: from.base.clone(),
                    platform: from.platform.clone(),
                    span: inst.span,
                    from: inst,
                    instructions: Vec::new(),
                });
            }
            _ => {
                let Some(stage) = stages.last_mut() else {
                    return Err(InstructionError::new(inst.span, "no build stage in current context")
                        .hint("start the Dockerfile with `FROM <image>`; only ARG may come before the first FROM"));
                };
                stage.span.end = inst.span.end;
                stage.instructions.push(inst);
            }
        }
    }
    Ok((meta_args, stages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_stages() {
        let src =
            "ARG V=1\nFROM alpine:$V AS Build\nRUN make\nFROM scratch\nCOPY --from=build /a /a\n";
        let (meta, stages) = parse_stages(&crate::parse(src).unwrap()).unwrap();
        assert_eq!(meta.len(), 1);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name.as_deref(), Some("build"));
        assert_eq!(stages[0].base, "alpine:$V");
        assert_eq!((stages[0].span.start.line, stages[0].span.end.line), (2, 3));
        assert_eq!(stages[1].instructions.len(), 1);
        assert_eq!(
            Stage::find_by_name(&stages, "BUILD").map(|s| s.index),
            Some(0)
        );
        assert_eq!(Stage::find_for_copy(&stages, "1").map(|s| s.index), Some(1));
        assert!(Stage::find_for_copy(&stages, "alpine").is_none());
    }

    #[test]
    fn errors_have_hints() {
        let e = parse_stages(&crate::parse("FROM a\nCOPPY . /\n").unwrap()).unwrap_err();
        assert_eq!(e.message, "unknown instruction: COPPY");
        assert_eq!(e.hint.as_deref(), Some("did you mean COPY?"));
        assert_eq!(e.position.line, 2);
        let r = e.render("Dockerfile", "FROM a\nCOPPY . /\n");
        assert!(r.contains("Dockerfile:2:1") && r.contains("^^^^^"), "{r}");
        let e = parse_stages(&crate::parse("RUN x\n").unwrap()).unwrap_err();
        assert!(e.message.contains("no build stage"));
        let e = parse_stages(&crate::parse("FROM a\nCOPY --form=x a b\n").unwrap()).unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean from?"));
        assert_eq!(e.position.column, 6);
    }
}
