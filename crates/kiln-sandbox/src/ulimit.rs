//! `--ulimit NAME=SOFT[:HARD]`, as docker reads it (go-units' `ParseUlimit`): a resource by its
//! docker name, a soft and a hard limit (the hard one defaults to the soft one), `-1` for
//! unlimited, and a soft limit never above the hard one.

use rustix::process::{Resource, Rlimit};

/// One resource limit of a run's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    /// The resource.
    pub resource: Resource,
    /// Soft and hard limits; `None` is unlimited.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// docker's names for the resources.
const NAMES: [(&str, Resource); 16] = [
    ("as", Resource::As),
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

impl Ulimit {
    /// Reads `NAME=SOFT[:HARD]`; the error says what is wrong, for the caller to prefix with
    /// its flag.
    pub fn parse(text: &str) -> Result<Ulimit, String> {
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| "expected NAME=SOFT[:HARD], e.g. nofile=1024:2048".to_owned())?;
        let resource = NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                format!("{name} is not a resource (they are {})", names.join(", "))
            })?;
        let (soft, hard) = values.split_once(':').unwrap_or((values, values));
        let limit = |v: &str| -> Result<Option<u64>, String> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as u64)),
                _ => Err(format!(
                    "{v:?} is not a limit (a number, or -1 for unlimited)"
                )),
            }
        };
        let (soft, hard) = (limit(soft)?, limit(hard)?);
        let above = match (soft, hard) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(s), Some(h)) => s > h,
        };
        if above {
            return Err(format!(
                "the soft limit {} is above the hard limit {}",
                show(soft),
                show(hard)
            ));
        }
        Ok(Ulimit {
            resource,
            soft,
            hard,
        })
    }

    pub(crate) fn rlimit(&self) -> Rlimit {
        Rlimit {
            current: self.soft,
            maximum: self.hard,
        }
    }
}

fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_read_as_docker_reads_them() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!(
            (u.resource, u.soft, u.hard),
            (Resource::Nofile, Some(1024), Some(2048))
        );
        let u = Ulimit::parse("core=0").unwrap();
        assert_eq!((u.soft, u.hard), (Some(0), Some(0)));
        let u = Ulimit::parse("memlock=-1:-1").unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        assert!(
            Ulimit::parse("nofile=2048:1024")
                .unwrap_err()
                .contains("above")
        );
        assert!(
            Ulimit::parse("files=1")
                .unwrap_err()
                .contains("not a resource")
        );
        assert!(Ulimit::parse("nofile").unwrap_err().contains("NAME=SOFT"));
        assert!(
            Ulimit::parse("nofile=x")
                .unwrap_err()
                .contains("not a limit")
        );
        assert!(
            Ulimit::parse("nofile=-2")
                .unwrap_err()
                .contains("not a limit")
        );
    }
}
