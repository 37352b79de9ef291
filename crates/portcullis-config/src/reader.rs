//! Typed access to the raw tree. Every getter records the key as known, and every problem
//! as a [`ConfigError`] that names the key (in both its YAML and environment spelling),
//! where the bad value was set, and how to fix it. Reading never stops at the first
//! problem, so `portcullis check` can list them all.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::tree::{Node, Origin, Suspect, Value, env_name};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key in YAML spelling, dotted (`session.idle_timeout`).
    pub key: String,
    /// The key as an environment variable (`SESSION__IDLE_TIMEOUT`).
    pub env: String,
    /// Where the offending value was set; `None` when the key is missing.
    pub origin: Option<Origin>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.key, self.env)?;
        if let Some(origin) = &self.origin {
            write!(f, ", set by {origin}")?;
        }
        write!(f, ": {}. Fix: {}", self.problem, self.fix)
    }
}

/// Every problem found while reading a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the configuration has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(crate) struct Reader<'a> {
    root: &'a Node,
    /// Check every key read against the registry (off only in this module's tests,
    /// which read made-up keys).
    registered_only: bool,
    known: RefCell<BTreeSet<String>>,
    errors: RefCell<Vec<ConfigError>>,
}

fn dotted(path: &[&str]) -> String {
    path.join(".")
}

