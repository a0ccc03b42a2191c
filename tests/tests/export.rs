//! `save` and `log` over real TCP: files go only into the node's export
//! directory, existing files are replaced only on request, and a node or
//! connection that may not write files is told why.

use std::path::Path as FsPath;

use anyhow::{ensure, Result};
use distkv_model::Value;
use distkv_node::config::ExportSettings;
use distkv_node::server::ServerOptions;
use distkv_tests::*;

/// A node whose export directory is `dir`.
async fn exporting_to(dir: &FsPath, absolute: bool) -> Result<TestNode> {
    let node = TestNode::start_with(ServerOptions {
        export: ExportSettings {
            dir: Some(dir.to_path_buf()),
            absolute,
        },
        ..ServerOptions::default()
    })
    .await?;
    node.seed(&[(path!["a"], Value::Int(1))]).await?;
    Ok(node)
}

fn name(path: &FsPath) -> Value {
    Value::str(&path.display().to_string())
}

/// `action` with `path` (and `overwrite`) must fail with an error that
/// contains `want`.
async fn refused(
    c: &mut Raw,
    action: &str,
    path: Value,
    overwrite: bool,
    want: &str,
) -> Result<()> {
    let r = c
        .call(
            action,
            vec![("path", path), ("overwrite", Value::Bool(overwrite))],
        )
        .await?;
    let e = error_text(&r)?;
    ensure!(e.contains(want), "{action}: {e:?} does not say {want:?}");
    Ok(())
}

/// `action` with `path` (and `overwrite`) must succeed.
async fn done(c: &mut Raw, action: &str, path: Value, overwrite: bool) -> Result<()> {
    let r = c
        .call_ok(
            action,
            vec![("path", path), ("overwrite", Value::Bool(overwrite))],
        )
        .await?;
    ensure!(r.get("result") == Some(&Value::Bool(true)), "{action}: {r}");
    Ok(())
}

#[tokio::test]
async fn files_are_written_only_inside_the_export_directory() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (exports, outside) = (tmp.path().join("export"), tmp.path().join("outside"));
    std::fs::create_dir(&outside)?;
    let node = exporting_to(&exports, false).await?;
    let mut c = node.raw().await?;

    done(&mut c, "save", Value::str("s.dkvsnap"), false).await?;
    done(&mut c, "save", Value::str("2024-05-01/0.dkv"), false).await?;
    done(&mut c, "save", name(&exports.join("inside.dkv")), false).await?;
    done(&mut c, "log", Value::str("changes.dkv"), false).await?;
    c.call_ok("log", vec![]).await?;
    for f in ["s.dkvsnap", "2024-05-01/0.dkv", "inside.dkv", "changes.dkv"] {
        ensure!(exports.join(f).is_file(), "{f} not written");
    }

    let escape = "save: path must stay inside the export directory";
    refused(
        &mut c,
        "save",
        Value::str("../outside/x.dkv"),
        false,
        escape,
    )
    .await?;
    refused(&mut c, "save", Value::str("sub/../../x.dkv"), false, escape).await?;
    let log_escape = "log: path must stay inside the export directory";
    refused(
        &mut c,
        "log",
        Value::str("../outside/x.dkv"),
        true,
        log_escape,
    )
    .await?;
    let absolute = "save: path must be relative to the export directory";
    refused(&mut c, "save", name(&outside.join("x.dkv")), true, absolute).await?;
    let no_file = "path must name a file";
    refused(&mut c, "save", Value::str(""), false, no_file).await?;
    refused(&mut c, "log", Value::str("sub/"), false, no_file).await?;
    refused(
        &mut c,
        "save",
        Value::Int(1),
        false,
        "field 'path' must be a file name",
    )
    .await?;
    ensure!(
        std::fs::read_dir(&outside)?.next().is_none(),
        "a file was written outside the export directory"
    );
    c.still_works().await
}

#[tokio::test]
async fn an_existing_file_is_replaced_only_with_overwrite() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = exporting_to(tmp.path(), false).await?;
    let mut c = node.raw().await?;
    let file = tmp.path().join("s.dkv");
    std::fs::write(&file, b"keep")?;

    let exists = "\"s.dkv\" exists; choose another name, or send overwrite: true";
    refused(&mut c, "save", Value::str("s.dkv"), false, exists).await?;
    refused(&mut c, "log", Value::str("s.dkv"), false, exists).await?;
    ensure!(std::fs::read(&file)? == b"keep", "the file was touched");

    done(&mut c, "log", Value::str("s.dkv"), true).await?;
    c.call_ok("log", vec![]).await?;
    ensure!(
        std::fs::read(&file)? != b"keep",
        "log did not replace the file"
    );
    done(&mut c, "save", Value::str("s.dkv"), true).await?;
    let bytes = std::fs::read(&file)?;
    ensure!((0x80..=0x8f).contains(&bytes[0]), "not DistKV's format");
    Ok(())
}

#[tokio::test]
async fn absolute_names_elsewhere_need_the_admin_setting() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = exporting_to(&tmp.path().join("export"), true).await?;
    let mut c = node.raw().await?;
    let file = tmp.path().join("elsewhere.dkvsnap");
    done(&mut c, "save", name(&file), false).await?;
    ensure!(file.is_file(), "not written");
    // `..` stays refused.
    let dotdot = tmp.path().join("export/../x.dkv");
    refused(&mut c, "save", name(&dotdot), false, "(.. is not allowed)").await
}

#[tokio::test]
async fn a_node_without_data_directory_refuses_until_one_is_configured() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let why = "this node has no data directory; set server.export.dir";
    refused(&mut c, "save", Value::str("s.dkv"), false, why).await?;
    refused(&mut c, "log", Value::str("c.dkv"), false, why).await?;
    c.still_works().await
}

#[tokio::test]
async fn a_connection_confined_by_root_may_not_write_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = exporting_to(tmp.path(), false).await?;
    let mut c = node.raw().await?;
    c.call_ok("root", vec![("path", p(path!["a"]))]).await?;
    let why = "not allowed on a connection confined by 'root'";
    refused(&mut c, "save", Value::str("s.dkv"), false, why).await?;
    refused(&mut c, "log", Value::str("c.dkv"), false, why).await?;
    let r = c.call("log", vec![]).await?;
    ensure!(error_text(&r)?.contains(why), "{r}");
    ensure!(
        std::fs::read_dir(tmp.path())?.next().is_none(),
        "a file was written"
    );
    Ok(())
}
