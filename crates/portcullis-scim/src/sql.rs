//! SCIM filters as SQL, for SQLite and PostgreSQL.
//!
//! Values from a filter are only ever bound as parameters. Attribute names are resolved
//! against the static schema first, and only the declared spelling (never the client's
//! text) reaches the SQL string, so nothing a client sends becomes SQL syntax.
//!
//! Indexed columns serve the filters clients use to find resources (`id`, `userName`,
//! `externalId`, emails, group `displayName`, `members`); any other declared attribute is
//! read from the stored JSON document.

use serde_json::Value;

use crate::error::ScimError;
use crate::filter::{AttrPath, CompareOp, Filter};
use crate::resource::attributes_for;
use crate::schema::{self, Attribute, Kind, ResourceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// SQL text with its parameters, built for one dialect.
#[derive(Debug)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `bind`.
    pub fn bind(&mut self, bind: Bind) -> &mut Self {
        self.binds.push(bind);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.binds.len().to_string());
            }
        }
        self
    }

    pub fn text(&mut self, value: impl Into<String>) -> &mut Self {
        self.bind(Bind::Text(value.into()))
    }
}

/// The text a filter value is compared as.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        _ => None,
    }
}

/// Escapes LIKE wildcards; patterns use `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// `expr op value`, where `expr` is already lowercased when `lower` is set.
fn comparison(
    sql: &mut Sql,
    expr: &str,
    op: CompareOp,
    value: &Value,
    lower: bool,
) -> Result<(), ScimError> {
    let Some(text) = value_text(value) else {
        // `eq null` is "not present"; `ne null` is "present".
        match op {
            CompareOp::Eq => sql.push(&format!("({expr}) IS NULL")),
            CompareOp::Ne => sql.push(&format!("({expr}) IS NOT NULL")),
            _ => {
                return Err(ScimError::invalid_filter(
                    "only eq and ne compare with null",
                ));
            }
        };
        return Ok(());
    };
    let text = if lower { text.to_lowercase() } else { text };
    let (operator, pattern) = match op {
        CompareOp::Eq => ("=", None),
        CompareOp::Ne => ("<>", None),
        CompareOp::Gt => (">", None),
        CompareOp::Lt => ("<", None),
        CompareOp::Ge => (">=", None),
        CompareOp::Le => ("<=", None),
        CompareOp::Co => ("LIKE", Some(format!("%{}%", like_escape(&text)))),
        CompareOp::Sw => ("LIKE", Some(format!("{}%", like_escape(&text)))),
        CompareOp::Ew => ("LIKE", Some(format!("%{}", like_escape(&text)))),
    };
    if op == CompareOp::Ne {
        sql.push(&format!("(({expr}) IS NULL OR ({expr}) <> "));
        sql.text(text);
        sql.push(")");
        return Ok(());
    }
    sql.push(&format!("({expr}) {operator} "));
    match pattern {
        Some(p) => {
            sql.text(p);
            sql.push(" ESCAPE '\\'");
        }
        None => {
            sql.text(text);
        }
    }
    Ok(())
}

fn boolean_comparison(
    sql: &mut Sql,
    expr_true: &str,
    op: CompareOp,
    value: &Value,
) -> Result<(), ScimError> {
    let wanted = match value {
        Value::Bool(b) => *b,
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(ScimError::invalid_filter(
                "a boolean attribute compares with true or false",
            ));
        }
    };
    let positive = match op {
        CompareOp::Eq => wanted,
        CompareOp::Ne => !wanted,
        _ => {
            return Err(ScimError::invalid_filter(
                "a boolean attribute supports eq and ne only",
            ));
        }
    };
    sql.push(&if positive {
        format!("({expr_true})")
    } else {
        format!("(NOT ({expr_true}))")
    });
    Ok(())
}

/// Where a filter attribute lives in SQL.
enum Target<'a> {
    /// An indexed text column (already lowercased when `lower`).
    Column { expr: String, lower: bool },
    /// A boolean column or expression that is true when the attribute is true.
    Boolean(String),
    /// A JSON value of the document: `path` from the document root.
    Json {
        path: Vec<&'a str>,
        attr: &'a Attribute,
    },
    /// A multi-valued attribute: a row source and how to read a sub-attribute from it.
    Multi {
        attr: &'a Attribute,
        source: MultiSource<'a>,
    },
}

