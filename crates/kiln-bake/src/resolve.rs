//! Evaluation and resolution, as buildx does them: variables (default, or the environment's
//! value converted to the default's type), targets once per `matrix` combination, groups,
//! `inherits` (parents merged first, with buildx's per-field merge rules), `--set`, defaults.

use std::collections::{BTreeMap, BTreeSet};

use hcl::Value;
use hcl::eval::{Context, Evaluate as _, FuncArgs, FuncDef, ParamType};

use crate::parse::{self, Attr, Block, Kind};
use crate::{Bake, BakeFile, Entry, Error, Group, Secret, Ssh, Target};

/// A target as one block (and one matrix combination) gives it: `None` is "not set", which
/// matters when merging.
#[derive(Debug, Clone, Default)]
struct Partial {
    at: String,
    description: Option<String>,
    inherits: Vec<String>,
    context: Option<String>,
    contexts: BTreeMap<String, String>,
    dockerfile: Option<String>,
    dockerfile_inline: Option<String>,
    args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    tags: Option<Vec<String>>,
    cache_from: Option<Vec<Entry>>,
    cache_to: Option<Vec<Entry>>,
    attest: Option<Vec<Entry>>,
    target: Option<String>,
    secret: Option<Vec<Secret>>,
    ssh: Option<Vec<Ssh>>,
    platforms: Option<Vec<String>>,
    output: Option<Vec<Entry>>,
    pull: Option<bool>,
    no_cache: Option<bool>,
}

/// The evaluated file: targets by generated name, groups by name (matrix targets' block names
/// among them, as buildx adds them).
struct Config {
    targets: BTreeMap<String, Partial>,
    groups: BTreeMap<String, (String, Group)>,
}

/// Reads `files`, evaluates them with `env` for variables, resolves `names` (the `default`
/// group or target when empty) and applies `sets` (`--set pattern.key=value`).
pub fn load(
    files: &[BakeFile],
    names: &[String],
    sets: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bake, Error> {
    let blocks = parse::read(files)?;
    let ctx = variables(&blocks, env)?;
    let config = evaluate(&blocks, &ctx)?;
    // buildx replaces dots in the names asked for (compose service names may have them).
    let names: Vec<String> = if names.is_empty() {
        vec!["default".to_owned()]
    } else {
        names.iter().map(|n| n.replace('.', "_")).collect()
    };
    let mut wanted = Vec::new();
    for name in &names {
        for matched in config.match_names(name)? {
            if !wanted.contains(&matched) {
                wanted.push(matched);
            }
        }
    }
    let overrides = overrides(&config, sets)?;
    let mut bake = Bake::default();
    for name in &wanted {
        let (targets, groups) = config.expand(name);
        for target in targets {
            let resolved = config.resolve(&target, &overrides, &mut Vec::new())?;
            bake.targets
                .insert(target.clone(), finish(target, resolved));
        }
        for group in groups {
            if let Some((_, g)) = config.groups.get(&group) {
                bake.groups.insert(group, g.clone());
            }
        }
    }
    // A `target:` context builds the target it names even when not asked for; buildx then
    // keeps its result in the cache only (output `cacheonly`).
    let mut queue: Vec<String> = bake.targets.keys().cloned().collect();
    while let Some(name) = queue.pop() {
        let links: Vec<String> = bake.targets[&name]
            .target_contexts()
            .map(|(_, t)| t.to_owned())
            .collect();
        for link in links {
            if link == name {
                return Err(Error::Invalid {
                    at: bake.targets[&name].name.clone(),
                    message: format!("target {link} cannot link to itself"),
                });
            }
            if bake.targets.contains_key(&link) {
                continue;
            }
            let resolved = config.resolve(&link, &overrides, &mut Vec::new())?;
            let mut target = finish(link.clone(), resolved);
            target.output = vec![Entry::from([("type".to_owned(), "cacheonly".to_owned())])];
            bake.targets.insert(link.clone(), target);
            queue.push(link);
        }
    }
    // buildx lists the names asked for under `default`, unless `default` is a group asked for.
    for name in &wanted {
        if name == "default" && bake.groups.contains_key("default") {
            continue;
        }
        let group = bake.groups.entry("default".to_owned()).or_default();
        if !group.targets.contains(name) {
            group.targets.push(name.clone());
        }
    }
    if let Some(group) = bake.groups.get_mut("default") {
        group.targets.sort();
        group.targets.dedup();
    }
    // A loop of `target:` contexts is an error here, as in buildx, not only when building.
    build_order(&bake)?;
    Ok(bake)
}

fn eval(ctx: &Context, attr: &Attr) -> Result<Value, Error> {
    attr.expr.evaluate(ctx).map_err(|e| match e.kind() {
        hcl::eval::ErrorKind::UndefinedFunc(name) => Error::Unsupported {
            at: attr.at.clone(),
            what: format!("the function `{name}` (in `{}`)", attr.key),
            hint: format!("; kiln has {}", FUNCTIONS.join(", ")),
        },
        _ => Error::Invalid {
            at: attr.at.clone(),
            message: format!("`{}`: {e}", attr.key),
        },
    })
}

/// The functions of buildx's standard library that kiln has.
const FUNCTIONS: &[&str] = &[
    "equal",
    "join",
    "lower",
    "notequal",
    "replace",
    "split",
    "trimprefix",
    "trimsuffix",
    "upper",
];

fn arg(args: &FuncArgs, i: usize) -> Result<String, String> {
    args.get(i)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("argument {} must be a string", i + 1))
}

