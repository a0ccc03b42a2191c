//! DistKV's own Python type and codec code with the real Python DistKV
//! 0.63.3 CLI (`tests/python/pycode.py`), on a node built with the
//! `python` feature and `server.scripts.lang: python`: types, their
//! examples and values, codecs and a converted user, a definition that
//! does not compile, and endless code stopped while the node serves on.
//! Only with `cargo test -p distkv-tests --features python`.

#![cfg(feature = "python")]

mod process;

use distkv_node::node::NodeBuilder;
use distkv_node::rules::code::{Lang, ScriptSettings};

#[test]
fn python_types_and_codecs_migrate_unchanged() -> anyhow::Result<()> {
    let scripts = ScriptSettings {
        lang: Lang::Python,
        ..ScriptSettings::default()
    };
    let builder = NodeBuilder::new("rust1").scripts(scripts);
    process::run_python_script(builder, "pycode.py", &[])
}
