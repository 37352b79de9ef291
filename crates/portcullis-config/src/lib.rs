//! The Portcullis configuration: one YAML file, every key also settable by an environment
//! variable (nesting by `__`, plus the flat `OAUTH_*` dialect), every secret also readable
//! from a file (`<KEY>_FILE`), and command-line flags on top.
//!
//! Precedence, lowest first: a command's built-in defaults, the YAML file, environment
//! variables, flags. Validation collects every problem and names, for each, the key in
//! both spellings, where the value came from and how to fix it. This crate never logs
//! and never prints a secret: secrets are [`secrecy::SecretString`]s from the moment they
//! are read.
#![forbid(unsafe_code)]

mod branding;
pub mod keys;
mod model;
mod read;
mod reader;
mod tree;

use std::path::{Path, PathBuf};

pub use branding::*;
pub use ipnet::IpNet;
pub use model::*;
pub use reader::{ConfigError, ConfigErrors, parse_duration};
pub use secrecy::{ExposeSecret, SecretString};
pub use tree::Origin;
pub use url::Url;

use reader::Reader;
use tree::{Node, Suspect, Value};

/// Where configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// Environment variables (usually `std::env::vars()`); unrelated ones are ignored.
    pub env: Vec<(String, String)>,
    /// A command's own defaults (dotted key, value), below the file.
    pub defaults: Vec<(&'static str, String)>,
    /// Command-line flags (dotted key, flag name, value), above everything.
    pub flags: Vec<(&'static str, &'static str, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] tree::TreeError),
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Loads, layers and validates the configuration.
pub fn load(sources: &Sources) -> Result<Config, LoadError> {
    let mut root = Node::empty_map(Origin::Default);
    for (key, value) in &sources.defaults {
        root.set(&split(key), scalar(value, Origin::Default));
    }
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|source| tree::TreeError::Read {
            path: path.clone(),
            source,
        })?;
        root.merge(tree::parse_yaml(path, &text)?);
    }
    let mut env_errors = Vec::new();
    let suspects = overlay_env(&mut root, &sources.env, &mut env_errors);
    for (key, flag, value) in &sources.flags {
        root.set(&split(key), scalar(value, Origin::Flag(flag)));
    }
    let mut file_errors = Vec::new();
    resolve_secret_files(&mut root, &mut Vec::new(), &mut file_errors);

    let reader = Reader::new(&root);
    let config = Config::read(&reader);
    let verdict = reader.finish(&suspects);
    let mut errors = file_errors;
    errors.extend(env_errors);
    if let Err(ConfigErrors(more)) = verdict {
        // A secret whose file could not be read is already reported; do not also
        // report it as missing.
        let failed: Vec<String> = errors.iter().map(|e| e.key.clone()).collect();
        errors.extend(
            more.into_iter()
                .filter(|e| !failed.contains(&format!("{}_file", e.key))),
        );
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid(ConfigErrors(errors)))
    }
}

fn split(key: &str) -> Vec<String> {
    key.split('.').map(str::to_string).collect()
}

fn scalar(value: &str, origin: Origin) -> Node {
    Node {
        value: Value::Scalar(value.to_string()),
        origin,
    }
}

/// Applies environment variables in a stable order. Setting `X` clears `X_FILE` from an
/// earlier layer and the other way round, so the environment always wins over the file.
fn overlay_env(
    root: &mut Node,
    env: &[(String, String)],
    errors: &mut Vec<ConfigError>,
) -> Vec<Suspect> {
    let mut vars: Vec<&(String, String)> = env.iter().collect();
    vars.sort();
    let mut suspects = Vec::new();
    for (name, value) in vars {
        match tree::env_path(name, keys::top_level()) {
            // A list of mappings (`ROUTES`) is written in YAML (or JSON) in the variable.
            Ok(Some(path)) if keys::is_structured(&path.join(".")) => {
                match tree::parse_yaml_value(name, value) {
                    Ok(node) => root.set(&path, node),
                    Err(problem) => errors.push(ConfigError {
                        key: path.join("."),
                        env: name.clone(),
                        origin: Some(Origin::Env(name.clone())),
                        problem: format!("is not valid YAML or JSON: {problem}"),
                        fix: "write the list as JSON, such as [{\"match\": {\"path_prefix\": \"/\"}, \"allow\": {\"authenticated\": true}}]".into(),
                    }),
                }
            }
            Ok(Some(path)) => {
                if let Some(last) = path.last() {
                    let twin = match last.strip_suffix("_file") {
                        Some(base) => base.to_string(),
                        None => format!("{last}_file"),
                    };
                    let mut twin_path = path.clone();
                    *twin_path.last_mut().expect("path is not empty") = twin;
                    root.remove(&twin_path);
                }
                root.set(&path, scalar(value, Origin::Env(name.clone())));
            }
            Ok(None) => {}
            Err(suspect) => suspects.push(suspect),
        }
    }
    suspects
}

/// Replaces every `<secret>_file: PATH` with `<secret>: <contents of PATH>`.
fn resolve_secret_files(node: &mut Node, path: &mut Vec<String>, errors: &mut Vec<ConfigError>) {
    let Value::Map(map) = &mut node.value else {
        return;
    };
    let file_keys: Vec<String> = map
        .keys()
        .filter(|k| {
            k.strip_suffix("_file").is_some_and(|base| {
                let mut full = path.clone();
                full.push(base.to_string());
                keys::is_secret(&full.join("."))
            })
        })
        .cloned()
        .collect();
    for file_key in file_keys {
        let base = file_key.trim_end_matches("_file").to_string();
        let Some(file_node) = map.remove(&file_key) else {
            continue;
        };
        let mut key_path = path.clone();
        key_path.push(file_key.clone());
        let parts: Vec<&str> = key_path.iter().map(String::as_str).collect();
        let Value::Scalar(file_path) = &file_node.value else {
            errors.push(ConfigError {
                key: parts.join("."),
                env: tree::env_name(&parts),
                origin: Some(file_node.origin.clone()),
                problem: "must be a file path".into(),
                fix: "write the path of a file that holds the secret".into(),
            });
            continue;
        };
        if map.contains_key(&base) {
            errors.push(ConfigError {
                key: parts.join("."),
                env: tree::env_name(&parts),
                origin: Some(file_node.origin.clone()),
                problem: format!("is set together with `{base}`"),
                fix: format!("set either `{base}` or `{file_key}`, not both"),
            });
            continue;
        }
        match read_secret_file(Path::new(file_path)) {
            Ok(secret) => {
                map.insert(base, scalar(&secret, file_node.origin));
            }
            Err(e) => errors.push(ConfigError {
                key: parts.join("."),
                env: tree::env_name(&parts),
                origin: Some(file_node.origin.clone()),
                problem: format!("cannot read the secret file {file_path}: {e}"),
                fix: "check the path and that the file (for example a mounted Kubernetes secret) is readable".into(),
            }),
        }
    }
    for (key, child) in map.iter_mut() {
        path.push(key.clone());
        resolve_secret_files(child, path, errors);
        path.pop();
    }
}

/// Reads a secret file, dropping one trailing newline (as `echo` and editors add).
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let mut text = std::fs::read_to_string(path)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
