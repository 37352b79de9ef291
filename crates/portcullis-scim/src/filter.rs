//! SCIM filters and PATCH paths (RFC 7644 §3.4.2.2 and §3.5.2), parsed into a small AST.
//!
//! Keywords, operators and attribute names are case-insensitive. Besides the RFC grammar,
//! a value path followed by a sub-attribute comparison (`emails[type eq "work"].value eq
//! "a@b.c"`), which identity providers send, is read as the equivalent value filter.
//!
//! Filters come from outside, and the parser, the SQL translation and even dropping the
//! tree are recursive: so nesting (parentheses, `not`, `[...]`) is limited to
//! [`MAX_NESTING`] levels, a filter to [`MAX_TERMS`] comparisons and [`MAX_TOKENS`]
//! tokens, all far beyond what identity providers send. Past them the answer is a 400
//! `invalidFilter`, before any recursion or database work.

use serde_json::Value;

use crate::error::ScimError;

/// `[urn:]name[.sub]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    /// The schema URN, when given (`urn:...:enterprise:2.0:User`).
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Lt,
    Ge,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Present(AttrPath),
    Compare(AttrPath, CompareOp, Value),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches `filter`, whose
    /// paths name sub-attributes.
    ValuePath(AttrPath, Box<Filter>),
}

/// A PATCH target: an attribute, optionally narrowed to the values matching a filter, and
/// optionally to one sub-attribute of those values.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter (`emails[type eq "work"].value`).
    pub sub_after_filter: Option<String>,
}

/// Deepest nesting of parentheses, `not (...)` and value filters `attr[...]`.
pub const MAX_NESTING: usize = 16;
/// Most comparisons (`attr op value`, `attr pr`) in one filter.
pub const MAX_TERMS: usize = 64;
/// Most tokens in one filter or path.
pub const MAX_TOKENS: usize = 512;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(Value),
    Open,
    Close,
    LBracket,
    RBracket,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if tokens.len() > MAX_TOKENS {
            return Err(format!("the filter has more than {MAX_TOKENS} tokens"));
        }
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '[' => {
                tokens.push(Token::LBracket);
                i += 1;
            }
            ']' => {
                tokens.push(Token::RBracket);
                i += 1;
            }
            '"' => {
                // A JSON string: find its end, honouring escapes, and let JSON decode it.
                let start = i;
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 2,
                        '"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                if !closed {
                    return Err("unterminated string".into());
                }
                let raw: String = chars[start..i].iter().collect();
                let decoded: String =
                    serde_json::from_str(&raw).map_err(|_| format!("invalid string {raw}"))?;
                tokens.push(Token::Str(decoded));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-'))
                {
                    i += 1;
                }
                let raw: String = chars[start..i].iter().collect();
                let n: Value =
                    serde_json::from_str(&raw).map_err(|_| format!("invalid number {raw}"))?;
                if !n.is_number() {
                    return Err(format!("invalid number {raw}"));
                }
                tokens.push(Token::Num(n));
            }
            // A word may start with `.` only as the sub-attribute after `]`.
            c if c.is_ascii_alphanumeric()
                || c == '$'
                || c == '_'
                || (c == '.' && tokens.last() == Some(&Token::RBracket)) =>
            {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], '$' | '_' | ':' | '.' | '-'))
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

/// Splits `urn:...:2.0:User:manager.value` or `name.givenName` into an [`AttrPath`].
pub fn parse_attr_path(text: &str) -> Result<AttrPath, String> {
    // `get`, not `[..4]`: byte 4 may fall inside a multi-byte character (found by the
    // scim_filter fuzz target: `m"l\u{789}e` panicked here).
    let (urn, rest) = if text.len() > 4
        && text
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        match text.rfind(':') {
            Some(i) if i + 1 < text.len() => (Some(text[..i].to_string()), &text[i + 1..]),
            _ => return Err(format!("{text:?} names a schema but no attribute")),
        }
    } else {
        (None, text)
    };
    let mut parts = rest.splitn(2, '.');
    let name = parts.next().unwrap_or_default().to_string();
    let sub = parts.next().map(str::to_string);
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-')
            && !s.contains('.')
    };
    if !valid(&name) || sub.as_deref().is_some_and(|s| !valid(s)) {
        return Err(format!("{text:?} is not an attribute path"));
    }
    Ok(AttrPath { urn, name, sub })
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Open parentheses, `not`s and brackets around the current position.
    depth: usize,
    /// Comparisons read so far.
    terms: usize,
}

