//! util.cu (bias add, row gather, weight fills) on the GPU against its CPU
//! twin, bit for bit. Without a GPU: a loud SKIPPED.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::{gpu_or_skip, nvrtc_path};
use factory_kernels::cuda::{ModuleCache, Nvrtc, UtilKernels};
use factory_kernels::cuda_twin::{self as twin, bf16, to_bf16};

#[test]
fn util_kernels_match_their_twins() {
    let Some((dev, _)) = gpu_or_skip("util_kernels_match_their_twins") else {
        return;
    };
    let nvrtc = Nvrtc::load_from(nvrtc_path().as_deref()).expect("NVRTC");
    let cache = ModuleCache::new(
        std::env::temp_dir().join(format!("factory-cuda-test-util-{}", std::process::id())),
    );
    let u = UtilKernels::load(&dev, &nvrtc, &cache).expect("util.cu");
    let s = &dev.stream;

    // Bias over strided rows (a fused QKV output), padding untouched.
    let (rows, n, stride) = (5usize, 300usize, 320usize);
    let y: Vec<bf16> = to_bf16(
        &(0..rows * stride)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<_>>(),
    );
    let b = to_bf16(&(0..n).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>());
    let mut want = y.clone();
    twin::util::bias_add(&mut want, &b, rows, stride);
    let mut yd = s.clone_htod(&y).unwrap();
    u.bias_add(&mut yd, &s.clone_htod(&b).unwrap(), rows, stride)
        .unwrap();
    assert_eq!(s.clone_dtoh(&yd).unwrap(), want);

    // Gathers, with an out-of-range index giving zeros.
    let src: Vec<f32> = (0..7 * 33).map(|i| i as f32).collect();
    let idx = [6i32, 0, 3, 7, -1];
    let mut want = vec![0f32; idx.len() * 33];
    twin::util::gather_rows(&src, &idx, 33, &mut want);
    let mut dst = s.alloc_zeros::<f32>(want.len()).unwrap();
    let idx_d = s.clone_htod(&idx).unwrap();
    u.gather_rows_f32(&s.clone_htod(&src).unwrap(), &idx_d, 33, &mut dst)
        .unwrap();
    assert_eq!(s.clone_dtoh(&dst).unwrap(), want);
    let src_b = to_bf16(&src);
    let mut want_b = vec![bf16::ZERO; idx.len() * 33];
    twin::util::gather_rows(&src_b, &idx, 33, &mut want_b);
    let mut dst_b = s.alloc_zeros::<bf16>(want_b.len()).unwrap();
    u.gather_rows_bf16(&s.clone_htod(&src_b).unwrap(), &idx_d, 33, &mut dst_b)
        .unwrap();
    assert_eq!(s.clone_dtoh(&dst_b).unwrap(), want_b);

    // Fills: more elements than one grid-stride pass covers.
    let n = (1 << 16) * 256 + 12_345;
    let mut f = s.alloc_zeros::<bf16>(n).unwrap();
    u.fill_uniform(&mut f, 42, 0.05).unwrap();
    let got = s.clone_dtoh(&f).unwrap();
    let mut want = vec![bf16::ZERO; n];
    twin::util::fill_uniform(&mut want, 42, 0.05);
    assert_eq!(got, want);
    u.fill(&mut f, 1.0).unwrap();
    assert!(s.clone_dtoh(&f).unwrap().iter().all(|v| *v == bf16::ONE));
    s.synchronize().unwrap();
}
