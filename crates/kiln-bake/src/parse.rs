//! Bake files → blocks of unevaluated attributes, merged across files as buildx merges them
//! (the same block in a later file adds attributes or replaces them), each attribute with the
//! `file:line` it came from.

use hcl::edit::Span as _;
use hcl::edit::structure::{BlockLabel, Structure};
use hcl::expr::{Expression, Object, ObjectKey, TemplateExpr};

use crate::{BakeFile, Error};

/// The kinds of block kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Variable,
    Group,
    Target,
}

#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub key: String,
    pub expr: Expression,
    pub at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub kind: Kind,
    pub label: String,
    pub at: String,
    pub attrs: Vec<Attr>,
}

impl Block {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.key == key)
    }
}

/// Every block of every file, merged, in the order first seen.
pub(crate) fn read(files: &[BakeFile]) -> Result<Vec<Block>, Error> {
    let mut blocks: Vec<Block> = Vec::new();
    for file in files {
        let parsed = if is_json(file) {
            json_blocks(file)?
        } else {
            hcl_blocks(file)?
        };
        for block in parsed {
            match blocks
                .iter_mut()
                .find(|b| b.kind == block.kind && b.label == block.label)
            {
                Some(existing) => {
                    for attr in block.attrs {
                        match existing.attrs.iter_mut().find(|a| a.key == attr.key) {
                            Some(old) => *old = attr,
                            None => existing.attrs.push(attr),
                        }
                    }
                }
                None => blocks.push(block),
            }
        }
    }
    Ok(blocks)
}

/// buildx tries JSON for a `.json` name and for text that starts as a JSON object does.
fn is_json(file: &BakeFile) -> bool {
    file.name.ends_with(".json") || file.text.trim_start().starts_with('{')
}

fn kind(word: &str, at: &str) -> Result<Kind, Error> {
    match word {
        "variable" => Ok(Kind::Variable),
        "group" => Ok(Kind::Group),
        "target" => Ok(Kind::Target),
        "function" => Err(Error::Unsupported {
            at: at.to_owned(),
            what: "the `function` block (user-defined functions)".into(),
            hint: String::new(),
        }),
        other => Err(Error::Unsupported {
            at: at.to_owned(),
            what: format!("the block `{other}`"),
            hint: "; a bake file has target, group and variable blocks".into(),
        }),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |before| {
        before.bytes().filter(|b| *b == b'\n').count() + 1
    })
}

fn hcl_blocks(file: &BakeFile) -> Result<Vec<Block>, Error> {
    let body = hcl::edit::parser::parse_body(&file.text).map_err(|e| Error::Syntax {
        file: file.name.clone(),
        message: e.to_string(),
    })?;
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(range) => format!("{}:{}", file.name, line_of(&file.text, range.start)),
        None => file.name.clone(),
    };
    let mut blocks = Vec::new();
    for structure in body.into_iter() {
        match structure {
            Structure::Attribute(attr) => {
                return Err(Error::Unsupported {
                    at: at(attr.span()),
                    what: format!("the top-level attribute `{}`", attr.key.as_str()),
                    hint: format!(
                        "; declare it as variable \"{}\" {{ default = … }}",
                        attr.key.as_str()
                    ),
                });
            }
            Structure::Block(block) => {
                let block_at = at(block.span());
                let kind = kind(block.ident.as_str(), &block_at)?;
                let [label] = block.labels.as_slice() else {
                    return Err(Error::Invalid {
                        at: block_at,
                        message: format!(
                            "a {} block takes one name (`{} \"NAME\" {{ … }}`)",
                            block.ident.as_str(),
                            block.ident.as_str()
                        ),
                    });
                };
                let label = match label {
                    BlockLabel::Ident(i) => i.as_str().to_owned(),
                    BlockLabel::String(s) => s.value().clone(),
                };
                let mut attrs = Vec::new();
                for inner in block.body.into_iter() {
                    match inner {
                        Structure::Attribute(attr) => attrs.push(Attr {
                            key: attr.key.as_str().to_owned(),
                            at: at(attr.span()),
                            expr: Expression::from(attr.value),
                        }),
                        Structure::Block(nested) => {
                            return Err(Error::Unsupported {
                                at: at(nested.span()),
                                what: format!(
                                    "the block `{}` inside {} \"{label}\"",
                                    nested.ident.as_str(),
                                    block.ident.as_str()
                                ),
                                hint: String::new(),
                            });
                        }
                    }
                }
                blocks.push(Block {
                    kind,
                    label,
                    at: block_at,
                    attrs,
                });
            }
        }
    }
    Ok(blocks)
}

