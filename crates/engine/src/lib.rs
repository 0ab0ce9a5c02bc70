//! LLaMA 3.x inference engine for GuardReasoner checkpoints (placeholder; being built).
