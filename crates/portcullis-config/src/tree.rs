//! The raw configuration tree: every layer (defaults, YAML file, environment, command-line
//! flags) merged into one tree of string leaves, each remembering where it was set.
//!
//! Nothing here knows what a key means; [`crate::reader`] gives the leaves their types.
//! Keys are normalised to `snake_case` (so a YAML file's `clientId` and an environment
//! variable's `CLIENT_ID` both become `client_id`), except inside free-form maps such as
//! `auth_url_params`, whose keys are passed on to the identity provider verbatim.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a value came from, so an error can send the operator to the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A built-in default of a command (for example `portcullis dev`).
    Default,
    File {
        path: Arc<Path>,
        line: usize,
    },
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(String),
    List(Vec<Node>),
    Map(BTreeMap<String, Node>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub origin: Origin,
}

impl Node {
    pub(crate) fn empty_map(origin: Origin) -> Node {
        Node {
            value: Value::Map(BTreeMap::new()),
            origin,
        }
    }

    /// The node at `path`; a numeric segment indexes a list (`routes.0.name`).
    pub(crate) fn get(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self;
        for segment in path {
            match &node.value {
                Value::Map(map) => node = map.get(*segment)?,
                Value::List(items) => node = items.get(segment.parse::<usize>().ok()?)?,
                Value::Scalar(_) => return None,
            }
        }
        Some(node)
    }

    /// Sets `path` to `leaf`, creating maps on the way and replacing whatever was there
    /// (a later layer overrides an earlier one).
    pub(crate) fn set(&mut self, path: &[String], leaf: Node) {
        let Some((last, parents)) = path.split_last() else {
            *self = leaf;
            return;
        };
        let mut node = self;
        for segment in parents {
            if !matches!(node.value, Value::Map(_)) {
                *node = Node::empty_map(leaf.origin.clone());
            }
            let Value::Map(map) = &mut node.value else {
                unreachable!("replaced by a map just above")
            };
            node = map
                .entry(segment.clone())
                .or_insert_with(|| Node::empty_map(leaf.origin.clone()));
        }
        if !matches!(node.value, Value::Map(_)) {
            *node = Node::empty_map(leaf.origin.clone());
        }
        if let Value::Map(map) = &mut node.value {
            map.insert(last.clone(), leaf);
        }
    }

