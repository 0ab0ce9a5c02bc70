//! The library side of `guardreasoner quantize`, without the CLI crate: the scripts under
//! `scripts/engine/` use it so that they only need the engine to build.
//!
//! `cargo run --release -p guardreasoner-engine --example quantize -- HF_DIR OUT.gguf q8_0|q4_k_m|f16`

use std::path::PathBuf;

use guardreasoner_engine::{quantize_hf_dir, QuantType};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out, qtype] = args.as_slice() else {
        return Err("usage: quantize HF_DIR OUT.gguf q8_0|q4_k_m|f16".into());
    };
    let qtype: QuantType = qtype.parse()?;
    let summary = quantize_hf_dir(
        &PathBuf::from(dir),
        &PathBuf::from(out),
        qtype,
        &mut |done, total, name| eprint!("\r{done}/{total} {name:<40}"),
    )?;
    eprintln!();
    println!(
        "wrote {} ({qtype}, {:.1} MB, {} tensors) in {:.1} s",
        summary.out.display(),
        summary.bytes as f64 / 1e6,
        summary.tensors.len(),
        summary.seconds
    );
    Ok(())
}
