//! The rules: stable IDs, severities, one-line summaries and the doc text of
//! `kiln lint --explain ID`.

use std::fmt;

/// How bad a finding is. Ordered from the most to the least severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// A real problem: a leak, a wrong result.
    Error,
    /// Costs bytes, build time or reproducibility.
    Warning,
    /// Worth knowing; often a matter of taste.
    Info,
}

impl Severity {
    /// `error`, `warning` or `info` (SARIF's `level` uses the same words, `info` → `note`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable ID, `KL001`…; never reused.
    pub id: &'static str,
    /// Stable kebab-case name (also accepted by `# kiln-ignore=`).
    pub name: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// One line: what the rule flags.
    pub summary: &'static str,
    /// The `--explain` text: why, with a wrong and a right example.
    pub doc: &'static str,
}

/// Every rule, in ID order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "KL001",
        name: "apt-lists-not-cleaned",
        severity: Severity::Warning,
        summary: "apt-get install without removing /var/lib/apt/lists in the same RUN",
        doc: "`apt-get update` downloads the package lists into /var/lib/apt/lists (tens of MB on\n\
Debian and Ubuntu). A layer keeps every file that exists when its RUN ends, so unless the\n\
same RUN removes the lists, every image that uses this one carries them.\n\n\
Wrong:\n    RUN apt-get update && apt-get install -y --no-install-recommends python3\n\n\
Right:\n    RUN apt-get update \\\n     && apt-get install -y --no-install-recommends python3 \\\n     && rm -rf /var/lib/apt/lists/*\n\n\
A `RUN --mount=type=cache,target=/var/lib/apt` keeps the lists out of the layer as well.",
    },
    Rule {
        id: "KL002",
        name: "late-cleanup",
        severity: Severity::Warning,
        summary: "clean-up of apt lists or package caches in a later RUN than the install that wrote them",
        doc: "Each RUN is a layer, and layers only add: deleting a file in a later layer writes a\n\
whiteout that hides the file, but the bytes stay in the earlier layer and are still pulled,\n\
stored and counted. This is the seed tutorial's \"wrong practice\": the clean-up must run in\n\
the same RUN as the install. The finding points at both lines: the clean-up, and the install\n\
whose layer still holds the files.\n\n\
Wrong:\n    RUN apt-get update && apt-get install -y python3\n    RUN rm -rf /var/lib/apt/lists/*\n\n\
Right:\n    RUN apt-get update && apt-get install -y python3 \\\n     && rm -rf /var/lib/apt/lists/*\n\n\
The same holds for `apt-get clean`, /var/cache/apt, and the pip cache (~/.cache/pip).",
    },
    Rule {
        id: "KL003",
        name: "apt-install-recommends",
        severity: Severity::Info,
        summary: "apt-get install without --no-install-recommends",
        doc: "By default apt also installs every package that the requested ones merely recommend:\n\
documentation, extra tools, sometimes a compiler tool chain. In an image those are bytes\n\
nobody uses. Pass --no-install-recommends (or set APT::Install-Recommends \"false\" in\n\
/etc/apt/apt.conf.d) and name what you need.\n\n\
Wrong:\n    RUN apt-get install -y python3\n\n\
Right:\n    RUN apt-get install -y --no-install-recommends python3",
    },
    Rule {
        id: "KL004",
        name: "apt-upgrade",
        severity: Severity::Warning,
        summary: "apt-get upgrade or dist-upgrade inside an image build",
        doc: "`apt-get upgrade` rewrites packages that already sit in the base image's layers, so\n\
the upgraded files are stored twice, and the result depends on the day of the build. Update\n\
the base image instead (pull a newer tag or digest), and install only what you add.\n\n\
Wrong:\n    RUN apt-get update && apt-get -y dist-upgrade\n\n\
Right:\n    FROM debian:bookworm-20240311\n    RUN apt-get update && apt-get install -y --no-install-recommends curl \\\n     && rm -rf /var/lib/apt/lists/*",
    },
    Rule {
        id: "KL005",
        name: "pip-cache",
        severity: Severity::Warning,
        summary: "pip install without --no-cache-dir (and no PIP_NO_CACHE_DIR)",
        doc: "pip keeps every downloaded wheel in ~/.cache/pip. In an image build that cache is never\n\
used again but is committed into the layer. Pass --no-cache-dir, or set it once for the stage\n\
with `ENV PIP_NO_CACHE_DIR=1`, or use `RUN --mount=type=cache,target=/root/.cache/pip`.\n\n\
Wrong:\n    RUN pip install flask\n\n\
Right:\n    ENV PIP_NO_CACHE_DIR=1\n    RUN pip install flask",
    },
    Rule {
        id: "KL006",
        name: "consecutive-run",
        severity: Severity::Info,
        summary: "consecutive RUN instructions that could be one",
        doc: "Each RUN makes a layer. Consecutive RUNs with the same flags can be joined with `&&`:\n\
fewer layers, and a clean-up in the joined RUN really removes the files. Keep RUNs apart\n\
only when a slow, stable step should stay cached while a later one changes.\n\n\
Wrong:\n    RUN mkdir -p /app\n    RUN useradd app\n\n\
Right:\n    RUN mkdir -p /app && useradd app",
    },
    Rule {
        id: "KL007",
        name: "maintainer-deprecated",
        severity: Severity::Warning,
        summary: "MAINTAINER is deprecated; use a LABEL",
        doc: "MAINTAINER only sets the image config's `author` field and has been deprecated since\n\
Docker 1.13. Labels are what tools read.\n\n\
Wrong:\n    MAINTAINER Captain Dao <support@daocloud.io>\n\n\
Right:\n    LABEL maintainer=\"Captain Dao <support@daocloud.io>\"\n    LABEL org.opencontainers.image.authors=\"support@daocloud.io\"",
    },
    Rule {
        id: "KL008",
        name: "shell-form-cmd",
        severity: Severity::Warning,
        summary: "CMD or ENTRYPOINT in shell form",
        doc: "The shell form runs the command as `/bin/sh -c \"…\"`: the shell becomes PID 1, does not\n\
forward SIGTERM, and `docker stop` waits for the timeout and then kills. With ENTRYPOINT, the\n\
shell form also ignores the arguments of `docker run`. Use the exec (JSON) form.\n\n\
Wrong:\n    CMD bash\n\n\
Right:\n    CMD [\"bash\"]",
    },
    Rule {
        id: "KL009",
        name: "cd-in-run",
        severity: Severity::Warning,
        summary: "RUN starts with cd where WORKDIR fits",
        doc: "A `cd` lasts only until the end of its RUN, so every later step must repeat it, and a\n\
reader cannot see the working directory. WORKDIR sets it for all later instructions (and\n\
for the container), and creates the directory.\n\n\
Wrong:\n    RUN cd /app && make\n\n\
Right:\n    WORKDIR /app\n    RUN make",
    },
    Rule {
        id: "KL010",
        name: "add-instead-of-copy",
        severity: Severity::Warning,
        summary: "ADD where COPY serves (a local file that is not a tar archive)",
        doc: "ADD also fetches URLs and unpacks local tar archives, so a reader must check which of\n\
the three it does. For a plain local file or directory COPY says exactly that.\n\n\
Wrong:\n    ADD requirements.txt /app/\n\n\
Right:\n    COPY requirements.txt /app/\n    ADD rootfs.tar.gz /    # ADD is right here: it unpacks",
    },
    Rule {
        id: "KL011",
        name: "from-latest",
        severity: Severity::Warning,
        summary: "FROM without a tag, or with :latest",
        doc: "`latest` moves: the same Dockerfile builds on a different base next month, and the\n\
build cache is keyed on whatever `latest` was. Pin a tag (debian:bookworm), better a dated\n\
tag or a digest.\n\n\
Wrong:\n    FROM ubuntu\n\n\
Right:\n    FROM ubuntu:24.04",
    },
    Rule {
        id: "KL012",
        name: "secret-in-env",
        severity: Severity::Error,
        summary: "a secret-looking name (PASSWORD, SECRET, TOKEN, API_KEY, ...) in ENV or ARG",
        doc: "ENV values are stored in the image config, and ARG values in the history\n\
(`kiln history --no-trunc`, `docker history`): anyone who can pull the image reads them.\n\
Pass secrets with `RUN --mount=type=secret,id=…` and `kiln build --secret id=…,src=FILE`.\n\n\
Wrong:\n    ARG GITHUB_TOKEN\n    RUN git clone https://$GITHUB_TOKEN@github.com/org/repo\n\n\
Right:\n    RUN --mount=type=secret,id=github_token \\\n        git clone https://$(cat /run/secrets/github_token)@github.com/org/repo",
    },
    Rule {
        id: "KL013",
        name: "volatile-before-stable",
        severity: Severity::Warning,
        summary: "the whole context is copied before a package install, which then never stays cached",
        doc: "A step's cache is reused only when every step before it is. `COPY . .` changes with\n\
any edit in the context, so a package install after it runs again on every build. Put\n\
stable steps first: install system packages before copying the code, and copy only the\n\
dependency manifest (requirements.txt, package.json) before installing dependencies.\n\n\
Wrong:\n    COPY . /app\n    RUN pip install -r /app/requirements.txt\n\n\
Right:\n    COPY requirements.txt /app/\n    RUN pip install -r /app/requirements.txt\n    COPY . /app",
    },
    Rule {
        id: "KL014",
        name: "apk-cache",
        severity: Severity::Warning,
        summary: "apk add without --no-cache",
        doc: "`apk add` keeps the package index in /var/cache/apk unless told not to; that index is\n\
committed into the layer. `apk add --no-cache` fetches the index to a temporary place.\n\n\
Wrong:\n    RUN apk update && apk add python3\n\n\
Right:\n    RUN apk add --no-cache python3",
    },
    Rule {
        id: "KL015",
        name: "apt-update-alone",
        severity: Severity::Warning,
        summary: "apt-get update in a RUN that installs nothing",
        doc: "A RUN with only `apt-get update` is cached like any other step: a later change to the\n\
install line reuses the old, possibly stale lists, and the install fails or installs old\n\
versions. The lists also end up in their own layer. Update, install and clean in one RUN.\n\n\
Wrong:\n    RUN apt-get update\n    RUN apt-get install -y curl\n\n\
Right:\n    RUN apt-get update && apt-get install -y --no-install-recommends curl \\\n     && rm -rf /var/lib/apt/lists/*",
    },
];

/// The rule with this ID or name (case-insensitive): kiln's KL rules, then BuildKit's checks
/// (whose ID and name are BuildKit's name, `JSONArgsRecommended`).
///
/// ```
/// assert_eq!(kiln_lint::rule("kl002").map(|r| r.name), Some("late-cleanup"));
/// assert_eq!(kiln_lint::rule("late-cleanup").map(|r| r.id), Some("KL002"));
/// ```
pub fn rule(id_or_name: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .chain(crate::buildkit::BUILDKIT_RULES)
        .find(|r| r.id.eq_ignore_ascii_case(id_or_name) || r.name.eq_ignore_ascii_case(id_or_name))
}

pub(crate) fn get(id: &str) -> &'static Rule {
    // IDs used inside the crate are all in RULES (checked by a test).
    rule(id).unwrap_or(&RULES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ordered() {
        for pair in RULES.windows(2) {
            assert!(pair[0].id < pair[1].id);
        }
        let mut names: Vec<_> = RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
    }
}