    pub(crate) fn remove(&mut self, path: &[String]) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for segment in parents {
            match &mut node.value {
                Value::Map(map) => match map.get_mut(segment) {
                    Some(child) => node = child,
                    None => return,
                },
                _ => return,
            }
        }
        if let Value::Map(map) = &mut node.value {
            map.remove(last);
        }
    }

    /// Overlays `other` onto `self`: maps merge key by key, anything else is replaced.
    pub(crate) fn merge(&mut self, other: Node) {
        match (&mut self.value, other.value) {
            (Value::Map(mine), Value::Map(theirs)) => {
                for (key, node) in theirs {
                    match mine.get_mut(&key) {
                        Some(existing) => existing.merge(node),
                        None => {
                            mine.insert(key, node);
                        }
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.origin = other.origin;
            }
        }
    }
}

/// Maps whose keys are data, not settings: their keys are kept as written.
const FREE_FORM_MAPS: &[&str] = &["auth_url_params"];

/// Maps whose keys are data when they sit under one of these keys: a route's
/// `allow.claims` and `deny.claims` name claims exactly as the provider spells them.
const FREE_FORM_UNDER: &[(&str, &[&str])] = &[("claims", &["allow", "deny"])];

/// `clientId` -> `client_id`, `discoveryURL` -> `discovery_url`, `CLIENT_ID` ->
/// `client_id`, `max-sessions` -> `max_sessions`.
pub(crate) fn normalize_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '-' || c == ' ' {
            out.push('_');
        } else if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let starts_word = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if starts_word && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(
        "cannot read the config file {path}: {source}. Fix: check the path given to --config and that the file is readable"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the config file {path} is not valid YAML: {message}. Fix: correct the YAML syntax at that line"
    )]
    Syntax { path: PathBuf, message: String },
    #[error("the config file {path} line {line}: {message}")]
    Shape {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Parses a YAML document into a tree, normalising keys and recording line numbers.
pub(crate) fn parse_yaml(path: &Path, text: &str) -> Result<Node, TreeError> {
    let path: Arc<Path> = Arc::from(path);
    let mut builder = YamlBuilder {
        path: path.clone(),
        stack: Vec::new(),
        anchors: BTreeMap::new(),
        nodes: 0,
        root: None,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, false)
        .map_err(|e| TreeError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if let Some((line, message)) = builder.error {
        return Err(TreeError::Shape {
            path: path.to_path_buf(),
            line,
            message,
        });
    }
    let origin = Origin::File { path, line: 1 };
    match builder.root {
        None => Ok(Node::empty_map(origin)),
        Some(Node {
            value: Value::Scalar(s),
            ..
        }) if s.is_empty() => Ok(Node::empty_map(origin)),
        Some(
            node @ Node {
                value: Value::Map(_),
                ..
            },
        ) => Ok(node),
        Some(other) => Err(TreeError::Shape {
            path: origin_path(&other.origin),
            line: origin_line(&other.origin),
            message: "the top level must be a mapping of settings (key: value)".into(),
        }),
    }
}

/// A YAML (or JSON) value given in an environment variable `name`, for keys whose value
/// is structured (a list of mappings).
pub(crate) fn parse_yaml_value(name: &str, text: &str) -> Result<Node, String> {
    let indented: String = text.lines().map(|l| format!("  {l}\n")).collect();
    let wrapped = format!("value:\n{indented}");
    let doc = parse_yaml(Path::new(name), &wrapped).map_err(|e| e.to_string())?;
    let Value::Map(mut map) = doc.value else {
        return Err("not a value".into());
    };
    let mut node = map.remove("value").ok_or("empty")?;
    relabel(&mut node, &Origin::Env(name.to_string()));
    Ok(node)
}

/// Marks a whole subtree as coming from `origin`.
fn relabel(node: &mut Node, origin: &Origin) {
    node.origin = origin.clone();
    match &mut node.value {
        Value::Map(map) => map.values_mut().for_each(|n| relabel(n, origin)),
        Value::List(items) => items.iter_mut().for_each(|n| relabel(n, origin)),
        Value::Scalar(_) => {}
    }
}

fn origin_path(origin: &Origin) -> PathBuf {
    match origin {
        Origin::File { path, .. } => path.to_path_buf(),
        _ => PathBuf::new(),
    }
}

fn origin_line(origin: &Origin) -> usize {
    match origin {
        Origin::File { line, .. } => *line,
        _ => 0,
    }
}

enum Frame {
    Map {
        node: Node,
        pending_key: Option<String>,
        free_form: bool,
        anchor: usize,
        /// The value count when it opened.
        started: usize,
        /// The key this map is the value of, if any.
        key: Option<String>,
    },
    List {
        node: Node,
        anchor: usize,
        started: usize,
    },
}

/// Deepest nesting of mappings and sequences a configuration file may have. Real
/// configurations are a handful of levels deep; the limit keeps every later walk of the
/// tree (merging, secrets, unknown keys, dropping it) from recursing without bound.
pub(crate) const MAX_DEPTH: usize = 32;
/// Most values (scalars, mappings, sequences, counting what aliases repeat) a
/// configuration file may expand to, so a few lines of aliases cannot grow into millions.
pub(crate) const MAX_NODES: usize = 100_000;

struct YamlBuilder {
    path: Arc<Path>,
    stack: Vec<Frame>,
    /// Each anchor's value, and how many values it holds.
    anchors: BTreeMap<usize, (Node, usize)>,
    /// Values seen so far, aliases counted by their size.
    nodes: usize,
    root: Option<Node>,
    error: Option<(usize, String)>,
}

impl YamlBuilder {
    fn origin(&self, mark: Marker) -> Origin {
        Origin::File {
            path: self.path.clone(),
            line: mark.line(),
        }
    }

    fn fail(&mut self, mark: Marker, message: &str) {
        if self.error.is_none() {
            self.error = Some((mark.line(), message.to_string()));
        }
    }

    /// Whether a map opened now is free-form: it is the value of a free-form key.
    fn opening_free_form(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Map {
                pending_key: Some(key),
                key: parent,
                ..
            }) => {
                FREE_FORM_MAPS.contains(&key.as_str())
                    || FREE_FORM_UNDER.iter().any(|(k, parents)| {
                        k == key && parent.as_deref().is_some_and(|p| parents.contains(&p))
                    })
            }
            _ => false,
        }
    }

    /// The key a value opened now will be stored under.
    fn opening_key(&self) -> Option<String> {
        match self.stack.last() {
            Some(Frame::Map { pending_key, .. }) => pending_key.clone(),
            _ => None,
        }
    }

    /// Counts `size` more values; false (and an error) past the limit.
    fn count(&mut self, size: usize, mark: Marker) -> bool {
        self.nodes = self.nodes.saturating_add(size);
        if self.nodes > MAX_NODES {
            self.fail(
                mark,
                &format!("the file expands to more than {MAX_NODES} values (aliases included); a configuration has no need for that many"),
            );
            return false;
        }
        true
    }

    fn open(&mut self, frame: Frame, mark: Marker) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                mark,
                &format!("mappings and sequences are nested more than {MAX_DEPTH} levels deep"),
            );
            return;
        }
        if self.count(1, mark) {
            self.stack.push(frame);
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize, size: usize, mark: Marker) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::List { node: list, .. }) => {
                if let Value::List(items) = &mut list.value {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: map,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        entries.insert(key, node);
                    }
                }
                None => self.fail(mark, "a mapping key must be a plain string"),
            },
        }
    }
}

