//! Compiles the c10d C++ shim (`csrc/shim.cpp`) against the headers of the libtorch that tch links.
//!
//! Inputs: `LIBTORCH` (or `LIBTORCH_INCLUDE` + `LIBTORCH_LIB`), `GLOO_INCLUDE_DIR` (default `/usr/include`,
//! Debian `libgloo-dev`), `LIBTORCH_CXX11_ABI` (default 1, as torch-sys). With the `nccl` feature also
//! `CUDA_INCLUDE_DIR` (default `$CUDA_HOME/include`) and `NCCL_INCLUDE_DIR` (path lists).

use std::env;
use std::path::{Path, PathBuf};

fn env_path(name: &str) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn fail(msg: &str) -> ! {
    eprintln!("medmae-distributed build: {msg}");
    std::process::exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    let libtorch = env_path("LIBTORCH");
    let include = env_path("LIBTORCH_INCLUDE")
        .or_else(|| libtorch.as_ref().map(|p| p.join("include")))
        .unwrap_or_else(|| fail("set LIBTORCH (scripts/setup writes it into .cargo/config.toml)"));
    let lib = env_path("LIBTORCH_LIB")
        .or_else(|| libtorch.as_ref().map(|p| p.join("lib")))
        .unwrap_or_else(|| fail("set LIBTORCH or LIBTORCH_LIB"));
    let c10d = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !c10d.is_file() {
        fail(&format!(
            "{} not found: LIBTORCH must point at a torch 2.13 install with headers",
            c10d.display()
        ));
    }
    let gloo = env_path("GLOO_INCLUDE_DIR").unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/algorithm.h").is_file() {
        fail(&format!(
            "gloo headers not found in {} (install Debian libgloo-dev via scripts/setup, or set GLOO_INCLUDE_DIR)",
            gloo.display()
        ));
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .std("c++20")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .warnings(false);
    if env::var_os("CARGO_FEATURE_NCCL").is_some() {
        add_nccl(&mut build);
    }
    build.compile("medmae_c10d_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if env::var_os("CARGO_FEATURE_NCCL").is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
}

/// ProcessGroupNCCL: headers need CUDA's runtime API (plus ATen's CUDA headers: cuBLAS, cuSPARSE, cuSOLVER,
/// CCCL) and nccl.h; symbols live in libtorch_cuda. Both variables accept `:`-separated lists, because the
/// pip wheels spread the headers over several directories.
fn add_nccl(build: &mut cc::Build) {
    let list = |name: &str| env_path(name).map(|v| env::split_paths(&v).collect::<Vec<PathBuf>>());
    let cuda = list("CUDA_INCLUDE_DIR")
        .or_else(|| env_path("CUDA_HOME").map(|p| vec![p.join("include")]))
        .unwrap_or_else(|| vec![PathBuf::from("/usr/local/cuda/include")]);
    let nccl = list("NCCL_INCLUDE_DIR").unwrap_or_else(|| cuda.clone());
    for (dirs, header) in [(&cuda, "cuda_runtime_api.h"), (&nccl, "nccl.h")] {
        if !dirs.iter().any(|d| Path::new(d).join(header).is_file()) {
            fail(&format!(
                "feature nccl: {header} not found in {dirs:?} (set CUDA_INCLUDE_DIR / NCCL_INCLUDE_DIR)"
            ));
        }
    }
    build
        .includes(cuda)
        .includes(nccl)
        .define("USE_C10D_NCCL", None)
        .define("USE_CUDA", None)
        .define("MEDMAE_WITH_NCCL", None);
}
