//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through
//! every target: each input once found new code paths, and must still run
//! without a panic.

use std::path::Path;

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in distkv_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no inputs", dir.display());
        for f in &files {
            let data = std::fs::read(f).expect("corpus file");
            target(&data);
        }
        eprintln!("{name}: {} inputs", files.len());
    }
}
