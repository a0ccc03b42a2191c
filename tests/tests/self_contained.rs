//! The checkout is self-contained: nothing in it reads or cites files that a
//! fresh clone does not have — material kept beside the repository during
//! development, absolute paths of a build machine, or section numbers of
//! specification documents that are not part of the repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Texts that point outside the repository. Built from pieces so that this
/// file does not match itself.
fn forbidden() -> Vec<String> {
    let dots = "..";
    vec![
        format!("{dots}/shared"),
        format!("{}/", "/work"),
        format!("{}/", "/root"),
        format!("{}/", "/home"),
        format!("SPEC{}core", '-'),
        format!("SPEC{}batteries", '-'),
        format!("{} §", "transcript"),
    ]
}

/// Entries that are not part of the source tree (build output, git's own
/// files — in a worktree `.git` is a file naming the main checkout).
fn skipped(name: &str) -> bool {
    name == "target" || name.starts_with('.') && name != ".ci"
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for ent in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let ty = ent.file_type()?;
        if skipped(&name) {
            continue;
        }
        if ty.is_dir() {
            walk(&ent.path(), out)?;
        } else if ty.is_file() && name != "Cargo.lock" {
            out.push(ent.path());
        }
    }
    Ok(())
}

#[test]
fn no_file_refers_outside_the_repository() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let mut files = Vec::new();
    walk(root, &mut files)?;
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let bad = forbidden();
    let mut hits = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // not text
        };
        for (n, line) in text.lines().enumerate() {
            if let Some(b) = bad.iter().find(|b| line.contains(b.as_str())) {
                let rel = f.strip_prefix(root).unwrap_or(f);
                hits.push(format!("{}:{}: {b:?} in {line:?}", rel.display(), n + 1));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "files refer outside the repository:\n{}",
        hits.join("\n")
    );
    Ok(())
}

#[test]
fn the_python_client_requirements_are_in_the_repository() -> Result<()> {
    let reqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/requirements.txt");
    let text = std::fs::read_to_string(&reqs).with_context(|| reqs.display().to_string())?;
    assert!(
        text.lines().any(|l| l.trim() == "distkv==0.63.3"),
        "{} does not pin distkv==0.63.3",
        reqs.display()
    );
    Ok(())
}