fn functions(ctx: &mut Context) {
    let s = || ParamType::String;
    ctx.declare_func(
        "lower",
        FuncDef::builder()
            .param(s())
            .build(|a| Ok(arg(&a, 0)?.to_lowercase().into())),
    );
    ctx.declare_func(
        "upper",
        FuncDef::builder()
            .param(s())
            .build(|a| Ok(arg(&a, 0)?.to_uppercase().into())),
    );
    ctx.declare_func(
        "replace",
        FuncDef::builder()
            .params([s(), s(), s()])
            .build(|a| Ok(arg(&a, 0)?.replace(&arg(&a, 1)?, &arg(&a, 2)?).into())),
    );
    ctx.declare_func(
        "trimprefix",
        FuncDef::builder().params([s(), s()]).build(|a| {
            let (text, prefix) = (arg(&a, 0)?, arg(&a, 1)?);
            Ok(text
                .strip_prefix(&prefix)
                .unwrap_or(&text)
                .to_owned()
                .into())
        }),
    );
    ctx.declare_func(
        "trimsuffix",
        FuncDef::builder().params([s(), s()]).build(|a| {
            let (text, suffix) = (arg(&a, 0)?, arg(&a, 1)?);
            Ok(text
                .strip_suffix(&suffix)
                .unwrap_or(&text)
                .to_owned()
                .into())
        }),
    );
    ctx.declare_func(
        "join",
        FuncDef::builder()
            .param(s())
            .param(ParamType::array_of(s()))
            .build(|a| {
                let sep = arg(&a, 0)?;
                let items: Vec<String> = a[1]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(items.join(&sep).into())
            }),
    );
    ctx.declare_func(
        "split",
        FuncDef::builder().params([s(), s()]).build(|a| {
            let (sep, text) = (arg(&a, 0)?, arg(&a, 1)?);
            Ok(Value::Array(
                text.split(sep.as_str()).map(Value::from).collect(),
            ))
        }),
    );
    ctx.declare_func(
        "equal",
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any])
            .build(|a| Ok((a[0] == a[1]).into())),
    );
    ctx.declare_func(
        "notequal",
        FuncDef::builder()
            .params([ParamType::Any, ParamType::Any])
            .build(|a| Ok((a[0] != a[1]).into())),
    );
}

/// The variables' values: the environment's when set (converted to the type of the default,
/// as buildx converts it), else the default, which may use other variables.
fn variables<'a>(
    blocks: &[Block],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Context<'a>, Error> {
    let mut ctx = Context::new();
    functions(&mut ctx);
    let mut pending: Vec<&Block> = Vec::new();
    for block in blocks.iter().filter(|b| b.kind == Kind::Variable) {
        for attr in &block.attrs {
            if !["default", "description"].contains(&attr.key.as_str()) {
                return Err(unsupported_attr(attr, "variable", &block.label));
            }
        }
        pending.push(block);
    }
    loop {
        let mut progress = false;
        let mut first_error = None;
        let mut still = Vec::new();
        for block in pending {
            match variable(&ctx, block, env) {
                Ok(value) => {
                    ctx.declare_var(block.label.as_str(), value);
                    progress = true;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    still.push(block);
                }
            }
        }
        pending = still;
        match first_error {
            None => return Ok(ctx),
            Some(e) if !progress => return Err(e),
            Some(_) => {}
        }
    }
}