fn keyword(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

fn compare_op(word: &str) -> Option<CompareOp> {
    Some(match word.to_ascii_lowercase().as_str() {
        "eq" => CompareOp::Eq,
        "ne" => CompareOp::Ne,
        "co" => CompareOp::Co,
        "sw" => CompareOp::Sw,
        "ew" => CompareOp::Ew,
        "gt" => CompareOp::Gt,
        "lt" => CompareOp::Lt,
        "ge" => CompareOp::Ge,
        "le" => CompareOp::Le,
        _ => return None,
    })
}

impl Parser {
    fn new(tokens: Vec<Token>) -> Self {
        Parser {
            tokens,
            pos: 0,
            depth: 0,
            terms: 0,
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Parses `or()` one nesting level deeper.
    fn nested(&mut self) -> Result<Filter, String> {
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "the filter is nested more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let inner = self.or();
        self.depth -= 1;
        inner
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while keyword(self.peek(), "or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while keyword(self.peek(), "and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if keyword(self.peek(), "not") {
            self.pos += 1;
            if self.next() != Some(Token::Open) {
                return Err("`not` must be followed by a parenthesised filter".into());
            }
            let inner = self.nested()?;
            if self.next() != Some(Token::Close) {
                return Err("missing `)`".into());
            }
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.nested()?;
            if self.next() != Some(Token::Close) {
                return Err("missing `)`".into());
            }
            return Ok(inner);
        }
        self.attr_expression()
    }

    fn attr_expression(&mut self) -> Result<Filter, String> {
        let path = match self.next() {
            Some(Token::Word(w)) => parse_attr_path(&w)?,
            other => return Err(format!("expected an attribute, found {other:?}")),
        };
        if self.peek() == Some(&Token::LBracket) {
            self.pos += 1;
            let inner = self.nested()?;
            if self.next() != Some(Token::RBracket) {
                return Err("missing `]`".into());
            }
            // `attr[filter].sub op value`, as some providers write it.
            if let Some(Token::Word(w)) = self.peek().cloned()
                && let Some(sub) = w.strip_prefix('.')
            {
                self.pos += 1;
                let sub_path = parse_attr_path(sub)?;
                let extra = self.comparison(sub_path)?;
                return Ok(Filter::ValuePath(
                    path,
                    Box::new(Filter::And(Box::new(inner), Box::new(extra))),
                ));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.comparison(path)
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter, String> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(format!("the filter has more than {MAX_TERMS} comparisons"));
        }
        let op = match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("pr") => {
                return Ok(Filter::Present(path));
            }
            Some(Token::Word(w)) => {
                compare_op(&w).ok_or_else(|| format!("unknown operator {w:?}"))?
            }
            other => return Err(format!("expected an operator, found {other:?}")),
        };
        let value = match self.next() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Num(n)) => n,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Value::Null,
            other => return Err(format!("expected a value, found {other:?}")),
        };
        Ok(Filter::Compare(path, op, value))
    }
}

/// Parses a `filter` query parameter.
pub fn parse_filter(input: &str) -> Result<Filter, ScimError> {
    let tokens = tokenize(input).map_err(ScimError::invalid_filter)?;
    if tokens.is_empty() {
        return Err(ScimError::invalid_filter("the filter is empty"));
    }
    let mut parser = Parser::new(tokens);
    let filter = parser.or().map_err(ScimError::invalid_filter)?;
    if parser.pos != parser.tokens.len() {
        return Err(ScimError::invalid_filter(
            "unexpected text after the filter",
        ));
    }
    Ok(filter)
}

/// Parses a PATCH operation's `path`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, ScimError> {
    let tokens = tokenize(input).map_err(ScimError::invalid_path)?;
    let mut parser = Parser::new(tokens);
    let attr = match parser.next() {
        Some(Token::Word(w)) => parse_attr_path(&w).map_err(ScimError::invalid_path)?,
        _ => return Err(ScimError::invalid_path(format!("{input:?} is not a path"))),
    };
    let mut filter = None;
    let mut sub_after_filter = None;
    if parser.peek() == Some(&Token::LBracket) {
        parser.pos += 1;
        filter = Some(parser.nested().map_err(ScimError::invalid_path)?);
        if parser.next() != Some(Token::RBracket) {
            return Err(ScimError::invalid_path("missing `]`"));
        }
        if let Some(Token::Word(w)) = parser.peek().cloned() {
            let sub = w
                .strip_prefix('.')
                .ok_or_else(|| ScimError::invalid_path("unexpected text after `]`"))?;
            parse_attr_path(sub).map_err(ScimError::invalid_path)?;
            sub_after_filter = Some(sub.to_string());
            parser.pos += 1;
        }
    }
    if parser.pos != parser.tokens.len() {
        return Err(ScimError::invalid_path(format!("{input:?} is not a path")));
    }
    if filter.is_some() && attr.sub.is_some() {
        return Err(ScimError::invalid_path(
            "a value filter applies to a multi-valued attribute, not a sub-attribute",
        ));
    }
    Ok(PatchPath {
        attr,
        filter,
        sub_after_filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(name: &str) -> AttrPath {
        parse_attr_path(name).unwrap()
    }

    #[test]
    fn simple_comparisons_parse_with_any_case() {
        assert_eq!(
            parse_filter(r#"userName Eq "bjensen@example.com""#).unwrap(),
            Filter::Compare(
                path("userName"),
                CompareOp::Eq,
                json!("bjensen@example.com")
            )
        );
        assert_eq!(
            parse_filter("active EQ False").unwrap(),
            Filter::Compare(path("active"), CompareOp::Eq, json!(false))
        );
        assert_eq!(
            parse_filter("title pr").unwrap(),
            Filter::Present(path("title"))
        );
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let f = parse_filter(r#"a eq "1" or b eq "2" and c eq "3""#).unwrap();
        assert!(matches!(f, Filter::Or(_, ref r) if matches!(**r, Filter::And(_, _))));
        let g = parse_filter(r#"(a eq "1" or b eq "2") and not (c eq "3")"#).unwrap();
        assert!(
            matches!(g, Filter::And(ref l, ref r) if matches!(**l, Filter::Or(_, _)) && matches!(**r, Filter::Not(_)))
        );
    }

    #[test]
    fn value_paths_and_urn_paths_parse() {
        let f = parse_filter(r#"emails[type eq "work" and value co "@example.com"]"#).unwrap();
        assert!(matches!(f, Filter::ValuePath(ref p, _) if p.name == "emails"));
        let g = parse_filter(r#"emails[type eq "work"].value eq "a@b.c""#).unwrap();
        assert!(
            matches!(g, Filter::ValuePath(_, ref inner) if matches!(**inner, Filter::And(_, _)))
        );
        let p = path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(
            p.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(p.name, "manager");
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert_eq!(path("name.givenName").sub.as_deref(), Some("givenName"));
    }

    #[test]
    fn unparsable_filters_are_invalid_filter_errors() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName zz "x""#,
            r#"userName eq "x" and"#,
            "(a eq 1",
            r#"a eq "x"#,
            "a eq 1 )",
            "emails[type eq 1",
            "a;drop table",
        ] {
            let err = parse_filter(bad).unwrap_err();
            assert_eq!(err.scim_type, Some("invalidFilter"), "{bad:?}");
            assert_eq!(err.status, 400);
        }
    }

    #[test]
    fn deep_or_long_filters_are_refused_without_recursing() {
        let deep = |n: usize| format!("{}userName eq \"x\"{}", "(".repeat(n), ")".repeat(n));
        assert!(parse_filter(&deep(MAX_NESTING)).is_ok());
        for n in [MAX_NESTING + 1, 2_000, 5_000, 100_000] {
            let err = parse_filter(&deep(n)).unwrap_err();
            assert_eq!(err.scim_type, Some("invalidFilter"), "{n}");
        }
        let nots = format!("{}a pr{}", "not (".repeat(3_000), ")".repeat(3_000));
        assert_eq!(
            parse_filter(&nots).unwrap_err().scim_type,
            Some("invalidFilter")
        );
        let terms = |n: usize| vec!["a eq \"1\""; n].join(" and ");
        assert!(parse_filter(&terms(MAX_TERMS)).is_ok());
        let err = parse_filter(&terms(1_000)).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidFilter"));
        assert_eq!(err.status, 400);
        let path = format!("emails[{}", "(".repeat(5_000));
        assert_eq!(
            parse_patch_path(&path).unwrap_err().scim_type,
            Some("invalidPath")
        );
        let brackets = format!("emails[{}type eq \"w\"{}]", "(".repeat(20), ")".repeat(20));
        assert_eq!(
            parse_patch_path(&brackets).unwrap_err().scim_type,
            Some("invalidPath")
        );
    }

    /// Found by the scim_filter fuzz target: a multi-byte character across byte 4 of an
    /// attribute path panicked (a slice inside the character) instead of being refused.
    #[test]
    fn a_multi_byte_character_at_byte_four_is_refused_not_a_panic() {
        assert!(parse_attr_path("m\"l\u{789}e").is_err());
        assert!(parse_attr_path("urn\u{e9}x:a").is_err());
        assert!(parse_filter("ml\u{789}e eq 1").is_err());
        assert!(parse_patch_path("abc\u{789}.x").is_err());
    }

    #[test]
    fn patch_paths_parse() {
        let p = parse_patch_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr.name, "emails");
        assert_eq!(p.sub_after_filter.as_deref(), Some("value"));
        let m = parse_patch_path(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#)
            .unwrap();
        assert!(m.filter.is_some() && m.sub_after_filter.is_none());
        assert!(parse_patch_path("name.givenName").unwrap().filter.is_none());
        assert!(parse_patch_path("a b").is_err());
    }
}
