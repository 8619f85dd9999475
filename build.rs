//! Records the commit ftpgate is built from, for `--version` and the start-up log
//! line. Outside a git checkout (a source tarball) it says `unknown`, or whatever
//! FTPGATE_COMMIT says in the build's environment (a packager's choice).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FTPGATE_COMMIT");
    let commit = std::env::var("FTPGATE_COMMIT").ok().or_else(|| {
        // Rebuilt when HEAD moves: HEAD itself, or the branch file it points at.
        println!("cargo:rerun-if-changed=.git/HEAD");
        // A path that does not exist would make cargo run this every time: a fresh
        // clone keeps its refs in packed-refs.
        let head = std::fs::read_to_string(".git/HEAD").unwrap_or_default();
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            // The directory too: a commit in a fresh clone creates the branch's file.
            for path in [
                format!(".git/{reference}"),
                ".git/packed-refs".into(),
                ".git/refs/heads".into(),
            ] {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!(
        "cargo:rustc-env=FTPGATE_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