impl MarkedEventReceiver for YamlBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                // A key position in a map takes the scalar as the key.
                if let Some(Frame::Map {
                    pending_key: pending @ None,
                    free_form,
                    ..
                }) = self.stack.last_mut()
                {
                    *pending = Some(if *free_form {
                        text
                    } else {
                        normalize_key(&text)
                    });
                    return;
                }
                let is_null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let node = Node {
                    value: Value::Scalar(if is_null { String::new() } else { text }),
                    origin: self.origin(mark),
                };
                if self.count(1, mark) {
                    self.push_value(node, anchor, 1, mark);
                }
            }
            Event::MappingStart(anchor, _) => {
                let free_form = self.opening_free_form();
                let key = self.opening_key();
                let node = Node::empty_map(self.origin(mark));
                let started = self.nodes;
                self.open(
                    Frame::Map {
                        node,
                        pending_key: None,
                        free_form,
                        anchor,
                        started,
                        key,
                    },
                    mark,
                );
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    value: Value::List(Vec::new()),
                    origin: self.origin(mark),
                };
                let started = self.nodes;
                self.open(
                    Frame::List {
                        node,
                        anchor,
                        started,
                    },
                    mark,
                );
            }
            Event::MappingEnd | Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Map {
                    node,
                    anchor,
                    started,
                    ..
                })
                | Some(Frame::List {
                    node,
                    anchor,
                    started,
                }) => {
                    let size = self.nodes - started;
                    self.push_value(node, anchor, size, mark)
                }
                None => self.fail(mark, "unbalanced mapping or sequence"),
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some((node, size)) => {
                    if self.count(size, mark) {
                        self.push_value(node, 0, size, mark);
                    }
                }
                None => self.fail(mark, "alias to an unknown anchor"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// The environment variables that set a key, as an operator would type them.
pub(crate) fn env_name(path: &[&str]) -> String {
    match path {
        ["oauth", rest @ ..] if !rest.is_empty() => {
            format!("OAUTH_{}", rest.join("__").to_uppercase())
        }
        _ => path.join("__").to_uppercase(),
    }
}

/// An environment variable that looks like a setting written with the wrong separator
/// (`SESSION_STORE` for `SESSION__STORE`). It is an error only if the key it would name
/// exists, which [`crate::reader::Reader::finish`] decides.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    pub env: String,
    pub path: Vec<String>,
}

