//! License names as Debian copyright files and Python metadata write them → SPDX license
//! expressions. A name with no SPDX identifier becomes a `LicenseRef-…` whose text the SBOM
//! carries (SPDX requires it), so nothing is guessed.

/// An SPDX license expression and the `LicenseRef-` identifiers it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    /// The expression (`GPL-2.0-or-later AND (MIT OR Apache-2.0)`).
    pub expression: String,
    /// `(LicenseRef-…, the text it stands for)`.
    pub refs: Vec<(String, String)>,
}

/// SPDX identifiers that Debian and Python metadata name, with the spellings they use.
const NAMES: &[(&str, &str)] = &[
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("apache 2.0", "Apache-2.0"),
    ("apache license 2.0", "Apache-2.0"),
    ("apache license, version 2.0", "Apache-2.0"),
    ("apache software license", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2", "Artistic-2.0"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("mit license", "MIT"),
    ("isc", "ISC"),
    ("isc license (iscl)", "ISC"),
    ("zlib", "Zlib"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("mozilla public license 2.0 (mpl 2.0)", "MPL-2.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("psf", "PSF-2.0"),
    ("psf-2", "PSF-2.0"),
    ("psf-2.0", "PSF-2.0"),
    ("psfl", "PSF-2.0"),
    ("python software foundation license", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("openssl", "OpenSSL"),
    ("curl", "curl"),
    ("x11", "X11"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("wtfpl", "WTFPL"),
    ("bsl-1.0", "BSL-1.0"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("gnu general public license v2 (gplv2)", "GPL-2.0-only"),
    (
        "gnu general public license v2 or later (gplv2+)",
        "GPL-2.0-or-later",
    ),
    ("gnu general public license v3 (gplv3)", "GPL-3.0-only"),
    (
        "gnu general public license v3 or later (gplv3+)",
        "GPL-3.0-or-later",
    ),
    (
        "gnu lesser general public license v2 or later (lgplv2+)",
        "LGPL-2.0-or-later",
    ),
    (
        "gnu lesser general public license v3 (lgplv3)",
        "LGPL-3.0-only",
    ),
    (
        "gnu lesser general public license v3 or later (lgplv3+)",
        "LGPL-3.0-or-later",
    ),
];

fn spdx_id(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    NAMES
        .iter()
        .find(|(n, id)| *n == lower || id.eq_ignore_ascii_case(&lower))
        .map(|(_, id)| *id)
}

/// `LicenseRef-<name>`: SPDX allows letters, digits, `.` and `-` after the prefix.
pub fn license_ref(name: &str) -> String {
    let mut id: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    let id = id.trim_matches('-');
    format!("LicenseRef-{}", if id.is_empty() { "unnamed" } else { id })
}

/// One name, or names joined by one operator (`A or B`, `A and B`); anything else (`with`
/// exceptions, mixed operators, commas) is one LicenseRef for the whole text.
fn expression(text: &str, op_words: (&str, &str)) -> License {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut names: Vec<String> = Vec::new();
    let mut op: Option<&str> = None;
    let mut current: Vec<&str> = Vec::new();
    let mut simple = true;
    for w in &words {
        let lower = w.to_ascii_lowercase();
        let this_op = if lower == op_words.0 {
            Some("OR")
        } else if lower == op_words.1 {
            Some("AND")
        } else {
            None
        };
        match this_op {
            Some(o) => {
                if op.is_some_and(|p| p != o) || current.is_empty() {
                    simple = false;
                }
                op = Some(o);
                names.push(current.join(" "));
                current.clear();
            }
            None => current.push(w),
        }
    }
    names.push(current.join(" "));
    let ids: Vec<Option<&str>> = names.iter().map(|n| spdx_id(n)).collect();
    if simple && !names.iter().any(String::is_empty) && ids.iter().all(Option::is_some) {
        let ids: Vec<&str> = ids.into_iter().flatten().collect();
        let joined = ids.join(&format!(" {} ", op.unwrap_or("AND")));
        return License {
            expression: joined,
            refs: Vec::new(),
        };
    }
    // Names one by one where the text is a plain list, so that the known ones stay known.
    if simple && !names.iter().any(String::is_empty) {
        let mut refs = Vec::new();
        let parts: Vec<String> = names
            .iter()
            .map(|n| match spdx_id(n) {
                Some(id) => id.to_owned(),
                None => {
                    let r = license_ref(n);
                    refs.push((r.clone(), n.clone()));
                    r
                }
            })
            .collect();
        return License {
            expression: parts.join(&format!(" {} ", op.unwrap_or("AND"))),
            refs,
        };
    }
    let r = license_ref(text);
    License {
        expression: r.clone(),
        refs: vec![(r, text.to_owned())],
    }
}

/// Joins licenses that all apply.
fn all_of(parts: Vec<License>) -> License {
    let many = parts.len() > 1;
    let mut expression = Vec::new();
    let mut refs: Vec<(String, String)> = Vec::new();
    for p in parts {
        if many && p.expression.contains(' ') {
            expression.push(format!("({})", p.expression));
        } else {
            expression.push(p.expression);
        }
        for r in p.refs {
            if !refs.iter().any(|(id, _)| *id == r.0) {
                refs.push(r);
            }
        }
    }
    License {
        expression: expression.join(" AND "),
        refs,
    }
}

/// The license of a Debian package from its copyright file's `License` synopses.
pub fn from_dep5(synopses: &[String]) -> License {
    all_of(
        synopses
            .iter()
            .map(|s| expression(s, ("or", "and")))
            .collect(),
    )
}

/// The license of a Python distribution: `License-Expression` (PEP 639), else a `License`
/// that names a license, else the `License ::` classifiers (any one of them), else a
/// `License` text as a LicenseRef; `None` when the metadata says nothing.
pub fn from_python(
    expression_field: Option<&str>,
    license_field: Option<&str>,
    classifiers: &[&str],
) -> Option<License> {
    if let Some(e) = expression_field.filter(|e| !e.trim().is_empty()) {
        return Some(expression(e, ("or", "and")));
    }
    let field = license_field.map(str::trim).filter(|l| {
        !l.is_empty() && !l.eq_ignore_ascii_case("unknown") && !l.eq_ignore_ascii_case("UNKNOWN")
    });
    if let Some(l) = field
        && !l.contains('\n')
    {
        let e = expression(l, ("or", "and"));
        if e.refs.is_empty() {
            return Some(e);
        }
    }
    let from_classifiers: Vec<&str> = classifiers
        .iter()
        .filter_map(|c| c.strip_prefix("License :: "))
        .filter_map(|c| spdx_id(c.rsplit(" :: ").next().unwrap_or(c)))
        .collect();
    if !from_classifiers.is_empty() {
        let mut ids = from_classifiers;
        ids.dedup();
        return Some(License {
            expression: ids.join(" OR "),
            refs: Vec::new(),
        });
    }
    let text = field?;
    let name = text.lines().next().unwrap_or(text);
    let r = license_ref(name);
    Some(License {
        expression: r.clone(),
        refs: vec![(r, text.to_owned())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_names_map_to_spdx_ids() {
        let l = from_dep5(&["GPL-2+ or Artistic".into(), "public-domain".into()]);
        assert_eq!(
            l.expression,
            "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-public-domain"
        );
        assert_eq!(
            l.refs,
            [(
                "LicenseRef-public-domain".to_owned(),
                "public-domain".to_owned()
            )]
        );
        let l = from_dep5(&["GPL-2+ with OpenSSL exception".into()]);
        assert_eq!(l.expression, "LicenseRef-GPL-2-with-OpenSSL-exception");
    }

    #[test]
    fn python_fields_in_order() {
        assert_eq!(
            from_python(Some("MIT OR Apache-2.0"), Some("x"), &[])
                .unwrap()
                .expression,
            "MIT OR Apache-2.0"
        );
        assert_eq!(
            from_python(None, Some("BSD-3-Clause"), &[])
                .unwrap()
                .expression,
            "BSD-3-Clause"
        );
        let classifiers = [
            "License :: OSI Approved :: MIT License",
            "Programming Language :: Python",
        ];
        assert_eq!(
            from_python(None, Some("UNKNOWN"), &classifiers)
                .unwrap()
                .expression,
            "MIT"
        );
        let l = from_python(
            None,
            Some("Copyright 2010 Pallets\n\nRedistribution ..."),
            &[],
        )
        .unwrap();
        assert_eq!(l.expression, "LicenseRef-Copyright-2010-Pallets");
        assert!(from_python(None, None, &[]).is_none());
    }
}
