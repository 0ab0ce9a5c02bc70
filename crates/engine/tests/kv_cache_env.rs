//! `GUARDREASONER_KV_CACHE=f16` (or `f32`) chooses the KV cache type for every load that leaves
//! `LoadOptions::kv_cache` unset (`None`); an explicit choice wins, either way; anything else
//! is an error naming the variable. Alone in its test binary: it sets a process-wide variable.

mod common;

use guardreasoner_engine::{Engine, KvType, LoadOptions};

#[test]
fn the_environment_variable_chooses_the_cache_type() {
    let path = common::fixtures().join("tiny-llama");
    let load = |opts: &LoadOptions| Engine::load(&path, opts);
    let kind = |opts: &LoadOptions| load(opts).unwrap().model().new_cache(4).unwrap().kv_type();
    // f16 caches are CPU only; other devices keep f32 whatever is asked.
    let f16_here = if common::on_cpu() {
        KvType::F16
    } else {
        KvType::F32
    };
    let default = common::load_options();
    std::env::remove_var("GUARDREASONER_KV_CACHE");
    assert_eq!(kind(&default), KvType::F32);
    std::env::set_var("GUARDREASONER_KV_CACHE", "f16");
    assert_eq!(kind(&default), f16_here);
    std::env::set_var("GUARDREASONER_KV_CACHE", "F32");
    assert_eq!(kind(&default), KvType::F32);
    let asked = |kv| LoadOptions {
        kv_cache: Some(kv),
        ..common::load_options()
    };
    assert_eq!(
        kind(&asked(KvType::F16)),
        f16_here,
        "an explicit option wins"
    );
    std::env::set_var("GUARDREASONER_KV_CACHE", "f16");
    assert_eq!(
        kind(&asked(KvType::F32)),
        KvType::F32,
        "an explicit f32 wins too"
    );
    std::env::set_var("GUARDREASONER_KV_CACHE", "q8");
    let err = load(&default).unwrap_err().to_string();
    assert!(
        err.contains("GUARDREASONER_KV_CACHE") && err.contains("q8"),
        "{err}"
    );
    std::env::remove_var("GUARDREASONER_KV_CACHE");
}
