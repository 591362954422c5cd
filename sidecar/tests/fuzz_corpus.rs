//! Replays the committed fuzz corpus (`sidecar/fuzz/corpus`) through the same
//! checks the fuzz targets make, on the stable toolchain, in every test run:
//! what the fuzzer once found stays fixed. `make fuzz` grows the corpus.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// A fuzz target's name and the check it makes on one input.
type Target = (&'static str, fn(&[u8]));

#[test]
fn every_corpus_input_passes_its_targets_checks() {
    let targets: [Target; 4] = [
        ("path_normalize", checks::path_normalize),
        ("compact_jws", checks::compact_jws),
        ("strict_json", checks::strict_json),
        ("bearer", checks::bearer),
    ];
    for (target, check) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            let data = std::fs::read(&path).expect("read");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails its check", path.display());
            inputs += 1;
        }
        assert!(inputs >= 5, "{target}: only {inputs} corpus inputs");
    }
}
