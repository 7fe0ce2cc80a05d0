//! `RUN --mount=type=…,target=…` specifications, parsed with BuildKit's rules.

use super::values::{csv_fields, parse_go_bool, parse_ram_bytes};
use crate::error::suggest;

/// What a `--mount` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum MountType {
    /// A directory of the build context or of another stage/image (the default).
    #[default]
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or environment variable with `env=`).
    Secret,
    /// The SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name as written in the Dockerfile.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CacheSharing {
    /// Many writers at once (the default).
    Shared,
    /// A new mount for each concurrent writer.
    Private,
    /// One writer at a time; others wait.
    Locked,
}

/// One `--mount` of a `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Mount {
    /// `type=`; bind when absent.
    pub kind: MountType,
    /// `from=`: a stage name or image to take the source from.
    pub from: Option<String>,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `target=` / `dst=` / `destination=`.
    pub target: Option<String>,
    /// `readonly` / `ro` / `rw=false`. Defaults: true for bind, secret and ssh; false for
    /// cache and tmpfs.
    pub readonly: bool,
    /// `size=` of a tmpfs in bytes.
    pub size: Option<i64>,
    /// `id=` of a cache, secret or ssh mount.
    pub id: Option<String>,
    /// `sharing=` of a cache mount.
    pub sharing: Option<CacheSharing>,
    /// `required` (secret and ssh): fail when not provided.
    pub required: bool,
    /// `env=` of a secret: expose it as this environment variable.
    pub env: Option<String>,
    /// `mode=` (octal) of a cache, secret or ssh mount.
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
}

/// A `--mount` that cannot be accepted: message and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountError {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// The hint for `--mount` errors that have no more specific one.
pub(crate) const SYNTAX_HINT: &str = "write --mount=type=bind|cache|tmpfs|secret|ssh,target=<path>[,source=…][,from=…][,id=…]; \
     mode/uid/gid only for cache, secret and ssh; size only for tmpfs; sharing only for cache";

fn err(message: impl Into<String>) -> MountError {
    MountError {
        message: message.into(),
        hint: None,
    }
}

/// Every `--mount` option key the parser accepts (aliases included).
pub const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// The checks BuildKit does when the instruction is parsed, before variables are known:
/// the value must be valid CSV and `from=` must not use a variable.
pub(crate) fn check_unexpanded(spec: &str) -> Result<(), MountError> {
    let fields = csv_fields(spec).map_err(|e| err(format!("failed to parse csv mounts: {e}")))?;
    for field in fields {
        if let Some((key, value)) = field.split_once('=')
            && key.eq_ignore_ascii_case("from")
            && let Some(i) = value.find('$')
            && i != value.len() - 1
        {
            return Err(MountError {
                message: "'from' doesn't support variable expansion, define alias stage instead"
                    .into(),
                hint: Some(
                    "add `FROM <image> AS <name>` using a global ARG, then mount with from=<name>"
                        .into(),
                ),
            });
        }
    }
    Ok(())
}

/// Parses one `--mount` value, expanding every `key=value` value with `expand`.
pub(crate) fn parse_mount(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, MountError>,
) -> Result<Mount, MountError> {
    let fields = csv_fields(spec).map_err(|e| err(format!("failed to parse csv mounts: {e}")))?;
    let mut m = Mount::default();
    let mut ro_auto = true;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        m.required = true;
                    } else {
                        return Err(err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        )));
                    }
                }
                _ => {
                    return Err(MountError {
                        message: format!("invalid field '{field}' must be a key=value pair"),
                        hint: Some(format!("write {field}=<value>")),
                    });
                }
            }
            continue;
        };
        let value = expand(value)?;
        let bad_value = |k: &str, v: &str| err(format!("invalid value for {k}: {v}"));
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let all = ["bind", "cache", "tmpfs", "secret", "ssh"];
                        return Err(MountError {
                            message: format!("unsupported mount type {value:?}"),
                            hint: Some(match suggest(&value, &all) {
                                Some(s) => format!("did you mean type={s}?"),
                                None => "use type=bind, cache, tmpfs, secret or ssh".into(),
                            }),
                        });
                    }
                };
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_go_bool(&value).ok_or_else(|| bad_value(&key, &value))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_go_bool(&value).ok_or_else(|| bad_value(&key, &value))?;
                ro_auto = false;
            }
            "required" => {
                if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    m.required = parse_go_bool(&value).ok_or_else(|| bad_value(&key, &value))?;
                } else {
                    return Err(err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
            }
            "size" => {
                if m.kind == MountType::Tmpfs {
                    m.size = Some(parse_ram_bytes(&value).map_err(|_| bad_value(&key, &value))?);
                } else {
                    return Err(err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(MountError {
                            message: format!("unsupported sharing value {value:?}"),
                            hint: Some("use sharing=shared, private or locked".into()),
                        });
                    }
                });
            }
            "mode" => {
                let mode = u32::from_str_radix(&value, 8)
                    .map_err(|_| err(format!("invalid value {value} for mode")))?;
                m.mode = Some(mode);
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| err(format!("invalid value {value} for uid")))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| err(format!("invalid value {value} for gid")))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                return Err(MountError {
                    message: format!("unexpected key '{key}' in '{field}'"),
                    hint: suggest(&key, &MOUNT_KEYS).map(|s| format!("did you mean {s}?")),
                });
            }
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(err(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    m.kind.as_str()
                )));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(err("secret mount should not have a from"));
        }
        if m.sharing.is_some() {
            return Err(err("secret mount should not define sharing"));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(MountError {
                message: "invalid secret mount. one of source, target required".into(),
                hint: Some("write e.g. --mount=type=secret,id=mytoken".into()),
            });
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(err("both source and id can't be set"));
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        )));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Mount, MountError> {
        parse_mount(s, &mut |v| Ok(v.to_string()))
    }

    #[test]
    fn mounts() {
        let m = parse("type=cache,target=/root/.cache,sharing=locked,id=pip,mode=0755,uid=1000")
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert!(!m.readonly);
        let m = parse("target=/src,rw").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(!m.readonly);
        assert!(parse("type=bind,target=/x").unwrap().readonly);
        let s = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert!(s.required && s.env.as_deref() == Some("TOKEN"));
        assert_eq!(
            parse("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
        assert!(
            parse("type=cahce")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("cache")
        );
        let message = |s| parse(s).unwrap_err().message;
        assert_eq!(
            message("type=bind,mode=0700"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            message("type=secret"),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            message("type=bind,sharing=locked"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            message("target"),
            "invalid field 'target' must be a key=value pair"
        );
        assert!(
            parse("targte=/x")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("target")
        );
        assert_eq!(
            check_unexpanded("from=$X").unwrap_err().message,
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert!(check_unexpanded("from=x$").is_ok());
    }
}
