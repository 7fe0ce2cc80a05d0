//! Test data that lives outside this repository, in `shared/` beside the clone (BuildKit's
//! conformance suites, the seed tutorial). A user's own clone has no such directory: outside
//! CI its tests say so once and pass without checking anything; with `CI=true`, or when the
//! environment variable names a directory that does not exist, they fail naming the path.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok(v) if !v.is_empty() && v != "false" && v != "0")
}

/// `$var` if set, else `shared/<default>` beside the clone; `None` (after one notice on the
/// terminal) if the default is absent outside CI, so the caller skips.
pub fn dir(var: &str, default: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(var) {
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "{var}={} is not a directory", dir.display());
        return Some(dir);
    }
    let clone_parent = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(3)
        .expect("crates/<name> sits two levels inside the clone");
    let dir = clone_parent.join("shared").join(default);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "{} is missing, and CI=true requires these tests to run; set {var} to a copy",
        dir.display()
    );
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| {
        // Straight to the terminal: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\nnote: {} not found: the tests that read it are SKIPPED (they pass without \
             checking). Set {var}=DIR to use a copy; CI=true makes this a failure.\n",
            dir.display()
        );
    });
    None
}