fn variable(
    ctx: &Context,
    block: &Block,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Error> {
    let default = match block.attr("default") {
        Some(attr) => Some(eval(ctx, attr)?),
        None => None,
    };
    let Some(text) = env(&block.label) else {
        return Ok(default.unwrap_or_else(|| Value::String(String::new())));
    };
    let bad = |what: &str| Error::Invalid {
        at: block.at.clone(),
        message: format!(
            "variable {}: the environment's value {text:?} is not {what}, as the default is",
            block.label
        ),
    };
    Ok(match default {
        Some(Value::Bool(_)) => match text.trim() {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => Value::Bool(true),
            "false" | "0" | "f" | "F" | "FALSE" | "False" => Value::Bool(false),
            _ => return Err(bad("a boolean")),
        },
        Some(Value::Number(_)) => {
            let n: f64 = text.trim().parse().map_err(|_| bad("a number"))?;
            hcl::Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        Some(Value::Array(_) | Value::Object(_)) => {
            return Err(Error::Unsupported {
                at: block.at.clone(),
                what: format!(
                    "setting the list or map variable {} from the environment",
                    block.label
                ),
                hint: String::new(),
            });
        }
        _ => Value::String(text),
    })
}

fn unsupported_attr(attr: &Attr, kind: &str, label: &str) -> Error {
    Error::Unsupported {
        at: attr.at.clone(),
        what: format!("the attribute `{}` of {kind} \"{label}\"", attr.key),
        hint: String::new(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn evaluate(blocks: &[Block], ctx: &Context) -> Result<Config, Error> {
    let mut config = Config {
        targets: BTreeMap::new(),
        groups: BTreeMap::new(),
    };
    for block in blocks.iter().filter(|b| b.kind == Kind::Group) {
        let mut group = Group::default();
        let mut has_targets = false;
        for attr in &block.attrs {
            let value = eval(ctx, attr)?;
            match attr.key.as_str() {
                "targets" => {
                    group.targets = strings(&value, attr)?;
                    has_targets = true;
                }
                "description" => group.description = string(&value, attr)?,
                _ => return Err(unsupported_attr(attr, "group", &block.label)),
            }
        }
        if !has_targets {
            return Err(Error::Invalid {
                at: block.at.clone(),
                message: format!("group \"{}\" has no `targets`", block.label),
            });
        }
        config
            .groups
            .insert(block.label.clone(), (block.at.clone(), group));
    }
    for block in blocks.iter().filter(|b| b.kind == Kind::Target) {
        let combos = match block.attr("matrix") {
            Some(attr) => matrix(ctx, attr)?,
            None => vec![Vec::new()],
        };
        let mut names = Vec::new();
        for combo in combos {
            let mut local = ctx.clone();
            for (k, v) in combo {
                local.declare_var(k.as_str(), v);
            }
            let name = match block.attr("name") {
                Some(attr) if block.attr("matrix").is_some() => string(&eval(&local, attr)?, attr)?,
                Some(attr) => {
                    return Err(Error::Invalid {
                        at: attr.at.clone(),
                        message: format!("target \"{}\": `name` needs a `matrix`", block.label),
                    });
                }
                None => block.label.clone(),
            };
            if !valid_name(&name) {
                return Err(Error::Invalid {
                    at: block.at.clone(),
                    message: format!(
                        "target name {name:?}: only letters, digits, `_` and `-` (use \
                         replace() in `name` for a matrix value with dots)"
                    ),
                });
            }
            let partial = target_block(&local, block)?;
            if block.attr("matrix").is_some() && config.targets.contains_key(&name) {
                return Err(Error::Invalid {
                    at: block.at.clone(),
                    message: format!("the matrix gives the name {name:?} twice"),
                });
            }
            config.targets.insert(name.clone(), partial);
            names.push(name);
        }
        if !(names.len() == 1 && names[0] == block.label) {
            config.groups.insert(
                block.label.clone(),
                (
                    block.at.clone(),
                    Group {
                        description: String::new(),
                        targets: names,
                    },
                ),
            );
        }
    }
    Ok(config)
}

/// The combinations of a matrix: each key's values, all combinations.
fn matrix(ctx: &Context, attr: &Attr) -> Result<Vec<Vec<(String, Value)>>, Error> {
    let Value::Object(map) = eval(ctx, attr)? else {
        return Err(invalid(attr, "must be a map of lists"));
    };
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in map {
        let Value::Array(values) = values else {
            return Err(invalid(attr, &format!("`{key}` must be a list")));
        };
        let mut next = Vec::new();
        for combo in &combos {
            for value in &values {
                let mut c = combo.clone();
                c.push((key.clone(), value.clone()));
                next.push(c);
            }
        }
        combos = next;
    }
    Ok(combos)
}

fn invalid(attr: &Attr, message: &str) -> Error {
    Error::Invalid {
        at: attr.at.clone(),
        message: format!("`{}` {message}", attr.key),
    }
}

fn string(value: &Value, attr: &Attr) -> Result<String, Error> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(attr, "must be a string")),
    }
}

fn boolean(value: &Value, attr: &Attr) -> Result<bool, Error> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(invalid(attr, "must be true or false")),
    }
}

fn strings(value: &Value, attr: &Attr) -> Result<Vec<String>, Error> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| string(v, attr))
            .collect(),
        _ => Err(invalid(attr, "must be a list of strings")),
    }
}

fn string_map(value: &Value, attr: &Attr) -> Result<BTreeMap<String, String>, Error> {
    match value {
        Value::Object(map) => map
            .iter()
            // A null value is "not set": buildx skips it when merging.
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| Ok((k.clone(), string(v, attr)?)))
            .collect(),
        _ => Err(invalid(attr, "must be a map of strings")),
    }
}

