//! `COPY --chmod` / `ADD --chmod` values, in BuildKit's two notations.
//!
//! - Octal, `0` to `7777`: the mode every copied entry gets; the directories the copy creates
//!   take its permission bits.
//! - Symbolic (Dockerfile 1.14), chmod(1)'s clauses, e.g. `go-w`, `u=rwX,go=rX`, `g=u`: applied
//!   to each entry's own mode. Created directories stay 0755. BuildKit parses these with its
//!   vendored `tonistiigi/dchapes-mode` (BSD `setmode(3)` with no umask), whose rules this
//!   follows: a clause is `[ugoa]*` then one or more `[+-=]` each followed by `[rwxXst]*` or by
//!   one of `u`, `g`, `o`; clauses are joined by `,`. With no `ugoa`, all bits are meant, the
//!   umask playing no part. `X` is `x` for a directory or an entry that has an `x` bit already,
//!   with `+` and `=` (POSIX 2024); with `-` it is `x`. `s` and `t` do nothing for `o` alone.

use std::fmt;

const SET_UID: u32 = 0o4000;
const SET_GID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const USER: u32 = 0o700;
const GROUP: u32 = 0o070;
const OTHER: u32 = 0o007;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;
/// What `a` means, and what `=` clears when no class is named: not the sticky bit.
const STANDARD: u32 = SET_UID | SET_GID | USER | GROUP | OTHER;

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// `--chmod=755`.
    Octal(u32),
    /// `--chmod=u=rwX,go=rX`: the changes, applied in order.
    Symbolic(Vec<Change>),
}

/// One change of a symbolic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Clears these bits.
    Clear(u32),
    /// Sets these bits.
    Set(u32),
    /// Sets these bits if the entry is a directory or its original mode has an `x` bit.
    SetIfSearchable(u32),
    /// `g=u` and the like: copies the `from` class's three bits (as they are by then) to the
    /// classes in `to` (`u`, `g`, `o`).
    Copy {
        /// The shift of the source class: 6 for `u`, 3 for `g`, 0 for `o`.
        from: u32,
        /// Which of `u`, `g`, `o` receive the bits.
        to: [bool; 3],
        /// `=` and `-` clear first (`=` the whole class, `-` the copied bits).
        clear: bool,
        /// `=` and `+` set the copied bits.
        set: bool,
    },
}

/// Why a `--chmod` value is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodError(String);

impl fmt::Display for ChmodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChmodError {}

impl Chmod {
    /// Parses a `--chmod` value (after variable expansion), as BuildKit's dispatchCopy does.
    pub fn parse(value: &str) -> Result<Chmod, ChmodError> {
        let octal_error = || {
            // BuildKit's words, for a value that looks numeric.
            ChmodError(format!(
                "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
            ))
        };
        if value.starts_with(|c: char| c.is_ascii_digit()) {
            let mode = u32::from_str_radix(value, 8).map_err(|_| octal_error())?;
            if mode > 0o7777 {
                return Err(octal_error());
            }
            return Ok(Chmod::Octal(mode));
        }
        parse_symbolic(value.as_bytes())
            .map(Chmod::Symbolic)
            .ok_or_else(|| {
                ChmodError(format!(
                    "--chmod={value}: invalid syntax; use an octal mode (755) or chmod(1)'s \
                     symbolic clauses, [ugoa]*[+-=][rwxXst]* joined by commas (u=rwX,go=rX)"
                ))
            })
    }

    /// The mode (permission, set-id and sticky bits) of a copied entry whose own mode is
    /// `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let original = mode & 0o7777;
        let changes = match self {
            Chmod::Octal(octal) => return *octal,
            Chmod::Symbolic(changes) => changes,
        };
        let mut new = original;
        for change in changes {
            match *change {
                Change::Clear(bits) => new &= !bits,
                Change::Set(bits) => new |= bits,
                Change::SetIfSearchable(bits) => {
                    if is_dir || original & EXEC != 0 {
                        new |= bits;
                    }
                }
                Change::Copy {
                    from,
                    to,
                    clear,
                    set,
                } => {
                    let value = (new >> from) & 0o7;
                    for (receives, shift) in to.iter().zip([6, 3, 0]) {
                        if !receives {
                            continue;
                        }
                        if clear {
                            let cleared = if set { 0o7 } else { value };
                            new &= !(cleared << shift);
                        }
                        if set {
                            new |= value << shift;
                        }
                    }
                }
            }
        }
        new & 0o7777
    }

    /// The mode of a directory the copy creates: an octal value's permission bits, else
    /// 0755 (fsutil's MkdirAll takes only the octal mode).
    pub fn dir_mode(&self) -> u32 {
        match self {
            Chmod::Octal(mode) => mode & 0o777,
            Chmod::Symbolic(_) => 0o755,
        }
    }
}