enum MultiSource<'a> {
    Emails,
    Members,
    JsonArray(Vec<&'a str>),
}

struct Translator<'k> {
    kind: &'k ResourceKind,
    alias: &'static str,
    tenant: &'k str,
}

impl<'k> Translator<'k> {
    fn json_expr(&self, dialect: Dialect, doc: &str, path: &[&str], text: bool) -> String {
        match dialect {
            Dialect::Sqlite => {
                let p: String = path.iter().map(|k| format!(".\"{k}\"")).collect();
                format!("json_extract({doc}, '${p}')")
            }
            Dialect::Postgres => {
                let p = path
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(",");
                if text {
                    format!("({doc} #>> '{{{p}}}')")
                } else {
                    format!("({doc} #> '{{{p}}}')")
                }
            }
        }
    }

    fn resolve(&self, path: &'k AttrPath) -> Result<Target<'k>, ScimError> {
        let a = self.alias;
        let name = path.name.as_str();
        if path.urn.is_none() && path.sub.is_none() {
            if name.eq_ignore_ascii_case("id") {
                return Ok(Target::Column {
                    expr: format!("{a}.id"),
                    lower: false,
                });
            }
            if name.eq_ignore_ascii_case("externalId") {
                return Ok(Target::Column {
                    expr: format!("{a}.external_id"),
                    lower: false,
                });
            }
        }
        let (urn, attrs) =
            attributes_for(self.kind, path).map_err(|e| ScimError::invalid_filter(e.detail))?;
        let attr = schema::find(attrs, name).ok_or_else(|| {
            ScimError::invalid_filter(format!("{name} is not an attribute of {}", self.kind.name))
        })?;
        if urn.is_none() {
            match (self.kind.name, attr.name, path.sub.as_deref()) {
                ("User", "userName", None) => {
                    return Ok(Target::Column {
                        expr: format!("{a}.user_name_lower"),
                        lower: true,
                    });
                }
                ("User", "active", None) => return Ok(Target::Boolean(format!("{a}.active = 1"))),
                ("User", "emails", _) => {
                    return Ok(Target::Multi {
                        attr,
                        source: MultiSource::Emails,
                    });
                }
                ("Group", "displayName", None) => {
                    return Ok(Target::Column {
                        expr: format!("{a}.display_name_lower"),
                        lower: true,
                    });
                }
                ("Group", "members", _) => {
                    return Ok(Target::Multi {
                        attr,
                        source: MultiSource::Members,
                    });
                }
                _ => {}
            }
        }
        let mut json_path: Vec<&str> = Vec::new();
        if let Some(urn) = urn {
            json_path.push(urn);
        }
        json_path.push(attr.name);
        if attr.multi {
            return Ok(Target::Multi {
                attr,
                source: MultiSource::JsonArray(json_path),
            });
        }
        match (attr.kind, path.sub.as_deref()) {
            (Kind::Complex(subs), Some(sub)) => {
                let sub_attr = schema::find(subs, sub).ok_or_else(|| {
                    ScimError::invalid_filter(format!("{}.{sub} is not an attribute", attr.name))
                })?;
                json_path.push(sub_attr.name);
                Ok(Target::Json {
                    path: json_path,
                    attr: sub_attr,
                })
            }
            (Kind::Complex(_), None) => Err(ScimError::invalid_filter(format!(
                "{} is complex: filter on one of its sub-attributes",
                attr.name
            ))),
            (_, Some(sub)) => Err(ScimError::invalid_filter(format!(
                "{} has no sub-attribute {sub}",
                attr.name
            ))),
            (_, None) => Ok(Target::Json {
                path: json_path,
                attr,
            }),
        }
    }

    fn filter(&self, sql: &mut Sql, filter: &'k Filter) -> Result<(), ScimError> {
        match filter {
            Filter::And(l, r) | Filter::Or(l, r) => {
                sql.push("(");
                self.filter(sql, l)?;
                sql.push(if matches!(filter, Filter::And(..)) {
                    " AND "
                } else {
                    " OR "
                });
                self.filter(sql, r)?;
                sql.push(")");
                Ok(())
            }
            Filter::Not(inner) => {
                sql.push("(NOT ");
                self.filter(sql, inner)?;
                sql.push(")");
                Ok(())
            }
            Filter::Present(path) => match self.resolve(path)? {
                Target::Column { expr, .. } => {
                    sql.push(&format!("({expr} IS NOT NULL AND {expr} <> '')"));
                    Ok(())
                }
                Target::Boolean(_) => {
                    sql.push("(1 = 1)");
                    Ok(())
                }
                Target::Json { path, .. } => {
                    let e = self.json_expr(
                        sql.dialect,
                        &format!("{}.attributes", self.alias),
                        &path,
                        true,
                    );
                    sql.push(&format!("({e} IS NOT NULL)"));
                    Ok(())
                }
                Target::Multi { attr, source } => self.exists(
                    sql,
                    attr,
                    &source,
                    path.sub.as_deref().map(|s| (s, None)),
                    None,
                ),
            },
            Filter::Compare(path, op, value) => match self.resolve(path)? {
                Target::Column { expr, lower } => comparison(sql, &expr, *op, value, lower),
                Target::Boolean(expr) => boolean_comparison(sql, &expr, *op, value),
                Target::Json { path, attr } => self.json_comparison(sql, &path, attr, *op, value),
                Target::Multi { attr, source } => {
                    let sub = path.sub.as_deref().unwrap_or("value");
                    self.exists(sql, attr, &source, Some((sub, Some((*op, value)))), None)
                }
            },
            Filter::ValuePath(path, inner) => match self.resolve(path)? {
                Target::Multi { attr, source } => {
                    self.exists(sql, attr, &source, None, Some(inner))
                }
                _ => Err(ScimError::invalid_filter(format!(
                    "{} is not multi-valued",
                    path.name
                ))),
            },
        }
    }

    fn json_comparison(
        &self,
        sql: &mut Sql,
        path: &[&str],
        attr: &Attribute,
        op: CompareOp,
        value: &Value,
    ) -> Result<(), ScimError> {
        let doc = format!("{}.attributes", self.alias);
        if attr.kind == Kind::Boolean {
            let truthy = match sql.dialect {
                Dialect::Sqlite => format!("{} = 1", self.json_expr(sql.dialect, &doc, path, true)),
                Dialect::Postgres => {
                    format!("{} = 'true'", self.json_expr(sql.dialect, &doc, path, true))
                }
            };
            return boolean_comparison(sql, &truthy, op, value);
        }
        let e = self.json_expr(sql.dialect, &doc, path, true);
        if attr.case_exact {
            comparison(sql, &e, op, value, false)
        } else {
            comparison(sql, &format!("lower({e})"), op, value, true)
        }
    }

    /// `EXISTS (a value of the multi-valued attribute matching ...)`: either one
    /// sub-attribute comparison (or presence), or a whole value filter.
    fn exists(
        &self,
        sql: &mut Sql,
        attr: &Attribute,
        source: &MultiSource<'_>,
        sub_test: Option<(&str, Option<(CompareOp, &Value)>)>,
        value_filter: Option<&Filter>,
    ) -> Result<(), ScimError> {
        let a = self.alias;
        let Kind::Complex(subs) = attr.kind else {
            return Err(ScimError::invalid_filter(format!(
                "{} cannot be filtered",
                attr.name
            )));
        };
        // Emails and members have their own indexed tables: an uncorrelated subquery lets
        // a lookup by value start from that index instead of probing every resource.
        match source {
            MultiSource::Emails => {
                sql.push(&format!(
                    "{a}.id IN (SELECT x.user_id FROM scim_user_emails x WHERE x.tenant = "
                ));
                sql.text(self.tenant);
            }
            MultiSource::Members => {
                sql.push(&format!(
                    "{a}.id IN (SELECT x.group_id FROM scim_group_members x WHERE x.tenant = "
                ));
                sql.text(self.tenant);
            }
            MultiSource::JsonArray(path) => {
                sql.push("EXISTS (SELECT 1 FROM ");
                let doc = format!("{a}.attributes");
                match sql.dialect {
                    Dialect::Sqlite => {
                        let p: String = path.iter().map(|k| format!(".\"{k}\"")).collect();
                        sql.push(&format!("json_each({doc}, '${p}') x WHERE 1 = 1"));
                    }
                    Dialect::Postgres => {
                        let arr = self.json_expr(sql.dialect, &doc, path, false);
                        sql.push(&format!("jsonb_array_elements(CASE WHEN jsonb_typeof({arr}) = 'array' THEN {arr} ELSE '[]'::jsonb END) x WHERE 1 = 1"));
                    }
                }
            }
        };
        // How to read a sub-attribute of one value.
        let field = |sql: &Sql, sub: &str| -> Result<(String, &Attribute), ScimError> {
            let sub_attr = schema::find(subs, sub).ok_or_else(|| {
                ScimError::invalid_filter(format!("{}.{sub} is not an attribute", attr.name))
            })?;
            let expr = match source {
                MultiSource::Emails => match sub_attr.name {
                    "value" => "x.value_lower".to_string(),
                    "type" => "lower(x.kind)".to_string(),
                    "primary" => "x.is_primary".to_string(),
                    "display" => "lower(x.display)".to_string(),
                    _ => {
                        return Err(ScimError::invalid_filter(format!(
                            "emails.{sub} cannot be filtered"
                        )));
                    }
                },
                MultiSource::Members => match sub_attr.name {
                    "value" => "x.member_id".to_string(),
                    "type" => "x.member_type".to_string(),
                    "display" => "x.display".to_string(),
                    _ => {
                        return Err(ScimError::invalid_filter(format!(
                            "members.{sub} cannot be filtered"
                        )));
                    }
                },
                MultiSource::JsonArray(_) => match sql.dialect {
                    Dialect::Sqlite => format!("json_extract(x.value, '$.\"{}\"')", sub_attr.name),
                    Dialect::Postgres => format!("(x ->> '{}')", sub_attr.name),
                },
            };
            Ok((expr, sub_attr))
        };
        let lowered = |source: &MultiSource<'_>, sub_attr: &Attribute| -> bool {
            match source {
                MultiSource::Emails => matches!(sub_attr.name, "value" | "type" | "display"),
                MultiSource::Members => false,
                MultiSource::JsonArray(_) => !sub_attr.case_exact,
            }
        };
        let test =
            |sql: &mut Sql, sub: &str, cmp: Option<(CompareOp, &Value)>| -> Result<(), ScimError> {
                let (expr, sub_attr) = field(sql, sub)?;
                match cmp {
                    None => {
                        sql.push(&format!("({expr} IS NOT NULL)"));
                        Ok(())
                    }
                    Some((op, value)) if sub_attr.kind == Kind::Boolean => {
                        let truthy = match (source, sql.dialect) {
                            (MultiSource::JsonArray(_), Dialect::Postgres) => {
                                format!("{expr} = 'true'")
                            }
                            _ => format!("{expr} = 1"),
                        };
                        boolean_comparison(sql, &truthy, op, value)
                    }
                    Some((op, value)) => {
                        let lower = lowered(source, sub_attr);
                        let expr = match (lower, source) {
                            (true, MultiSource::JsonArray(_)) => format!("lower({expr})"),
                            _ => expr,
                        };
                        comparison(sql, &expr, op, value, lower)
                    }
                }
            };
        if let Some((sub, cmp)) = sub_test {
            sql.push(" AND ");
            test(sql, sub, cmp)?;
        }
        if let Some(inner) = value_filter {
            sql.push(" AND ");
            value_filter_sql(sql, inner, &test)?;
        }
        sql.push(")");
        Ok(())
    }
}