/// Splits `a=b,"c=d,e"` as Go's csv reader does for one record.
fn csv_fields(text: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// An `output` entry: `type=…,dest=…`, a bare path (local) or `-` (tar on stdout).
fn export_entry(text: &str, at: &str) -> Result<Entry, Error> {
    let fields = csv_fields(text);
    if fields.len() == 1 && !text.starts_with("type=") && !text.contains('=') {
        let kind = if text == "-" { "tar" } else { "local" };
        return Ok(Entry::from([
            ("type".to_owned(), kind.to_owned()),
            ("dest".to_owned(), text.to_owned()),
        ]));
    }
    key_values(text, &fields, at)
}

/// A `cache-from`/`cache-to` entry: `type=…,…`, or a bare reference (registry).
fn cache_entry(text: &str, at: &str) -> Result<Entry, Error> {
    let fields = csv_fields(text);
    if fields.len() == 1 && !fields[0].contains('=') {
        return Ok(Entry::from([
            ("type".to_owned(), "registry".to_owned()),
            ("ref".to_owned(), fields[0].clone()),
        ]));
    }
    key_values(text, &fields, at)
}

/// An `attest` entry: `type=sbom|provenance,…`.
fn attest_entry(text: &str, at: &str) -> Result<Entry, Error> {
    key_values(text, &csv_fields(text), at)
}

/// buildx keeps one attestation of each type, the last given (an inheriting target's own
/// entry replaces its parent's).
fn one_per_type(entries: Vec<Entry>) -> Vec<Entry> {
    let mut kept: Vec<Entry> = Vec::new();
    for entry in entries {
        kept.retain(|e| e.get("type") != entry.get("type"));
        kept.push(entry);
    }
    kept
}

fn key_values(text: &str, fields: &[String], at: &str) -> Result<Entry, Error> {
    let mut entry = Entry::new();
    for field in fields {
        let Some((k, v)) = field.split_once('=') else {
            return Err(Error::Invalid {
                at: at.to_owned(),
                message: format!("{text:?}: {field:?} is not KEY=VALUE"),
            });
        };
        entry.insert(k.trim().to_lowercase(), v.to_owned());
    }
    if !entry.contains_key("type") {
        return Err(Error::Invalid {
            at: at.to_owned(),
            message: format!("{text:?}: type required"),
        });
    }
    Ok(entry)
}

fn secret_entry(text: &str, at: &str) -> Result<Secret, Error> {
    let mut secret = Secret::default();
    let mut kind = None;
    for field in csv_fields(text) {
        let Some((k, v)) = field.split_once('=') else {
            return Err(Error::Invalid {
                at: at.to_owned(),
                message: format!("secret {text:?}: {field:?} is not KEY=VALUE"),
            });
        };
        match k.to_lowercase().as_str() {
            "type" if v == "file" || v == "env" => kind = Some(v.to_owned()),
            "id" => secret.id = v.to_owned(),
            "src" | "source" => secret.src = Some(v.to_owned()),
            "env" => secret.env = Some(v.to_owned()),
            _ => {
                return Err(Error::Invalid {
                    at: at.to_owned(),
                    message: format!("secret {text:?}: unexpected {field:?}"),
                });
            }
        }
    }
    if kind.as_deref() == Some("env") && secret.env.is_none() {
        secret.env = secret.src.take();
    }
    Ok(secret)
}

/// `ID` or `ID=PATH[,PATH]`, as buildx's `SSH.UnmarshalText` splits it (no CSV quoting).
fn ssh_entry(text: &str) -> Ssh {
    match text.split_once('=') {
        Some((id, paths)) => Ssh {
            id: id.to_owned(),
            paths: paths.split(',').map(str::to_owned).collect(),
        },
        None => Ssh {
            id: text.to_owned(),
            paths: Vec::new(),
        },
    }
}

/// An `ssh` list: strings (`ssh_entry`) or `{ id = "…", paths = ["…"] }` objects.
fn ssh_entries(value: &Value, attr: &Attr) -> Result<Vec<Ssh>, Error> {
    let Value::Array(items) = value else {
        return Err(invalid(attr, "must be a list"));
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Null => {}
            Value::Object(map) => {
                let mut ssh = Ssh::default();
                for (k, v) in map {
                    match k.as_str() {
                        "id" => ssh.id = string(v, attr)?,
                        "paths" => ssh.paths = strings(v, attr)?,
                        other => {
                            return Err(invalid(
                                attr,
                                &format!("entry: unexpected key {other:?} (id and paths are)"),
                            ));
                        }
                    }
                }
                out.push(ssh);
            }
            other => {
                let text = string(other, attr)?;
                // buildx's ParseSSHSpecs skips empty values.
                if !text.is_empty() {
                    out.push(ssh_entry(&text));
                }
            }
        }
    }
    Ok(out)
}

/// buildx's `SSHKeys.Normalize`: one entry per id, a later one taking the earlier one's place.
fn dedup_ssh(items: &mut Vec<Ssh>) {
    let mut out: Vec<Ssh> = Vec::new();
    for item in items.drain(..) {
        match out.iter_mut().find(|o| o.id == item.id) {
            Some(slot) => *slot = item,
            None => out.push(item),
        }
    }
    *items = out;
}