/// The symbolic grammar, clause by clause; `None` on a syntax error.
fn parse_symbolic(s: &[u8]) -> Option<Vec<Change>> {
    let mut changes = Vec::new();
    let mut i = 0;
    let mut equal_done = false;
    loop {
        let mut who = 0;
        while let Some(&c) = s.get(i) {
            who |= match c {
                b'a' => STANDARD,
                b'u' => SET_UID | USER,
                b'g' => SET_GID | GROUP,
                b'o' => OTHER,
                _ => break,
            };
            i += 1;
        }
        // A clause needs an operator: `u` alone, or an empty clause after `,`, is an error.
        s.get(i)?;
        loop {
            let op = s[i];
            i += 1;
            match op {
                b'+' | b'-' => {}
                b'=' => equal_done = false,
                _ => return None,
            }
            who &= !STICKY;
            let (mut perm, mut perm_x) = (0, 0);
            loop {
                match s.get(i) {
                    Some(b'r') => perm |= READ,
                    Some(b'w') => perm |= WRITE,
                    Some(b'x') => perm |= EXEC,
                    Some(b'X') if op == b'-' => perm |= EXEC,
                    Some(b'X') => perm_x = EXEC,
                    Some(b's') => {
                        if who == 0 || who & !OTHER != 0 {
                            perm |= SET_UID | SET_GID;
                        }
                    }
                    Some(b't') => {
                        if who == 0 || who & !OTHER != 0 {
                            who |= STICKY;
                            perm |= STICKY;
                        }
                    }
                    Some(&class @ (b'u' | b'g' | b'o')) => {
                        if perm != 0 {
                            push_op(&mut changes, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            changes.push(Change::SetIfSearchable(masked(who, perm_x)));
                            perm_x = 0;
                        }
                        changes.push(copy_change(class, who, op));
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            if op == b'=' {
                                equal_done = true;
                            }
                            push_op(&mut changes, op, who, perm);
                        }
                        if perm_x != 0 {
                            changes.push(Change::SetIfSearchable(masked(who, perm_x)));
                        }
                        break;
                    }
                }
                i += 1;
            }
            match s.get(i) {
                None => return Some(changes),
                Some(b',') => {
                    i += 1;
                    break;
                }
                // Another operator for the same classes: `u+r-w`.
                Some(_) => {}
            }
        }
    }
}

/// The bits of `bits` that the classes in `who` cover; all of them when no class is named.
fn masked(who: u32, bits: u32) -> u32 {
    if who == 0 { bits } else { who & bits }
}

fn push_op(changes: &mut Vec<Change>, op: u8, who: u32, perm: u32) {
    match op {
        b'+' => changes.push(Change::Set(masked(who, perm))),
        b'-' => changes.push(Change::Clear(masked(who, perm))),
        _ => {
            changes.push(Change::Clear(if who == 0 { STANDARD } else { who }));
            changes.push(Change::Set(masked(who, perm)));
        }
    }
}

fn copy_change(class: u8, who: u32, op: u8) -> Change {
    let from = match class {
        b'u' => 6,
        b'g' => 3,
        _ => 0,
    };
    let to = if who == 0 {
        [true; 3]
    } else {
        [who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0]
    };
    Change::Copy {
        from,
        to,
        clear: op != b'+',
        set: op != b'-',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(mode: &str, on: u32, is_dir: bool) -> u32 {
        Chmod::parse(mode)
            .unwrap_or_else(|e| panic!("{mode}: {e}"))
            .apply(on, is_dir)
    }

    #[test]
    fn symbolic_modes_change_the_entrys_own_mode() {
        let cases: &[(&str, u32, bool, u32)] = &[
            ("go-w", 0o666, false, 0o644),
            ("u=rw,g=r,o=r", 0o777, false, 0o644),
            ("a+X", 0o644, false, 0o644),
            ("a+X", 0o744, false, 0o755),
            ("a+X", 0o124, true, 0o135),
            ("u+rw,g+r,o-x,o+w", 0o124, true, 0o766),
            ("u=rwX,go=rX", 0o600, true, 0o755),
            ("u=rwX,go=rX", 0o600, false, 0o644),
            ("u=rwX,go=rX", 0o700, false, 0o755),
            ("a-X", 0o755, false, 0o644),
            ("g=u", 0o640, false, 0o660),
            ("go=u-w", 0o750, false, 0o755),
            ("o=g-w", 0o671, false, 0o675),
            ("g-u", 0o674, false, 0o614),
            ("g+u", 0o604, false, 0o664),
            ("+x", 0o644, false, 0o755),
            ("=r", 0o1755, false, 0o1444),
            ("u+s,+t", 0o755, false, 0o5755),
            ("o+s", 0o755, false, 0o755),
            ("u+r-w", 0o600, false, 0o400),
            ("a=", 0o777, false, 0),
            ("go=", 0o4777, false, 0o4700),
        ];
        for (mode, on, is_dir, want) in cases {
            assert_eq!(
                apply(mode, *on, *is_dir),
                *want,
                "{mode} on {on:o} (dir: {is_dir}): got {:o}, want {want:o}",
                apply(mode, *on, *is_dir)
            );
        }
    }

    #[test]
    fn octal_modes_replace_the_mode_and_make_directories_with_it() {
        assert_eq!(Chmod::parse("0644"), Ok(Chmod::Octal(0o644)));
        assert_eq!(apply("4755", 0o600, false), 0o4755);
        assert_eq!(Chmod::Octal(0o4770).dir_mode(), 0o770);
        assert_eq!(Chmod::parse("g=u").unwrap().dir_mode(), 0o755);
    }

    #[test]
    fn bad_values_are_refused() {
        for (value, words) in [
            ("64a", "invalid chmod parameter: '64a'. it should be octal"),
            ("10000", "invalid chmod parameter: '10000'"),
            ("8", "invalid chmod parameter: '8'"),
        ] {
            let err = Chmod::parse(value).unwrap_err().to_string();
            assert!(err.starts_with(words), "{value}: {err}");
        }
        for value in [
            "", "u", "u+r,", ",u+r", "u+z", "z+r", "+1", "u+r,,g+r", "ug",
        ] {
            let err = Chmod::parse(value).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--chmod={value}: invalid syntax")),
                "{value}: {err}"
            );
        }
    }
}
