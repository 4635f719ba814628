//! Compiles the BPF datapath with clang when the `bpf` feature is on.

use std::{env, path::PathBuf, process::Command};

const HELP: &str = "install the BPF toolchain: apt-get install clang llvm libbpf-dev";

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    if env::var_os("CARGO_FEATURE_BPF").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    for (src, obj) in [
        ("bpf/plinth.bpf.c", "plinth.bpf.o"),
        ("bpf/abi_layout.c", "abi_layout.o"),
    ] {
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .args(["-c", src, "-o"])
            .arg(out.join(obj))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => fail(&format!("clang failed on {src} ({s})")),
            Err(e) => fail(&format!("cannot run `{clang}`: {e}; {HELP}")),
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: plinth-policies datapath build: {msg}");
    eprintln!("hint: {HELP}, or build without the `bpf` feature");
    std::process::exit(1);
}