fn json_blocks(file: &BakeFile) -> Result<Vec<Block>, Error> {
    let value: serde_json::Value = serde_json::from_str(&file.text).map_err(|e| Error::Syntax {
        file: file.name.clone(),
        message: format!("not JSON: {e}"),
    })?;
    let serde_json::Value::Object(top) = value else {
        return Err(Error::Syntax {
            file: file.name.clone(),
            message: "a JSON bake file is an object".into(),
        });
    };
    let mut blocks = Vec::new();
    for (word, labels) in top {
        let at = format!("{}: {word}", file.name);
        let kind = kind(&word, &at)?;
        let serde_json::Value::Object(labels) = labels else {
            return Err(Error::Invalid {
                at,
                message: "expected an object of blocks by name".into(),
            });
        };
        for (label, body) in labels {
            let at = format!("{}: {word}.{label}", file.name);
            let serde_json::Value::Object(body) = body else {
                return Err(Error::Invalid {
                    at,
                    message: "expected an object of attributes".into(),
                });
            };
            let attrs = body
                .into_iter()
                .map(|(key, value)| Attr {
                    at: format!("{at}.{key}"),
                    key,
                    expr: json_expr(value),
                })
                .collect();
            blocks.push(Block {
                kind,
                label,
                at,
                attrs,
            });
        }
    }
    Ok(blocks)
}

/// JSON values as HCL's JSON syntax reads them: strings are templates (`${VAR}` expands).
fn json_expr(value: serde_json::Value) -> Expression {
    match value {
        serde_json::Value::Null => Expression::Null,
        serde_json::Value::Bool(b) => Expression::Bool(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Expression::Number(i.into()),
            (None, Some(f)) => {
                hcl::Number::from_f64(f).map_or(Expression::Null, Expression::Number)
            }
            (None, None) => Expression::Null,
        },
        serde_json::Value::String(s) => {
            // The template parser reads escapes: give it the decoded string re-escaped.
            let raw = s
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
                .replace('\t', "\\t")
                .replace('\r', "\\r");
            Expression::TemplateExpr(Box::new(TemplateExpr::QuotedString(raw)))
        }
        serde_json::Value::Array(items) => {
            Expression::Array(items.into_iter().map(json_expr).collect())
        }
        serde_json::Value::Object(map) => {
            let mut object = Object::new();
            for (k, v) in map {
                object.insert(ObjectKey::Expression(Expression::String(k)), json_expr(v));
            }
            Expression::Object(object)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> BakeFile {
        BakeFile {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn later_files_add_and_replace_attributes() {
        let blocks = read(&[
            file(
                "a.hcl",
                "target \"x\" {\n  context = \"a\"\n  target = \"t\"\n}\n",
            ),
            file(
                "b.json",
                r#"{"target": {"x": {"context": "b", "tags": ["x"]}}}"#,
            ),
        ])
        .unwrap();
        assert_eq!(blocks.len(), 1);
        let keys: Vec<&str> = blocks[0].attrs.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["context", "target", "tags"]);
        assert_eq!(
            blocks[0].attr("context").unwrap().at,
            "b.json: target.x.context"
        );
        assert_eq!(blocks[0].attr("target").unwrap().at, "a.hcl:3");
    }

    #[test]
    fn blocks_kiln_does_not_read_are_errors_with_their_line() {
        let err = read(&[file("f.hcl", "\n\nfunction \"f\" {\n}\n")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.hcl:3: the `function` block (user-defined functions) is not supported by kiln"
        );
        let err = read(&[file("f.hcl", "X = 1\n")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.hcl:1: the top-level attribute `X`"),
            "{err}"
        );
    }
}