/// A list of entries, each a string or an object of strings (buildx takes both).
fn entries(
    value: &Value,
    attr: &Attr,
    parse: fn(&str, &str) -> Result<Entry, Error>,
) -> Result<Vec<Entry>, Error> {
    let Value::Array(items) = value else {
        return Err(invalid(attr, "must be a list"));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Object(_) => {
                let map = string_map(item, attr)?;
                let text: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parse(&text.join(","), &attr.at)
            }
            other => parse(&string(other, attr)?, &attr.at),
        })
        .collect()
}

fn target_block(ctx: &Context, block: &Block) -> Result<Partial, Error> {
    let mut t = Partial {
        at: block.at.clone(),
        ..Partial::default()
    };
    for attr in &block.attrs {
        let key = attr.key.as_str();
        if matches!(key, "matrix" | "name") {
            continue;
        }
        let known = [
            "description",
            "inherits",
            "context",
            "contexts",
            "dockerfile",
            "dockerfile-inline",
            "args",
            "labels",
            "tags",
            "cache-from",
            "cache-to",
            "attest",
            "target",
            "secret",
            "ssh",
            "platforms",
            "output",
            "pull",
            "no-cache",
        ];
        if !known.contains(&key) {
            return Err(unsupported_attr(attr, "target", &block.label));
        }
        let value = eval(ctx, attr)?;
        if value.is_null() {
            continue;
        }
        match key {
            "description" => t.description = Some(string(&value, attr)?),
            "inherits" => t.inherits = strings(&value, attr)?,
            "context" => t.context = Some(string(&value, attr)?),
            "contexts" => t.contexts = string_map(&value, attr)?,
            "dockerfile" => t.dockerfile = Some(string(&value, attr)?),
            "dockerfile-inline" => t.dockerfile_inline = Some(string(&value, attr)?),
            "args" => t.args = string_map(&value, attr)?,
            "labels" => t.labels = string_map(&value, attr)?,
            "tags" => t.tags = Some(strings(&value, attr)?),
            "cache-from" => t.cache_from = Some(entries(&value, attr, cache_entry)?),
            "cache-to" => t.cache_to = Some(entries(&value, attr, cache_entry)?),
            "attest" => t.attest = Some(entries(&value, attr, attest_entry)?),
            "target" => t.target = Some(string(&value, attr)?),
            "secret" => {
                let Value::Array(items) = &value else {
                    return Err(invalid(attr, "must be a list"));
                };
                let mut secrets = Vec::new();
                for item in items {
                    let text = match item {
                        Value::Object(_) => string_map(item, attr)?
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        other => string(other, attr)?,
                    };
                    secrets.push(secret_entry(&text, &attr.at)?);
                }
                t.secret = Some(secrets);
            }
            "ssh" => t.ssh = Some(ssh_entries(&value, attr)?),
            "platforms" => t.platforms = Some(strings(&value, attr)?),
            "output" => t.output = Some(entries(&value, attr, export_entry)?),
            "pull" => t.pull = Some(boolean(&value, attr)?),
            "no-cache" => t.no_cache = Some(boolean(&value, attr)?),
            _ => return Err(unsupported_attr(attr, "target", &block.label)),
        }
    }
    Ok(t)
}

fn dedup<T: PartialEq + Clone>(items: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::new();
    items.retain(|i| {
        if seen.contains(i) {
            false
        } else {
            seen.push(i.clone());
            true
        }
    });
}

impl Partial {
    /// buildx's `Target.Merge`: maps merge key by key, `cache-from`, `secret` and `ssh` append, the
    /// other lists and the scalars are replaced when set.
    fn merge(&mut self, other: &Partial) {
        if other.description.as_ref().is_some_and(|d| !d.is_empty()) {
            self.description.clone_from(&other.description);
        }
        if other.context.is_some() {
            self.context.clone_from(&other.context);
        }
        if other.dockerfile.is_some() {
            self.dockerfile.clone_from(&other.dockerfile);
        }
        if other.dockerfile_inline.is_some() {
            self.dockerfile_inline.clone_from(&other.dockerfile_inline);
        }
        self.args.extend(other.args.clone());
        self.contexts.extend(other.contexts.clone());
        self.labels.extend(other.labels.clone());
        if other.tags.is_some() {
            self.tags.clone_from(&other.tags);
        }
        if other.target.is_some() {
            self.target.clone_from(&other.target);
        }
        if let Some(secret) = &other.secret {
            let mut all = self.secret.take().unwrap_or_default();
            all.extend(secret.iter().cloned());
            dedup(&mut all);
            self.secret = Some(all);
        }
        if let Some(ssh) = &other.ssh {
            let mut all = self.ssh.take().unwrap_or_default();
            all.extend(ssh.iter().cloned());
            dedup_ssh(&mut all);
            self.ssh = Some(all);
        }
        if other.platforms.is_some() {
            self.platforms.clone_from(&other.platforms);
        }
        if let Some(from) = &other.cache_from {
            let mut all = self.cache_from.take().unwrap_or_default();
            all.extend(from.iter().cloned());
            dedup(&mut all);
            self.cache_from = Some(all);
        }
        if other.cache_to.is_some() {
            self.cache_to.clone_from(&other.cache_to);
        }
        if let Some(attest) = &other.attest {
            let mut all = self.attest.take().unwrap_or_default();
            all.extend(attest.iter().cloned());
            self.attest = Some(one_per_type(all));
        }
        if other.output.is_some() {
            self.output.clone_from(&other.output);
        }
        if other.pull.is_some() {
            self.pull = other.pull;
        }
        if other.no_cache.is_some() {
            self.no_cache = other.no_cache;
        }
    }
}

