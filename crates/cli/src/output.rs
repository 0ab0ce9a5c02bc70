//! Writing to stdout without crashing on a closed pipe (`guardreasoner ... | head`).

use std::io::Write;

/// Writes `text` to stdout; a broken pipe is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
