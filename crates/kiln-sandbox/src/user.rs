//! Users and groups: resolve a docker `USER` spec against the rootfs's `/etc/passwd` and
//! `/etc/group`, with docker's (moby/sys/user `GetExecUser`) rules. Pure text in, ids out.

/// The ids the process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd` (`/` when the user is not listed).
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolve `spec` (`""`, `name`, `uid`, `uid:gid`, `name:group`, `uid:group`, `name:gid`).
///
/// `passwd` and `group` are the files' contents, `None` when the rootfs lacks them. Numeric ids
/// that are not listed are accepted (gid 0 for a bare unlisted uid); names that are not listed
/// are errors. Supplementary groups are the primary group and, when no group is given
/// explicitly, the groups that list the user.
pub fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() {
        "root"
    } else {
        user_part
    };
    let numeric_uid: Option<u32> = user_part.parse().ok();
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");

    let entry = passwd_entries(passwd).find(|e| match numeric_uid {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let (uid, mut gid, name, home) = match (&entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), e.home.to_string()),
        (None, Some(uid)) => (uid, 0, None, "/".to_string()),
        (None, None) if user_part == "root" => (0, 0, Some("root"), "/root".to_string()),
        (None, None) => {
            return Err(format!(
                "no user {user_part:?} in /etc/passwd of the rootfs"
            ));
        }
    };

    let mut groups = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            let numeric_gid: Option<u32> = g.parse().ok();
            let found = group_entries(group).find(|e| match numeric_gid {
                Some(n) => e.gid == n,
                None => e.name == g,
            });
            gid = match (found, numeric_gid) {
                (Some(e), _) => e.gid,
                (None, Some(n)) => n,
                (None, None) => return Err(format!("no group {g:?} in /etc/group of the rootfs")),
            };
        }
        _ => {
            if let Some(name) = name {
                for e in group_entries(group) {
                    if e.members.contains(&name) && !groups.contains(&e.gid) {
                        groups.push(e.gid);
                    }
                }
            }
        }
    }
    // The primary group is a supplementary group too, as runc and containerd set it since
    // CVE-2023-25173: without it, a file whose group denies access (`rwx---rwx`) is readable.
    groups.retain(|g| *g != gid);
    groups.insert(0, gid);
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        svc:x:1001:1002::/srv:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\napp:x:1000:\nstaff:x:50:app,svc\naudio:x:29:app\nsvcgrp:x:1002:\n";

    fn r(spec: &str) -> Result<ExecUser, String> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_spec_is_root() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn root_without_passwd_file() {
        let u = resolve("", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert!(resolve("root", None, None).is_ok());
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 50, 29]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn numeric_uid_listed_and_unlisted() {
        assert_eq!(r("1001").unwrap().gid, 1002);
        let u = r("4242").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.as_slice(), u.home.as_str()),
            (4242, 0, &[0][..], "/")
        );
    }

    #[test]
    fn explicit_group_by_number_and_name() {
        let u = r("1000:7").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 7));
        assert_eq!(
            u.groups,
            vec![7],
            "only the explicit group, itself included"
        );
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        let u = r("123:456").unwrap();
        assert_eq!((u.uid, u.gid), (123, 456));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(r("nobody-here").unwrap_err().contains("nobody-here"));
        assert!(r("app:nogroup").unwrap_err().contains("nogroup"));
    }
}