/// Maps an environment variable to a tree path, or `None` when it is not a setting.
///
/// Two dialects: the flat `OAUTH_<KEY>` names (one provider) map into
/// the `oauth` section; every other setting nests by a double underscore
/// (`AUTH__OPENID_CONNECT__OKTA__CLIENT_ID`, `SESSION__STORE`).
pub(crate) fn env_path(name: &str, top_level: &[&str]) -> Result<Option<Vec<String>>, Suspect> {
    if let Some(rest) = name.strip_prefix("OAUTH_")
        && !rest.is_empty()
        && !rest.starts_with('_')
    {
        // `OAUTH_AUTH_URL_PARAMS__AUDIENCE` nests like every other variable.
        let mut path = vec!["oauth".to_string()];
        path.extend(rest.split("__").map(str::to_ascii_lowercase));
        if path.iter().any(String::is_empty) {
            return Ok(None);
        }
        return Ok(Some(path));
    }
    let segments: Vec<String> = name.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if segments.iter().any(String::is_empty) {
        return Ok(None);
    }
    if top_level.contains(&segments[0].as_str()) {
        return Ok(Some(segments));
    }
    // `SESSION_STORE`: a section name followed by a single underscore.
    let lower = name.to_ascii_lowercase();
    for section in top_level {
        if let Some(rest) = lower
            .strip_prefix(section)
            .and_then(|r| r.strip_prefix('_'))
            && !rest.is_empty()
        {
            let mut path = vec![section.to_string()];
            path.extend(rest.split("__").map(str::to_string));
            return Err(Suspect {
                env: name.to_string(),
                path,
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: &[&str] = &["oauth", "auth", "session", "listen_addr", "upstream_url"];

    #[test]
    fn normalize_key_handles_camel_upper_and_dashes() {
        assert_eq!(normalize_key("clientId"), "client_id");
        assert_eq!(normalize_key("openidConnect"), "openid_connect");
        assert_eq!(normalize_key("discoveryURL"), "discovery_url");
        assert_eq!(normalize_key("authUrlParams"), "auth_url_params");
        assert_eq!(normalize_key("client_id"), "client_id");
        assert_eq!(normalize_key("max-sessions"), "max_sessions");
        assert_eq!(normalize_key("CLIENT_ID"), "client_id");
    }

    #[test]
    fn env_path_understands_both_dialects() {
        assert_eq!(
            env_path("OAUTH_CLIENT_ID", TOP).unwrap(),
            Some(vec!["oauth".into(), "client_id".into()])
        );
        assert_eq!(
            env_path("AUTH__OPENID_CONNECT__OKTA__AUTH_URL_PARAMS__AUDIENCE", TOP).unwrap(),
            Some(
                [
                    "auth",
                    "openid_connect",
                    "okta",
                    "auth_url_params",
                    "audience"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            env_path("LISTEN_ADDR", TOP).unwrap(),
            Some(vec!["listen_addr".into()])
        );
        assert_eq!(env_path("PATH", TOP).unwrap(), None);
        assert_eq!(env_path("SESSION__", TOP).unwrap(), None);
    }

    #[test]
    fn env_path_flags_a_single_underscore_after_a_section() {
        let suspect = env_path("SESSION_STORE", TOP).unwrap_err();
        assert_eq!(
            suspect.path,
            vec!["session".to_string(), "store".to_string()]
        );
    }

    #[test]
    fn env_name_round_trips_the_dialects() {
        assert_eq!(env_name(&["oauth", "client_id"]), "OAUTH_CLIENT_ID");
        assert_eq!(
            env_name(&["session", "redis", "url"]),
            "SESSION__REDIS__URL"
        );
        assert_eq!(env_name(&["cookie_secret"]), "COOKIE_SECRET");
    }

    #[test]
    fn yaml_keys_are_normalised_but_free_form_maps_are_kept() {
        let text = "auth:\n  openidConnect:\n    okta:\n      clientId: '0123'\n      authUrlParams:\n        resourceId: x\n";
        let tree = parse_yaml(Path::new("c.yaml"), text).expect("parses");
        let id = tree
            .get(&["auth", "openid_connect", "okta", "client_id"])
            .expect("client id present");
        assert!(matches!(&id.value, Value::Scalar(s) if s == "0123"));
        assert!(matches!(id.origin, Origin::File { line: 4, .. }));
        assert!(
            tree.get(&[
                "auth",
                "openid_connect",
                "okta",
                "auth_url_params",
                "resourceId"
            ])
            .is_some()
        );
    }

    #[test]
    fn yaml_plain_numbers_keep_their_text() {
        let tree = parse_yaml(Path::new("c.yaml"), "oauth:\n  client_id: 0123\n").unwrap();
        let id = tree.get(&["oauth", "client_id"]).unwrap();
        assert!(matches!(&id.value, Value::Scalar(s) if s == "0123"));
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_refused() {
        let err = parse_yaml(Path::new("c.yaml"), "- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("must be a mapping"), "{err}");
    }

    #[test]
    fn yaml_syntax_errors_name_the_file() {
        let err = parse_yaml(Path::new("bad.yaml"), "a: [1, 2\n").unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }

    #[test]
    fn set_and_merge_overlay_layers() {
        let mut base =
            parse_yaml(Path::new("c.yaml"), "oauth:\n  client_id: a\n  scopes: x\n").unwrap();
        base.set(
            &["oauth".into(), "client_id".into()],
            Node {
                value: Value::Scalar("b".into()),
                origin: Origin::Env("OAUTH_CLIENT_ID".into()),
            },
        );
        let id = base.get(&["oauth", "client_id"]).unwrap();
        assert!(matches!(&id.value, Value::Scalar(s) if s == "b"));
        assert!(base.get(&["oauth", "scopes"]).is_some());
    }
}