/// Writes the SQL for one sub-attribute test (a comparison, or presence when `None`).
type SubAttributeTest<'t> =
    dyn Fn(&mut Sql, &str, Option<(CompareOp, &Value)>) -> Result<(), ScimError> + 't;

/// A filter inside `attr[...]`, whose paths are sub-attributes of one value.
fn value_filter_sql(
    sql: &mut Sql,
    filter: &Filter,
    test: &SubAttributeTest<'_>,
) -> Result<(), ScimError> {
    match filter {
        Filter::And(l, r) | Filter::Or(l, r) => {
            sql.push("(");
            value_filter_sql(sql, l, test)?;
            sql.push(if matches!(filter, Filter::And(..)) {
                " AND "
            } else {
                " OR "
            });
            value_filter_sql(sql, r, test)?;
            sql.push(")");
            Ok(())
        }
        Filter::Not(inner) => {
            sql.push("(NOT ");
            value_filter_sql(sql, inner, test)?;
            sql.push(")");
            Ok(())
        }
        Filter::Present(path) => test(sql, &path.name, None),
        Filter::Compare(path, op, value) => test(sql, &path.name, Some((*op, value))),
        Filter::ValuePath(..) => Err(ScimError::invalid_filter("value filters cannot nest")),
    }
}

/// Appends ` AND (<filter>)` for resources of `kind` aliased `alias` in `tenant`.
pub fn push_filter(
    sql: &mut Sql,
    kind: &ResourceKind,
    alias: &'static str,
    tenant: &str,
    filter: &Filter,
) -> Result<(), ScimError> {
    sql.push(" AND ");
    Translator {
        kind,
        alias,
        tenant,
    }
    .filter(sql, filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse_filter;

    fn translate(dialect: Dialect, kind: &ResourceKind, filter: &str) -> Result<Sql, ScimError> {
        let f = parse_filter(filter)?;
        let mut sql = Sql::new(dialect);
        push_filter(&mut sql, kind, "u", "tenant", &f)?;
        Ok(sql)
    }

    #[test]
    fn user_name_uses_the_lowercased_index_and_binds_the_value() {
        let sql = translate(
            Dialect::Postgres,
            &schema::USER,
            r#"userName eq "Alice@Example.com""#,
        )
        .unwrap();
        assert_eq!(sql.text, " AND (u.user_name_lower) = $1");
        assert_eq!(sql.binds, vec![Bind::Text("alice@example.com".into())]);
    }

    #[test]
    fn client_text_never_reaches_the_sql() {
        let nasty = r#"displayName eq "x'); DROP TABLE scim_users; --""#;
        let sql = translate(Dialect::Sqlite, &schema::USER, nasty).unwrap();
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
        assert!(matches!(&sql.binds[0], Bind::Text(t) if t.contains("drop table")));
        // Unknown attribute names are refused, not interpolated.
        let err = translate(Dialect::Sqlite, &schema::USER, r#"x' OR 1=1 eq "y""#).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidFilter"));
        let err = translate(Dialect::Sqlite, &schema::USER, r#"nosuch eq "y""#).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidFilter"));
    }

    #[test]
    fn email_value_paths_become_exists_over_the_email_index() {
        let sql = translate(
            Dialect::Sqlite,
            &schema::USER,
            r#"emails[type eq "work"].value eq "A@B.C""#,
        )
        .unwrap();
        assert!(
            sql.text
                .contains("u.id IN (SELECT x.user_id FROM scim_user_emails x WHERE x.tenant = ?"),
            "{}",
            sql.text
        );
        assert_eq!(
            sql.binds,
            vec![
                Bind::Text("tenant".into()),
                Bind::Text("work".into()),
                Bind::Text("a@b.c".into())
            ]
        );
        let sql = translate(
            Dialect::Postgres,
            &schema::USER,
            r#"emails.value co "example""#,
        )
        .unwrap();
        assert!(
            sql.text.contains("x.value_lower") && sql.text.contains("LIKE $2 ESCAPE"),
            "{}",
            sql.text
        );
    }

    #[test]
    fn like_wildcards_in_values_are_escaped() {
        let sql = translate(Dialect::Sqlite, &schema::USER, r#"userName sw "a_b%""#).unwrap();
        assert_eq!(sql.binds, vec![Bind::Text("a\\_b\\%%".into())]);
    }
}
