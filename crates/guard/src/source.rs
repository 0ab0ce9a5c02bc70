//! `--model`: a local Hugging Face directory, a local `.gguf` file, or a hub id
//! `org/name[@revision]` (default [`DEFAULT_MODEL`]).
//!
//! A value is a local path when it exists, starts with `.` or `/`, or ends in `.gguf`;
//! otherwise it must look like `org/name[@revision]`.

use crate::error::{GuardError, Result};
use crate::hub::{HubClient, HubConfig, HubEvent};
use std::path::PathBuf;

/// The released GuardReasoner 1B checkpoint.
pub const DEFAULT_MODEL: &str = "yueliu1999/GuardReasoner-1B";

/// A parsed `--model` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Local(PathBuf),
    Hub { repo: String, revision: String },
}

impl ModelSpec {
    pub fn parse(value: &str) -> Result<ModelSpec> {
        let path = PathBuf::from(value);
        if path.exists()
            || value.starts_with('.')
            || value.starts_with('/')
            || value.starts_with('~')
            || value.ends_with(".gguf")
        {
            return Ok(ModelSpec::Local(path));
        }
        let (repo, revision) = match value.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => {
                return Err(GuardError::Hub(format!(
                    "`{value}`: empty revision after `@`"
                )))
            }
            None => (value, "main"),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if parts.len() != 2 || !parts.iter().all(|p| valid(p)) {
            return Err(GuardError::ModelNotFound { path });
        }
        Ok(ModelSpec::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// A local path to load: the path itself, or the hub snapshot (downloaded if needed).
    pub fn resolve(
        &self,
        hub: &HubConfig,
        progress: &mut dyn FnMut(HubEvent<'_>),
    ) -> Result<PathBuf> {
        match self {
            ModelSpec::Local(path) => {
                if path.exists() {
                    Ok(path.clone())
                } else {
                    Err(GuardError::ModelNotFound { path: path.clone() })
                }
            }
            ModelSpec::Hub { repo, revision } => {
                HubClient::new(hub.clone()).snapshot(repo, revision, progress)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_ids_and_paths() {
        assert_eq!(
            ModelSpec::parse("yueliu1999/GuardReasoner-1B").unwrap(),
            ModelSpec::Hub {
                repo: "yueliu1999/GuardReasoner-1B".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSpec::parse("org/name@abc123").unwrap(),
            ModelSpec::Hub {
                repo: "org/name".into(),
                revision: "abc123".into()
            }
        );
        assert!(matches!(
            ModelSpec::parse("./m.gguf").unwrap(),
            ModelSpec::Local(_)
        ));
        assert!(matches!(
            ModelSpec::parse("x.gguf").unwrap(),
            ModelSpec::Local(_)
        ));
        assert!(ModelSpec::parse("a/b/c").is_err());
        assert!(ModelSpec::parse("org/name@").is_err());
        assert!(ModelSpec::parse("no-slash").is_err());
    }
}