/// One `--set` override of one target.
#[derive(Debug, Clone)]
struct Override {
    key: String,
    values: Vec<String>,
    append: bool,
}

fn set_error(text: &str, message: &str) -> Error {
    Error::Invalid {
        at: format!("--set {text}"),
        message: message.to_owned(),
    }
}

/// `--set pattern.key[.name][+]=value`, by target name, in the order given (a list key given
/// twice for a target collects both values, as buildx does).
fn overrides(config: &Config, sets: &[String]) -> Result<BTreeMap<String, Vec<Override>>, Error> {
    let mut by_target: BTreeMap<String, Vec<Override>> = BTreeMap::new();
    for text in sets {
        let (lhs, value) = match text.split_once('=') {
            Some((l, v)) => (l, Some(v)),
            None => (text.as_str(), None),
        };
        let append = lhs.ends_with('+');
        let lhs = lhs.trim_end_matches('+');
        let mut keys = lhs.splitn(3, '.');
        let (Some(pattern), Some(field)) = (keys.next(), keys.next()) else {
            return Err(set_error(text, "expected TARGET.KEY=VALUE"));
        };
        let name = keys.next();
        let list = matches!(
            field,
            "output"
                | "cache-to"
                | "cache-from"
                | "tags"
                | "platform"
                | "secrets"
                | "ssh"
                | "attest"
        );
        let keyed = matches!(field, "args" | "contexts" | "labels");
        let scalar = matches!(
            field,
            "context" | "dockerfile" | "target" | "no-cache" | "pull" | "push"
        );
        if !(list || keyed || scalar) {
            return Err(Error::Unsupported {
                at: format!("--set {text}"),
                what: format!("the key `{field}`"),
                hint: "; kiln sets context, dockerfile, target, args.NAME, contexts.NAME, \
                       labels.NAME, tags, platform, output, cache-from, cache-to, attest, secrets, ssh, \
                       no-cache, pull and push"
                    .into(),
            });
        }
        if keyed != name.is_some() {
            return Err(set_error(
                text,
                &format!(
                    "{field}: expected {}",
                    if keyed {
                        format!("{field}.NAME=VALUE")
                    } else {
                        format!("{field}=VALUE")
                    }
                ),
            ));
        }
        if append && !list {
            return Err(set_error(text, &format!("{field} takes no +=")));
        }
        let value = match value {
            Some(v) => v.to_owned(),
            // buildx reads `args.NAME` with no value from the environment.
            None if field == "args" => match name.and_then(|n| std::env::var(n).ok()) {
                Some(v) => v,
                None => continue,
            },
            None => return Err(set_error(text, "expected TARGET.KEY=VALUE")),
        };
        let key = match name {
            Some(n) => format!("{field}.{n}"),
            None => field.to_owned(),
        };
        for target in config.expand_pattern(pattern)? {
            let list_of_target = by_target.entry(target).or_default();
            match list_of_target.iter_mut().find(|o| o.key == key) {
                Some(existing) if list => {
                    existing.values.push(value.clone());
                    existing.append = append;
                }
                Some(existing) => existing.values = vec![value.clone()],
                None => list_of_target.push(Override {
                    key: key.clone(),
                    values: vec![value.clone()],
                    append,
                }),
            }
        }
    }
    Ok(by_target)
}

