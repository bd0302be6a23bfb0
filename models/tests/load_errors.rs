//! Broken model files give errors that name the file and the tensor; never a panic.

use std::path::{Path, PathBuf};

use factory_kernels::cpu::ActivationMode;
use factory_models::gguf::GgufFile;
use factory_models::open_model;
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a fixture directory with `edit` applied to its config.json.
fn edited_copy(name: &str, tag: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let src = fixture(name);
    let dst = std::env::temp_dir().join(format!("factory-load-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let cfg_path = dst.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    dst
}

fn load_err(dir: &Path) -> String {
    let e = open_model(dir, ActivationMode::Exact)
        .err()
        .expect("must fail")
        .to_string();
    let _ = std::fs::remove_dir_all(dir);
    e
}

#[test]
fn a_mis_shaped_tensor_names_the_file_and_tensor() {
    let dir = edited_copy("llama_gqa", "shape", |c| {
        c["intermediate_size"] = 100.into()
    });
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(
        e.contains(
            "tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [100, 64]"
        ),
        "{e}"
    );
}

#[test]
fn a_missing_tensor_names_the_model_and_tensor() {
    let dir = edited_copy("qwen2_bias", "missing", |c| {
        c["num_hidden_layers"] = 3.into()
    });
    let e = load_err(&dir);
    assert!(
        e.contains("missing tensor model.layers.2.input_layernorm.weight"),
        "{e}"
    );
}

#[test]
fn an_unsupported_family_is_named() {
    let dir = edited_copy("mistral", "family", |c| c["model_type"] = "gemma2".into());
    let e = load_err(&dir);
    assert!(
        e.contains("config.json") && e.contains("unsupported model_type/architecture `gemma2`"),
        "{e}"
    );
}

#[test]
fn garbage_and_truncated_gguf_files_are_clear_errors() {
    let dir = std::env::temp_dir();
    let bad = dir.join(format!("factory-bad-{}.gguf", std::process::id()));
    std::fs::write(
        &bad,
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f",
    )
    .unwrap();
    let e = open_model(&bad, ActivationMode::Exact)
        .err()
        .expect("fails")
        .to_string();
    assert!(
        e.contains(&bad.display().to_string()) && e.contains("corrupt"),
        "{e}"
    );
    std::fs::write(&bad, b"not a model at all").unwrap();
    let e = open_model(&bad, ActivationMode::Exact)
        .err()
        .expect("fails")
        .to_string();
    assert!(e.contains("expected a Hugging Face model directory"), "{e}");
    let _ = std::fs::remove_file(&bad);
}

fn small_gguf() -> Vec<u8> {
    std::fs::read(fixture("tokenizer_spm_tiny.gguf")).expect("fixture gguf")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any corruption of a real GGUF header parses or errors, never panics.
    #[test]
    fn corrupted_gguf_headers_never_panic(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8), cut in 0usize..8192) {
        let mut bytes = small_gguf();
        for (i, b) in edits {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        bytes.truncate(cut.max(4).min(bytes.len()));
        let _ = factory_models::gguf::parse(&bytes, Path::new("fuzz.gguf"));
    }
}

#[test]
fn the_tiny_gguf_fixture_parses() {
    let f = GgufFile::open(&fixture("tokenizer_spm_tiny.gguf")).expect("parses");
    assert!(f.get("tokenizer.ggml.tokens").is_some());
}
