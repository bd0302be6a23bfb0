//! Greedy-decodes a few tokens from a model given raw token ids, printing ids,
//! naively decoded text (GGUF vocab) and timings. A developer's probe.

use std::time::Instant;

use factory_kernels::cpu::ActivationMode;
use factory_models::{open_model, KvCache, LogitsRequest, SeqInput};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: smoke MODEL [fast] IDS..."))?;
    let rest: Vec<String> = args.collect();
    let fast = rest.first().is_some_and(|a| a == "fast");
    let ids: Vec<u32> = rest.iter().filter_map(|a| a.parse().ok()).collect();
    let mode = if fast {
        ActivationMode::Fast
    } else {
        ActivationMode::Exact
    };
    let opened = open_model(std::path::Path::new(&path), mode)?;
    let vocab: Vec<String> = opened
        .gguf
        .as_ref()
        .and_then(|g| g.get("tokenizer.ggml.tokens"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|t| {
                    t.as_str()
                        .unwrap_or("?")
                        .replace('Ġ', " ")
                        .replace('Ċ', "\n")
                })
                .collect()
        })
        .unwrap_or_default();
    let m = &opened.model;
    let mut cache = KvCache::new(&m.config, 16, 64);
    let table: Vec<u32> = (0..64).collect();
    let t0 = Instant::now();
    let out = m.forward(
        &[SeqInput {
            tokens: &ids,
            start_pos: 0,
            block_table: &table,
            logits: LogitsRequest::Last,
        }],
        &mut cache,
    )?;
    let prefill = t0.elapsed();
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
            .0 as u32
    };
    let mut next = argmax(out.last(0).unwrap_or(&[]));
    let mut gen = vec![next];
    let t1 = Instant::now();
    for step in 0..31 {
        let pos = ids.len() + step;
        let out = m.forward(
            &[SeqInput {
                tokens: &[next],
                start_pos: pos,
                block_table: &table,
                logits: LogitsRequest::Last,
            }],
            &mut cache,
        )?;
        next = argmax(out.last(0).unwrap_or(&[]));
        gen.push(next);
    }
    let decode = t1.elapsed();
    println!("ids: {gen:?}");
    println!(
        "text: {}",
        gen.iter()
            .map(|&i| vocab.get(i as usize).cloned().unwrap_or_default())
            .collect::<String>()
    );
    println!(
        "prefill {} tokens: {:?}; decode 31 tokens: {:?} ({:.1} tok/s)",
        ids.len(),
        prefill,
        decode,
        31.0 / decode.as_secs_f64()
    );
    Ok(())
}
