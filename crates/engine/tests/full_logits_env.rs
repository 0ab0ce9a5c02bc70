//! `GUARDREASONER_FULL_LOGITS=1` turns the greedy screen off for every load, as
//! `LoadOptions::full_logits` does. Alone in its test binary: it sets a process-wide variable.

mod common;

use guardreasoner_engine::{Engine, LoadOptions};

#[test]
fn the_environment_variable_turns_the_screen_off() {
    #[cfg(target_arch = "x86_64")]
    let screens_here = common::on_cpu()
        && (std::is_x86_feature_detected!("avx512f")
            || (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")));
    #[cfg(not(target_arch = "x86_64"))]
    let screens_here = false;
    let path = common::fixtures().join("tiny-llama");
    let load = || Engine::load(&path, &common::load_options()).unwrap();
    std::env::remove_var("GUARDREASONER_FULL_LOGITS");
    assert_eq!(load().model().has_greedy_screen(), screens_here);
    std::env::set_var("GUARDREASONER_FULL_LOGITS", "1");
    assert!(!load().model().has_greedy_screen());
    std::env::set_var("GUARDREASONER_FULL_LOGITS", "0");
    assert_eq!(load().model().has_greedy_screen(), screens_here);
    let opts = LoadOptions {
        full_logits: true,
        ..common::load_options()
    };
    assert!(!Engine::load(&path, &opts)
        .unwrap()
        .model()
        .has_greedy_screen());
    std::env::remove_var("GUARDREASONER_FULL_LOGITS");
}
