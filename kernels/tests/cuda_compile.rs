//! Every kernel in kernels/cuda/*.cu compiles with NVRTC for every target
//! architecture (sm_80, sm_90a, sm_100a, sm_120a). Needs no GPU: NVRTC comes
//! from the `nvidia-cuda-nvrtc` wheel that scripts/test.sh installs into
//! target/cuda-wheels (or from `FACTORY_NVRTC_LIB`). Without NVRTC the tests say
//! SKIPPED loudly and pass, unless `FACTORY_REQUIRE_NVRTC=1` (set by
//! scripts/test.sh), where a missing NVRTC fails.
#![cfg(feature = "cuda")]

mod cuda_common;

use std::path::PathBuf;

use cuda_common::{loud, nvrtc_or_skip, nvrtc_path};
use factory_kernels::cuda::{CompileOptions, ModuleCache};
use factory_kernels::cuda_sources::{KernelSource, ALL, TARGETS};

/// ptxas's resource lines for one kernel file, condensed.
fn resource_summary(log: &str) -> (u32, Vec<String>) {
    let mut max_regs = 0;
    let mut spills = Vec::new();
    let mut current = String::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            current = line[i + 26..].split('\'').next().unwrap_or("").to_owned();
        }
        if let Some(i) = line.find("Used ") {
            let regs: u32 = line[i + 5..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            max_regs = max_regs.max(regs);
        }
        if line.contains("spill stores") && !line.contains(" 0 bytes spill stores") {
            spills.push(format!("{current}: {}", line.trim()));
        }
    }
    (max_regs, spills)
}

#[test]
fn every_kernel_compiles_for_every_target_architecture() {
    let Some(nvrtc) = nvrtc_or_skip("every_kernel_compiles_for_every_target_architecture") else {
        return;
    };
    let (major, minor) = nvrtc.version();
    eprintln!("NVRTC {major}.{minor}");
    let opts = CompileOptions {
        ptxas_verbose: true,
        ..Default::default()
    };
    let jobs: Vec<(KernelSource, _)> = ALL
        .iter()
        .flat_map(|s| TARGETS.iter().map(move |a| (*s, *a)))
        .collect();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(4))
            .map(|chunk| {
                let opts = &opts;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(src, arch)| (src.file, *arch, nvrtc.compile(src, *arch, opts)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compile thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    for (file, arch, result) in results {
        match result {
            Ok(c) => {
                assert!(
                    c.cubin.starts_with(b"\x7fELF"),
                    "{file} for {arch}: not an ELF CUBIN"
                );
                let (regs, spills) = resource_summary(&c.log);
                eprintln!(
                    "{file:<22} {arch:<8} {:>7} B CUBIN, up to {regs} registers",
                    c.cubin.len()
                );
                for s in spills {
                    eprintln!("    spill: {s}");
                }
            }
            Err(e) => failures.push(format!("{e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "kernels that do not compile:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn the_module_cache_compiles_once_and_keys_on_the_architecture() {
    let Some(nvrtc) = nvrtc_or_skip("the_module_cache_compiles_once_and_keys_on_the_architecture")
    else {
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("factory-kernel-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = ModuleCache::new(&dir);
    let opts = CompileOptions::default();
    let src = &factory_kernels::cuda_sources::EMBEDDING;
    let [a, b] = [TARGETS[0], TARGETS[1]];
    let first = cache.get_or_compile(&nvrtc, src, a, &opts).unwrap();
    let path = cache.path_for(&nvrtc, src, a, &opts);
    assert!(path.exists());
    assert_ne!(path, cache.path_for(&nvrtc, src, b, &opts));
    // A second call reads the file: overwrite it with a marked copy to prove it.
    let mut marked = first.clone();
    marked.extend_from_slice(b"cached");
    std::fs::write(&path, &marked).unwrap();
    assert_eq!(cache.get_or_compile(&nvrtc, src, a, &opts).unwrap(), marked);
    // A corrupt file is recompiled.
    std::fs::write(&path, b"garbage").unwrap();
    assert_eq!(cache.get_or_compile(&nvrtc, src, a, &opts).unwrap(), first);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With the toolkit headers of the `nvidia-cuda-runtime` wheel on the include
/// path, a source that includes cuda_bf16.h compiles (for future kernels that
/// use the toolkit's types).
#[test]
fn toolkit_headers_from_the_include_path_work() {
    let Some(nvrtc) = nvrtc_or_skip("toolkit_headers_from_the_include_path_work") else {
        return;
    };
    let include = std::env::var_os("FACTORY_CUDA_INCLUDE")
        .map(PathBuf::from)
        .or_else(|| {
            let lib = nvrtc_path()?;
            let inc = lib.parent()?.parent()?.join("include");
            inc.join("cuda_bf16.h").exists().then_some(inc)
        });
    let Some(include) = include else {
        loud("SKIPPED toolkit_headers_from_the_include_path_work: no cuda_bf16.h (set FACTORY_CUDA_INCLUDE)");
        return;
    };
    let src = KernelSource {
        file: "bf16_probe.cu",
        source: "#include <cuda_bf16.h>\nextern \"C\" __global__ void probe(__nv_bfloat16* x) { x[threadIdx.x] = __float2bfloat16(1.5f); }\n",
    };
    let opts = CompileOptions {
        include_dirs: vec![include],
        ..Default::default()
    };
    for arch in TARGETS {
        let c = nvrtc
            .compile(&src, *arch, &opts)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.cubin.starts_with(b"\x7fELF"));
    }
}