fn split(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

impl<'a> Reader<'a> {
    pub(crate) fn new(root: &'a Node) -> Self {
        Reader {
            root,
            registered_only: true,
            known: RefCell::new(BTreeSet::new()),
            errors: RefCell::new(Vec::new()),
        }
    }

    fn node(&self, key: &str) -> Option<&'a Node> {
        debug_assert!(
            !self.registered_only || crate::keys::is_known_or_section(key),
            "`{key}` is read but is not in the key registry (crates/portcullis-config/src/keys.rs)"
        );
        self.known.borrow_mut().insert(key.to_string());
        self.root.get(&split(key))
    }

    /// Marks a key as known without reading it (for keys read through another name).
    pub(crate) fn mark_known(&self, key: &str) {
        debug_assert!(
            !self.registered_only || crate::keys::is_known_or_section(key),
            "`{key}` is accepted but is not in the key registry (crates/portcullis-config/src/keys.rs)"
        );
        self.known.borrow_mut().insert(key.to_string());
    }

    /// Records a problem with `key`; `origin` is taken from the tree when the key is set.
    pub(crate) fn error(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let path = split(key);
        let origin = self.root.get(&path).map(|n| n.origin.clone());
        self.errors.borrow_mut().push(ConfigError {
            key: key.to_string(),
            env: env_name(&path),
            origin,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    pub(crate) fn is_set(&self, key: &str) -> bool {
        match self.root.get(&split(key)) {
            Some(Node {
                value: Value::Scalar(s),
                ..
            }) => !s.is_empty(),
            Some(_) => true,
            None => false,
        }
    }

    /// A scalar as text; an empty value counts as unset.
    pub(crate) fn string(&self, key: &str) -> Option<String> {
        match self.node(key) {
            None => None,
            Some(Node {
                value: Value::Scalar(s),
                ..
            }) => {
                let s = s.trim();
                (!s.is_empty()).then(|| s.to_string())
            }
            Some(_) => {
                self.error(key, "must be a single value", "write it as `key: value`");
                None
            }
        }
    }

    pub(crate) fn required_string(&self, key: &str, fix: &str) -> Option<String> {
        let value = self.string(key);
        if value.is_none() {
            self.error(key, "is missing", fix);
        }
        value
    }

    pub(crate) fn secret(&self, key: &str) -> Option<SecretString> {
        self.string(key).map(SecretString::from)
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> bool {
        match self.string(key) {
            None => default,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => {
                    self.error(
                        key,
                        format!("`{s}` is not a boolean"),
                        "write true or false",
                    );
                    default
                }
            },
        }
    }

    pub(crate) fn number(&self, key: &str, default: u64) -> u64 {
        match self.string(key) {
            None => default,
            Some(s) => match s.replace('_', "").parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    self.error(
                        key,
                        format!("`{s}` is not a whole number"),
                        "write a number such as 100000",
                    );
                    default
                }
            },
        }
    }

    pub(crate) fn duration(&self, key: &str, default: Duration) -> Duration {
        match self.string(key) {
            None => default,
            Some(s) => match parse_duration(&s) {
                Some(d) => d,
                None => {
                    self.error(
                        key,
                        format!("`{s}` is not a duration"),
                        "write a number with a unit, such as 30s, 15m, 12h or 7d (a bare number means seconds)",
                    );
                    default
                }
            },
        }
    }

    /// A list, written either as a YAML sequence or as one string separated by commas or
    /// newlines (`OAUTH_SCOPES=openid,email`, or a secret file with one item per line).
    /// Blank items are dropped.
    pub(crate) fn list(&self, key: &str) -> Option<Vec<String>> {
        let node = self.node(key)?;
        let items: Vec<String> = match &node.value {
            Value::Scalar(s) => s
                .split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            Value::List(items) => {
                let mut out = Vec::new();
                for item in items {
                    match &item.value {
                        Value::Scalar(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                        Value::Scalar(_) => {}
                        _ => self.error(
                            key,
                            "contains an item that is not a single value",
                            "write each item as a plain string",
                        ),
                    }
                }
                out
            }
            Value::Map(_) => {
                self.error(
                    key,
                    "must be a list",
                    "write a YAML list or a comma-separated string",
                );
                return None;
            }
        };
        Some(items)
    }

    pub(crate) fn url(&self, key: &str, fix: &str) -> Option<Url> {
        let s = self.string(key)?;
        match Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                self.error(
                    key,
                    format!("`{s}` is not an http(s) URL (scheme `{}`)", u.scheme()),
                    fix,
                );
                None
            }
            Err(e) => {
                self.error(key, format!("`{s}` is not a URL ({e})"), fix);
                None
            }
        }
    }

    pub(crate) fn socket_addr(&self, key: &str, default: &str) -> SocketAddr {
        let fallback: SocketAddr = default
            .parse()
            .expect("built-in default addresses are valid");
        match self.string(key) {
            None => fallback,
            Some(s) => {
                // `:8080` is a common shorthand for "all interfaces".
                let full = if s.starts_with(':') {
                    format!("0.0.0.0{s}")
                } else {
                    s.clone()
                };
                match full.parse() {
                    Ok(addr) => addr,
                    Err(_) => {
                        self.error(
                            key,
                            format!("`{s}` is not an address with a port"),
                            "write host:port with an IP address, such as 0.0.0.0:8080 or 127.0.0.1:4180",
                        );
                        fallback
                    }
                }
            }
        }
    }

    /// The child names of a map (`auth.openid_connect` -> `okta`, `google`, `flow`).
    /// How many items the list at `key` has (a list of mappings, such as `routes`);
    /// `0` when unset.
    pub(crate) fn items(&self, key: &str) -> usize {
        match self.root.get(&split(key)) {
            Some(Node {
                value: Value::List(items),
                ..
            }) => items.len(),
            Some(Node {
                value: Value::Scalar(s),
                ..
            }) if s.is_empty() => 0,
            None => 0,
            Some(_) => {
                self.error(
                    key,
                    "must be a list",
                    "write it as a YAML list, one `- ` entry per item",
                );
                0
            }
        }
    }

    pub(crate) fn keys(&self, key: &str) -> Vec<String> {
        match self.node(key) {
            Some(Node {
                value: Value::Map(map),
                ..
            }) => map.keys().cloned().collect(),
            Some(Node {
                value: Value::Scalar(s),
                ..
            }) if s.is_empty() => Vec::new(),
            None => Vec::new(),
            Some(_) => {
                self.error(
                    key,
                    "must be a mapping",
                    "write it as an indented block of `name: value` lines",
                );
                Vec::new()
            }
        }
    }

    /// A free-form map of strings (`auth_url_params`), keys as written.
    pub(crate) fn string_map(&self, key: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in self.keys(key) {
            let child = format!("{key}.{name}");
            if let Some(value) = self.string(&child) {
                out.push((name, value));
            }
        }
        out
    }

    /// Turns everything recorded into the final verdict: unknown keys and misspelled
    /// environment variables are errors too, so a typo never silently does nothing.
    pub(crate) fn finish(self, suspects: &[Suspect]) -> Result<(), ConfigErrors> {
        let known = self.known.into_inner();
        let mut errors = self.errors.into_inner();
        let mut unknown = Vec::new();
        collect_unknown(self.root, &mut Vec::new(), &known, &mut unknown);
        for (path, origin) in unknown {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let parent = dotted(&parts[..parts.len() - 1]);
            let last = parts[parts.len() - 1];
            let siblings: Vec<&str> = known
                .iter()
                .filter_map(|k| {
                    let (p, name) = k.rsplit_once('.').unwrap_or(("", k));
                    (p == parent).then_some(name)
                })
                .collect();
            let fix = match closest(last, &siblings) {
                Some(s) => format!("did you mean `{s}`? Otherwise remove it"),
                None => {
                    "remove it, or check the spelling against the configuration reference".into()
                }
            };
            errors.push(ConfigError {
                key: dotted(&parts),
                env: env_name(&parts),
                origin: Some(origin),
                problem: "is not a Portcullis setting".into(),
                fix,
            });
        }
        for suspect in suspects {
            let key = suspect.path.join(".");
            if known.contains(&key) {
                let parts: Vec<&str> = suspect.path.iter().map(String::as_str).collect();
                errors.push(ConfigError {
                    key,
                    env: env_name(&parts),
                    origin: Some(Origin::Env(suspect.env.clone())),
                    problem: format!(
                        "{} is ignored because nested keys are separated by a double underscore",
                        suspect.env
                    ),
                    fix: format!("rename it to {}", env_name(&parts)),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

fn collect_unknown(
    node: &Node,
    path: &mut Vec<String>,
    known: &BTreeSet<String>,
    out: &mut Vec<(Vec<String>, Origin)>,
) {
    let children: Vec<(String, &Node)> = match &node.value {
        Value::Map(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        // A list of mappings (`routes`): each item by its index.
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        Value::Scalar(_) => return,
    };
    for (key, child) in children {
        path.push(key);
        let dotted = path.join(".");
        let prefix = format!("{dotted}.");
        let has_known_children = known.iter().any(|k| k.starts_with(&prefix));
        if has_known_children {
            collect_unknown(child, path, known, out);
        } else if !known.contains(&dotted) {
            out.push((path.clone(), child.origin.clone()));
        }
        path.pop();
    }
}

/// The known name nearest to a misspelling, if any is close enough to suggest.
fn closest<'s>(word: &str, candidates: &[&'s str]) -> Option<&'s str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// `30s`, `15m`, `12h`, `7d`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number.parse().ok()?;
        number.clear();
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            Duration::from_millis(1)
        } else {
            match c {
                's' => Duration::from_secs(1),
                'm' => Duration::from_secs(60),
                'h' => Duration::from_secs(3600),
                'd' => Duration::from_secs(86400),
                _ => return None,
            }
        };
        total += unit.checked_mul(u32::try_from(value).ok()?)?;
        any = true;
    }
    (any && number.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::parse_yaml;
    use std::path::Path;

    /// A reader for made-up keys.
    fn unchecked(tree: &Node) -> Reader<'_> {
        Reader {
            registered_only: false,
            ..Reader::new(tree)
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5m3"), None);
    }

    #[test]
    fn a_wrong_type_names_the_key_its_origin_and_the_fix() {
        let tree = parse_yaml(Path::new("c.yaml"), "session:\n  idle_timeout: soon\n").unwrap();
        let r = unchecked(&tree);
        r.duration("session.idle_timeout", Duration::from_secs(1));
        let errors = r.finish(&[]).unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("session.idle_timeout (SESSION__IDLE_TIMEOUT)"),
            "{text}"
        );
        assert!(text.contains("c.yaml line 2"), "{text}");
        assert!(text.contains("Fix: write a number with a unit"), "{text}");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let tree = parse_yaml(Path::new("c.yaml"), "session:\n  stoer: redis\n").unwrap();
        let r = unchecked(&tree);
        r.string("session.store");
        let errors = r.finish(&[]).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].key, "session.stoer");
        assert!(
            errors.0[0].fix.contains("did you mean `store`"),
            "{:?}",
            errors.0[0]
        );
    }

    #[test]
    fn lists_accept_comma_strings_and_sequences() {
        let tree = parse_yaml(Path::new("c.yaml"), "a: 'x, y,,z'\nb: [p, q]\nc: 42\n").unwrap();
        let r = unchecked(&tree);
        assert_eq!(r.list("a").unwrap(), vec!["x", "y", "z"]);
        assert_eq!(r.list("b").unwrap(), vec!["p", "q"]);
        assert_eq!(r.list("c").unwrap(), vec!["42"]);
        assert!(r.finish(&[]).is_ok());
    }

    #[test]
    fn booleans_are_strict() {
        let tree = parse_yaml(Path::new("c.yaml"), "a: 'True'\nb: maybe\n").unwrap();
        let r = unchecked(&tree);
        assert!(r.bool("a", false));
        assert!(!r.bool("b", false));
        let errors = r.finish(&[]).unwrap_err();
        assert!(errors.0[0].problem.contains("`maybe` is not a boolean"));
    }
}
