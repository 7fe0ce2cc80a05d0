//! `--print`: the JSON of buildx's `bake.Target` and `bake.Group`, as Go's `json.MarshalIndent`
//! writes them: struct fields in declaration order, empty ones left out, map keys sorted,
//! `<`, `>` and `&` escaped, and `${` in args and labels escaped as `$${` (buildx's
//! `Target.MarshalJSON`, so that the printed file reads back as it was).

use serde_json::{Map, Value};

use crate::{Bake, Entry, Group, Target};

pub(crate) fn print(bake: &Bake) -> String {
    let mut top = Map::new();
    if !bake.groups.is_empty() {
        let groups = bake
            .groups
            .iter()
            .map(|(name, g)| (name.clone(), group(g)))
            .collect();
        top.insert("group".into(), Value::Object(groups));
    }
    let targets = bake
        .targets
        .iter()
        .map(|(name, t)| (name.clone(), target(t)))
        .collect();
    top.insert("target".into(), Value::Object(targets));
    let text = serde_json::to_string_pretty(&Value::Object(top)).unwrap_or_default();
    // Go's encoder escapes these in strings; outside strings JSON has none of them.
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

fn group(g: &Group) -> Value {
    let mut m = Map::new();
    if !g.description.is_empty() {
        m.insert("description".into(), g.description.clone().into());
    }
    m.insert("targets".into(), strings(&g.targets));
    Value::Object(m)
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn escape(s: &str) -> String {
    s.replace("${", "$${").replace("%{", "%%{")
}

fn map(items: &std::collections::BTreeMap<String, String>, esc: bool) -> Value {
    Value::Object(
        items
            .iter()
            .map(|(k, v)| {
                let v = if esc { escape(v) } else { v.clone() };
                (k.clone(), Value::String(v))
            })
            .collect(),
    )
}

fn entries(items: &[Entry]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|e| {
                Value::Object(
                    e.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect(),
    )
}

fn target(t: &Target) -> Value {
    let mut m = Map::new();
    let mut put = |key: &str, value: Value| {
        m.insert(key.to_owned(), value);
    };
    if !t.description.is_empty() {
        put("description", t.description.clone().into());
    }
    if !t.attest.is_empty() {
        put("attest", entries(&t.attest));
    }
    if let Some(context) = &t.context {
        put("context", context.clone().into());
    }
    if !t.contexts.is_empty() {
        put("contexts", map(&t.contexts, false));
    }
    if let Some(dockerfile) = &t.dockerfile {
        put("dockerfile", dockerfile.clone().into());
    }
    if let Some(inline) = &t.dockerfile_inline {
        put("dockerfile-inline", escape(inline).into());
    }
    if !t.args.is_empty() {
        put("args", map(&t.args, true));
    }
    if !t.labels.is_empty() {
        put("labels", map(&t.labels, true));
    }
    if !t.tags.is_empty() {
        put("tags", strings(&t.tags));
    }
    if !t.cache_from.is_empty() {
        put("cache-from", entries(&t.cache_from));
    }
    if !t.cache_to.is_empty() {
        put("cache-to", entries(&t.cache_to));
    }
    if let Some(stage) = &t.target {
        put("target", stage.clone().into());
    }
    if !t.secret.is_empty() {
        let secrets = t
            .secret
            .iter()
            .map(|s| {
                let mut o = Map::new();
                if !s.id.is_empty() {
                    o.insert("id".into(), s.id.clone().into());
                }
                if let Some(src) = &s.src {
                    o.insert("src".into(), src.clone().into());
                }
                if let Some(env) = &s.env {
                    o.insert("env".into(), env.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        put("secret", Value::Array(secrets));
    }
    if !t.ssh.is_empty() {
        let ssh = t
            .ssh
            .iter()
            .map(|s| {
                let mut o = Map::new();
                if !s.id.is_empty() {
                    o.insert("id".into(), s.id.clone().into());
                }
                if !s.paths.is_empty() {
                    o.insert("paths".into(), strings(&s.paths));
                }
                Value::Object(o)
            })
            .collect();
        put("ssh", Value::Array(ssh));
    }
    if !t.platforms.is_empty() {
        put("platforms", strings(&t.platforms));
    }
    if !t.output.is_empty() {
        put("output", entries(&t.output));
    }
    if let Some(pull) = t.pull {
        put("pull", pull.into());
    }
    if let Some(no_cache) = t.no_cache {
        put("no-cache", no_cache.into());
    }
    Value::Object(m)
}
