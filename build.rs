//! Records the git revision the binary is built from (`V4TRAIN_GIT_REVISION`: the commit hash,
//! with `-dirty` when the work tree had uncommitted changes, or `unknown` outside a git
//! checkout), for the provenance every training checkpoint carries.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let rev = git(&["rev-parse", "HEAD"]).filter(|r| !r.is_empty());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let text = match rev {
        Some(r) if dirty => format!("{r}-dirty"),
        Some(r) => r,
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=V4TRAIN_GIT_REVISION={text}");
    // Re-run when HEAD moves or the index changes (commits, checkouts, staged edits).
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={git_dir}/{f}");
        }
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