fn apply(t: &mut Partial, overrides: &[Override]) -> Result<(), Error> {
    for o in overrides {
        let at = format!("--set {}", o.key);
        let last = o.values.last().cloned().unwrap_or_default();
        let set_bool = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Error::Invalid {
                at: at.clone(),
                message: format!("{v:?} is not true or false"),
            }),
        };
        let (field, name) = match o.key.split_once('.') {
            Some((f, n)) => (f, Some(n)),
            None => (o.key.as_str(), None),
        };
        fn list<T>(slot: &mut Option<Vec<T>>, new: Vec<T>, append: bool) {
            match (slot.as_mut(), append) {
                (Some(old), true) => old.extend(new),
                _ => *slot = Some(new),
            }
        }
        match (field, name) {
            ("context", _) => t.context = Some(last),
            ("dockerfile", _) => t.dockerfile = Some(last),
            ("target", _) => t.target = Some(last),
            ("no-cache", _) => t.no_cache = Some(set_bool(&last)?),
            ("pull", _) => t.pull = Some(set_bool(&last)?),
            ("push", _) => set_push(t.output.get_or_insert_with(Vec::new), set_bool(&last)?),
            ("args", Some(n)) => {
                t.args.insert(n.to_owned(), last);
            }
            ("contexts", Some(n)) => {
                t.contexts.insert(n.to_owned(), last);
            }
            ("labels", Some(n)) => {
                t.labels.insert(n.to_owned(), last);
            }
            ("tags", _) => list(&mut t.tags, o.values.clone(), o.append),
            ("platform", _) => list(&mut t.platforms, o.values.clone(), o.append),
            ("output", _) => {
                let new = o
                    .values
                    .iter()
                    .map(|v| export_entry(v, &at))
                    .collect::<Result<_, _>>()?;
                list(&mut t.output, new, o.append);
            }
            ("cache-from", _) => {
                let new = o
                    .values
                    .iter()
                    .map(|v| cache_entry(v, &at))
                    .collect::<Result<_, _>>()?;
                list(&mut t.cache_from, new, o.append);
            }
            ("attest", _) => {
                let new = o
                    .values
                    .iter()
                    .map(|v| attest_entry(v, &at))
                    .collect::<Result<_, _>>()?;
                list(&mut t.attest, new, o.append);
                t.attest = t.attest.take().map(one_per_type);
            }
            ("cache-to", _) => {
                let new = o
                    .values
                    .iter()
                    .map(|v| cache_entry(v, &at))
                    .collect::<Result<_, _>>()?;
                list(&mut t.cache_to, new, o.append);
            }
            ("secrets", _) => {
                let new = o
                    .values
                    .iter()
                    .map(|v| secret_entry(v, &at))
                    .collect::<Result<_, _>>()?;
                list(&mut t.secret, new, o.append);
            }
            ("ssh", _) => {
                let new = o.values.iter().map(|v| ssh_entry(v)).collect();
                list(&mut t.ssh, new, o.append);
            }
            _ => {
                return Err(Error::Invalid {
                    at,
                    message: "unknown key".into(),
                });
            }
        }
    }
    Ok(())
}

/// `push=true` (`--push`): image outputs push, and an image output that pushes is added
/// unless an output other than docker is there; `push=false` drops registry outputs. As
/// buildx's `setPushOverride`.
fn set_push(outputs: &mut Vec<Entry>, push: bool) {
    if !push {
        outputs.retain(|o| o.get("type").map(String::as_str) != Some("registry"));
        for o in outputs.iter_mut() {
            if o.get("type").map(String::as_str) == Some("image") {
                o.insert("push".into(), "false".into());
            }
        }
        return;
    }
    let mut add = true;
    for o in outputs.iter_mut() {
        let kind = o.get("type").cloned().unwrap_or_default();
        if kind != "docker" {
            add = false;
        }
        if kind == "image" {
            o.insert("push".into(), "true".into());
        }
    }
    if add {
        outputs.push(Entry::from([
            ("type".to_owned(), "image".to_owned()),
            ("push".to_owned(), "true".to_owned()),
        ]));
    }
}

/// Go's `path.Match` for the patterns bake names use: `*`, `?` and `[…]` classes.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(b'['), Some(c)) => {
            let Some(end) = pattern.iter().position(|b| *b == b']') else {
                return false;
            };
            let class = &pattern[1..end];
            let (negate, class) = match class.first() {
                Some(b'^' | b'!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != negate && glob(&pattern[end + 1..], &name[1..])
        }
        (Some(p), Some(c)) => p == c && glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '[', ']'])
}

impl Config {
    /// A name or pattern asked for on the command line → the names it stands for.
    fn match_names(&self, pattern: &str) -> Result<Vec<String>, Error> {
        if !is_pattern(pattern) {
            return Ok(vec![pattern.to_owned()]);
        }
        let names: Vec<String> = self
            .groups
            .keys()
            .chain(self.targets.keys())
            .filter(|n| glob(pattern.as_bytes(), n.as_bytes()))
            .cloned()
            .collect();
        if names.is_empty() {
            return Err(Error::Invalid {
                at: pattern.to_owned(),
                message: "no target or group matches".into(),
            });
        }
        Ok(names)
    }

    /// A `--set` pattern → the targets it applies to (groups expanded).
    fn expand_pattern(&self, pattern: &str) -> Result<BTreeSet<String>, Error> {
        let mut out = BTreeSet::new();
        for name in self.match_names(pattern)? {
            out.extend(self.expand(&name).0);
        }
        Ok(out)
    }

    /// A name → the targets it builds and the groups met on the way (buildx's ResolveGroup).
    fn expand(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let mut targets = Vec::new();
        let mut groups = Vec::new();
        self.expand_into(name, &mut targets, &mut groups, &mut BTreeSet::new());
        (targets, groups)
    }

    fn expand_into(
        &self,
        name: &str,
        targets: &mut Vec<String>,
        groups: &mut Vec<String>,
        visited: &mut BTreeSet<String>,
    ) {
        let Some((_, group)) = self.groups.get(name) else {
            if !targets.iter().any(|t| t == name) {
                targets.push(name.to_owned());
            }
            return;
        };
        if !visited.insert(name.to_owned()) {
            return;
        }
        if !groups.iter().any(|g| g == name) {
            groups.push(name.to_owned());
        }
        for member in &group.targets {
            self.expand_into(member, targets, groups, visited);
        }
    }

    /// A target with its parents merged in and its overrides applied.
    fn resolve(
        &self,
        name: &str,
        overrides: &BTreeMap<String, Vec<Override>>,
        chain: &mut Vec<String>,
    ) -> Result<Partial, Error> {
        let Some(own) = self.targets.get(name) else {
            return Err(Error::Invalid {
                at: chain.last().map_or_else(
                    || "bake".to_owned(),
                    |child| {
                        self.targets
                            .get(child)
                            .map_or_else(|| child.clone(), |t| t.at.clone())
                    },
                ),
                message: format!("no target named {name:?}"),
            });
        };
        if chain.iter().any(|c| c == name) {
            return Err(Error::Invalid {
                at: own.at.clone(),
                message: format!("`inherits` loops: {} -> {name}", chain.join(" -> ")),
            });
        }
        chain.push(name.to_owned());
        let mut merged = Partial::default();
        for parent in &own.inherits {
            let resolved = self.resolve(parent, overrides, chain)?;
            merged.merge(&resolved);
        }
        chain.pop();
        merged.merge(own);
        merged.at.clone_from(&own.at);
        if let Some(list) = overrides.get(name) {
            apply(&mut merged, list)?;
        }
        dedup(merged.tags.get_or_insert_with(Vec::new));
        dedup(merged.platforms.get_or_insert_with(Vec::new));
        dedup(merged.cache_from.get_or_insert_with(Vec::new));
        dedup(merged.cache_to.get_or_insert_with(Vec::new));
        dedup(merged.output.get_or_insert_with(Vec::new));
        dedup(merged.secret.get_or_insert_with(Vec::new));
        dedup_ssh(merged.ssh.get_or_insert_with(Vec::new));
        merged.contexts.retain(|_, v| !v.is_empty());
        Ok(merged)
    }
}

/// buildx's defaults: context `.`, dockerfile `Dockerfile`.
fn finish(name: String, t: Partial) -> Target {
    Target {
        name,
        description: t.description.unwrap_or_default(),
        context: Some(t.context.unwrap_or_else(|| ".".to_owned())),
        contexts: t.contexts,
        dockerfile: Some(
            t.dockerfile
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "Dockerfile".to_owned()),
        ),
        dockerfile_inline: t.dockerfile_inline,
        args: t.args,
        labels: t.labels,
        tags: t.tags.unwrap_or_default(),
        cache_from: t.cache_from.unwrap_or_default(),
        cache_to: t.cache_to.unwrap_or_default(),
        attest: t.attest.unwrap_or_default(),
        target: t.target,
        secret: t.secret.unwrap_or_default(),
        ssh: t.ssh.unwrap_or_default(),
        platforms: t.platforms.unwrap_or_default(),
        output: t.output.unwrap_or_default(),
        pull: t.pull,
        no_cache: t.no_cache,
    }
}

/// Targets ordered so that each follows the targets its `target:` contexts name.
pub(crate) fn build_order(bake: &Bake) -> Result<Vec<String>, Error> {
    let mut order: Vec<String> = Vec::new();
    let mut visiting: Vec<String> = Vec::new();
    fn visit(
        bake: &Bake,
        name: &str,
        order: &mut Vec<String>,
        visiting: &mut Vec<String>,
    ) -> Result<(), Error> {
        if order.iter().any(|o| o == name) {
            return Ok(());
        }
        if visiting.iter().any(|v| v == name) {
            return Err(Error::Invalid {
                at: format!("target \"{name}\""),
                message: format!(
                    "its `target:` contexts loop: {} -> {name}",
                    visiting.join(" -> ")
                ),
            });
        }
        let target = &bake.targets[name];
        visiting.push(name.to_owned());
        for (context, dep) in target.target_contexts() {
            if !bake.targets.contains_key(dep) {
                return Err(Error::Invalid {
                    at: format!("target \"{name}\""),
                    message: format!(
                        "contexts: {context} = \"target:{dep}\" names no target being built"
                    ),
                });
            }
            visit(bake, dep, order, visiting)?;
        }
        visiting.pop();
        order.push(name.to_owned());
        Ok(())
    }
    for name in bake.targets.keys() {
        visit(bake, name, &mut order, &mut visiting)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_go_path_match() {
        assert!(glob(b"*", b"app"));
        assert!(glob(b"app-*", b"app-3-12"));
        assert!(!glob(b"app-*", b"base"));
        assert!(glob(b"a?p", b"app"));
        assert!(glob(b"[ab]ase", b"base"));
        assert!(!glob(b"[!b]ase", b"base"));
    }

    #[test]
    fn csv_fields_keep_quoted_commas() {
        assert_eq!(
            csv_fields(r#"type=local,"dest=a,b""#),
            ["type=local", "dest=a,b"]
        );
    }
}
