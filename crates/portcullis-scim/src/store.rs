//! Where provisioned users and groups live: the [`DirectoryStore`] trait, and its SQL
//! implementation for SQLite (the default: a file, nothing to run) and PostgreSQL (for
//! several replicas).
//!
//! Each backend has its own migrations (`migrations/<backend>/`), applied at start in
//! order and recorded in `scim_schema_version`; PostgreSQL takes an advisory lock so
//! replicas starting together migrate once. Every change is one transaction: a PATCH
//! reads, applies and writes under a row lock, so concurrent changes do not lose each
//! other's updates. Database failures become 503 SCIM errors, never 500s; their details
//! go to the log, not to the client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::ScimError;
use crate::filter::Filter;
use crate::resource::{GroupRecord, Member, Normalized, UserRecord};
use crate::schema;
use crate::sql::{Bind, Dialect, Sql, push_filter};

/// A user as the login path needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginUser {
    pub id: String,
    pub active: bool,
    /// Display names of the user's groups: their teams.
    pub groups: Vec<String>,
}

/// How a login identity is matched to a provisioned user. Values are compared the way
/// SCIM filters compare them: `externalId` exactly, user names and emails ignoring case.
#[derive(Debug, Clone, Default)]
pub struct LoginKeys {
    pub external_id: Option<String>,
    pub user_names: Vec<String>,
    pub emails: Vec<String>,
}

pub trait DirectoryStore: Send + Sync + 'static {
    fn create_user(
        &self,
        tenant: &str,
        user: Normalized,
    ) -> impl Future<Output = Result<UserRecord, ScimError>> + Send;
    fn get_user(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<UserRecord>, ScimError>> + Send;
    /// `(id, display name)` of the groups `id` belongs to.
    fn user_groups(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, ScimError>> + Send;
    /// For each of `ids` that belongs to a group: `(id, display name)` of its groups.
    fn groups_of_users(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Vec<(String, String)>>, ScimError>> + Send;
    /// Applies `change` to a user atomically; returns the user before and after.
    fn update_user<F>(
        &self,
        tenant: &str,
        id: &str,
        change: F,
    ) -> impl Future<Output = Result<Option<(UserRecord, UserRecord)>, ScimError>> + Send
    where
        F: FnOnce(&UserRecord) -> Result<Normalized, ScimError> + Send;
    fn delete_user(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<UserRecord>, ScimError>> + Send;
    fn list_users(
        &self,
        tenant: &str,
        filter: Option<&Filter>,
        start: usize,
        count: usize,
    ) -> impl Future<Output = Result<(usize, Vec<UserRecord>), ScimError>> + Send;

    fn create_group(
        &self,
        tenant: &str,
        group: Normalized,
    ) -> impl Future<Output = Result<GroupRecord, ScimError>> + Send;
    fn get_group(
        &self,
        tenant: &str,
        id: &str,
        members: bool,
    ) -> impl Future<Output = Result<Option<GroupRecord>, ScimError>> + Send;
    fn update_group<F>(
        &self,
        tenant: &str,
        id: &str,
        change: F,
    ) -> impl Future<Output = Result<Option<(GroupRecord, GroupRecord)>, ScimError>> + Send
    where
        F: FnOnce(&GroupRecord) -> Result<Normalized, ScimError> + Send;
    fn delete_group(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<GroupRecord>, ScimError>> + Send;
    fn list_groups(
        &self,
        tenant: &str,
        filter: Option<&Filter>,
        start: usize,
        count: usize,
        members: bool,
    ) -> impl Future<Output = Result<(usize, Vec<GroupRecord>), ScimError>> + Send;

    /// The provisioned user a login identity is, if any.
    fn find_login_user(
        &self,
        tenant: &str,
        keys: &LoginKeys,
    ) -> impl Future<Output = Result<Option<LoginUser>, ScimError>> + Send;
    fn ready(&self) -> impl Future<Output = Result<(), ScimError>> + Send;
}

const MIGRATIONS_SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_directory.sql"),
    include_str!("../migrations/sqlite/0002_listing_indexes.sql"),
];
const MIGRATIONS_POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_directory.sql"),
    include_str!("../migrations/postgres/0002_listing_indexes.sql"),
];

pub struct SqlDirectory {
    pool: AnyPool,
    dialect: Dialect,
    /// Committed writes, for refreshing SQLite's planner statistics as the directory grows.
    writes: AtomicU64,
}

/// Both databases plan queries from statistics that only `ANALYZE` gathers. SQLite never
/// gathers them by itself, and PostgreSQL's autovacuum only wakes once a minute, so a
/// directory that an identity provider has just filled may be planned as if it were
/// empty: a whole table walked in page order instead of a selective index, which turned
/// a 4 ms page of users into 66 ms. Refresh them at start-up and every this many writes,
/// in the background. (`PRAGMA optimize` re-analyzes, within a bounded effort, only the
/// tables that changed a lot; PostgreSQL's `ANALYZE` samples a bounded number of rows.)
const ANALYZE_EVERY: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("scim.database_url must start with sqlite:// or postgres:// (or postgresql://)")]
    Scheme,
    #[error("cannot open the SCIM database: {0}")]
    Connect(String),
    #[error("cannot migrate the SCIM database: {0}")]
    Migrate(String),
}

fn db_error(e: sqlx::Error) -> ScimError {
    tracing::error!(error = %e, "SCIM directory database error");
    ScimError::unavailable("the directory database is unavailable")
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn now_ms() -> i64 {
    portcullis_core::time::unix_now_ms() as i64
}

/// A query from `sql` with its binds. The text is assembled only from fixed fragments
/// and schema names (see [`crate::sql`]); every value is a bound parameter, which is the
/// audit `AssertSqlSafe` asks for.
macro_rules! query {
    ($sql:expr) => {{
        let sql: &Sql = &$sql;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.text.clone()));
        for b in &sql.binds {
            q = match b {
                Bind::Text(t) => q.bind(t.clone()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

async fn refresh_statistics(pool: &AnyPool, dialect: Dialect) {
    let statements: &[&'static str] = match dialect {
        // 0x10002: analyze where useful, checking every table's size (not only the tables
        // this connection has queried); analysis_limit bounds the work per index.
        Dialect::Sqlite => &["PRAGMA analysis_limit = 1000", "PRAGMA optimize = 0x10002"],
        Dialect::Postgres => {
            &["ANALYZE scim_users, scim_user_emails, scim_groups, scim_group_members"]
        }
    };
    for statement in statements {
        if let Err(e) = sqlx::query(*statement).execute(pool).await {
            tracing::debug!(error = %e, "directory statistics not refreshed");
            return;
        }
    }
}

impl SqlDirectory {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<SqlDirectory, OpenError> {
        sqlx::any::install_default_drivers();
        let lower = url.to_ascii_lowercase();
        let (dialect, url, connections) = if lower.starts_with("sqlite:") {
            // One connection: SQLite serialises writers anyway, and one connection can
            // never meet another's lock halfway through a transaction.
            let with_mode = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Dialect::Sqlite, with_mode, 1)
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string(), 8)
        } else {
            return Err(OpenError::Scheme);
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let dir = SqlDirectory {
            pool,
            dialect,
            writes: AtomicU64::new(0),
        };
        dir.migrate().await?;
        refresh_statistics(&dir.pool, dir.dialect).await;
        Ok(dir)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Counts a committed write; now and then refreshes the planner's statistics.
    async fn wrote(&self) {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(ANALYZE_EVERY) {
            let pool = self.pool.clone();
            let dialect = self.dialect;
            tokio::spawn(async move { refresh_statistics(&pool, dialect).await });
        }
    }

    fn sql(&self) -> Sql {
        Sql::new(self.dialect)
    }

    async fn migrate(&self) -> Result<(), OpenError> {
        let fail = |e: sqlx::Error| OpenError::Migrate(e.to_string());
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
        } else {
            // Replicas starting together migrate one at a time.
            sqlx::query("SELECT pg_advisory_lock(7043781297)")
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
        }
        let result = async {
            sqlx::query("CREATE TABLE IF NOT EXISTS scim_schema_version (version BIGINT NOT NULL)")
                .execute(&mut *conn)
                .await?;
            let current: i64 =
                sqlx::query("SELECT COALESCE(MAX(version), 0) FROM scim_schema_version")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(0)?;
            let migrations = match self.dialect {
                Dialect::Sqlite => MIGRATIONS_SQLITE,
                Dialect::Postgres => MIGRATIONS_POSTGRES,
            };
            for (i, migration) in migrations.iter().enumerate() {
                let version = i as i64 + 1;
                if version <= current {
                    continue;
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for statement in migration.split(';').map(str::trim).filter(|s| {
                    !s.is_empty() && !s.lines().all(|l| l.trim_start().starts_with("--"))
                }) {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                let mut record = self.sql();
                record.push("INSERT INTO scim_schema_version (version) VALUES (");
                record.bind(Bind::Int(version));
                record.push(")");
                query!(record).execute(&mut *tx).await?;
                tx.commit().await?;
                tracing::info!(version, "SCIM directory schema migrated");
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if self.dialect == Dialect::Postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock(7043781297)")
                .execute(&mut *conn)
                .await;
        }
        result.map_err(fail)
    }

    fn user_columns(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => {
                "u.id, u.external_id, u.attributes, u.created_ms, u.modified_ms, u.version"
            }
            Dialect::Postgres => {
                "u.id, u.external_id, u.attributes::text AS attributes, u.created_ms, u.modified_ms, u.version"
            }
        }
    }

    fn group_columns(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => {
                "g.id, g.external_id, g.attributes, g.created_ms, g.modified_ms, g.version"
            }
            Dialect::Postgres => {
                "g.id, g.external_id, g.attributes::text AS attributes, g.created_ms, g.modified_ms, g.version"
            }
        }
    }

    fn json_bind(&self, sql: &mut Sql, attributes: &Map<String, Value>) {
        let text = Value::Object(attributes.clone()).to_string();
        match self.dialect {
            Dialect::Sqlite => {
                sql.text(text);
            }
            Dialect::Postgres => {
                sql.push("CAST(");
                sql.text(text);
                sql.push(" AS JSONB)");
            }
        }
    }
}

fn attributes_of(row: &AnyRow) -> Result<Map<String, Value>, ScimError> {
    let text: String = row.try_get("attributes").map_err(db_error)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ScimError::unavailable("a stored resource is unreadable")),
    }
}

fn user_from_row(row: &AnyRow) -> Result<UserRecord, ScimError> {
    Ok(UserRecord {
        id: row.try_get("id").map_err(db_error)?,
        external_id: row.try_get("external_id").map_err(db_error)?,
        attributes: attributes_of(row)?,
        created_ms: row.try_get::<i64, _>("created_ms").map_err(db_error)? as u64,
        modified_ms: row.try_get::<i64, _>("modified_ms").map_err(db_error)? as u64,
        version: row.try_get("version").map_err(db_error)?,
    })
}

fn group_from_row(row: &AnyRow) -> Result<GroupRecord, ScimError> {
    Ok(GroupRecord {
        id: row.try_get("id").map_err(db_error)?,
        external_id: row.try_get("external_id").map_err(db_error)?,
        attributes: attributes_of(row)?,
        members: Vec::new(),
        created_ms: row.try_get::<i64, _>("created_ms").map_err(db_error)? as u64,
        modified_ms: row.try_get::<i64, _>("modified_ms").map_err(db_error)? as u64,
        version: row.try_get("version").map_err(db_error)?,
    })
}

/// Which table a listing reads and how its rows become records.
struct Listing<T> {
    from: &'static str,
    alias: &'static str,
    columns: &'static str,
    kind: &'static schema::ResourceKind,
    map: fn(&AnyRow) -> Result<T, ScimError>,
}

/// Page bounds: SCIM's 1-based `startIndex` and a `count` of at most `MAX_RESULTS`.
fn page(sql: &mut Sql, start: usize, count: usize) {
    sql.push(" LIMIT ");
    sql.bind(Bind::Int(count.min(schema::MAX_RESULTS) as i64));
    sql.push(" OFFSET ");
    sql.bind(Bind::Int(start.saturating_sub(1) as i64));
}

impl SqlDirectory {
    async fn write_user_row(
        &self,
        tx: &mut sqlx::AnyConnection,
        tenant: &str,
        user: &UserRecord,
        insert: bool,
    ) -> Result<(), sqlx::Error> {
        let mut sql = self.sql();
        if insert {
            sql.push("INSERT INTO scim_users (tenant, id, user_name, user_name_lower, external_id, active, attributes, created_ms, modified_ms, version) VALUES (");
            sql.text(tenant);
            sql.push(", ");
            sql.text(user.id.clone());
            sql.push(", ");
        } else {
            sql.push("UPDATE scim_users SET ");
        }
        let set = |sql: &mut Sql, name: &str, first: bool| {
            if !insert {
                sql.push(&format!("{}{name} = ", if first { "" } else { ", " }));
            } else if !first {
                sql.push(", ");
            }
        };
        set(&mut sql, "user_name", true);
        sql.text(user.user_name().to_string());
        set(&mut sql, "user_name_lower", false);
        sql.text(user.user_name().to_lowercase());
        set(&mut sql, "external_id", false);
        match &user.external_id {
            Some(e) => sql.text(e.clone()),
            None => sql.push("NULL"),
        };
        set(&mut sql, "active", false);
        sql.bind(Bind::Int(i64::from(user.active())));
        set(&mut sql, "attributes", false);
        self.json_bind(&mut sql, &user.attributes);
        if insert {
            sql.push(", ");
            sql.bind(Bind::Int(user.created_ms as i64));
        }
        set(&mut sql, "modified_ms", false);
        sql.bind(Bind::Int(user.modified_ms as i64));
        set(&mut sql, "version", false);
        sql.bind(Bind::Int(user.version));
        if insert {
            sql.push(")");
        } else {
            sql.push(" WHERE tenant = ");
            sql.text(tenant);
            sql.push(" AND id = ");
            sql.text(user.id.clone());
        }
        query!(sql).execute(&mut *tx).await?;

        // The email index.
        let mut del = self.sql();
        del.push("DELETE FROM scim_user_emails WHERE tenant = ");
        del.text(tenant);
        del.push(" AND user_id = ");
        del.text(user.id.clone());
        query!(del).execute(&mut *tx).await?;
        let emails: Vec<Value> = user
            .attributes
            .get("emails")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for email in emails {
            let Some(value) = email.get("value").and_then(Value::as_str) else {
                continue;
            };
            let mut ins = self.sql();
            ins.push("INSERT INTO scim_user_emails (tenant, user_id, value_lower, kind, is_primary, display) VALUES (");
            ins.text(tenant);
            ins.push(", ");
            ins.text(user.id.clone());
            ins.push(", ");
            ins.text(value.to_lowercase());
            ins.push(", ");
            match email.get("type").and_then(Value::as_str) {
                Some(t) => ins.text(t.to_string()),
                None => ins.push("NULL"),
            };
            ins.push(", ");
            ins.bind(Bind::Int(i64::from(
                email
                    .get("primary")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )));
            ins.push(", ");
            match email.get("display").and_then(Value::as_str) {
                Some(d) => ins.text(d.to_string()),
                None => ins.push("NULL"),
            };
            ins.push(")");
            query!(ins).execute(&mut *tx).await?;
        }
        Ok(())
    }

    async fn load_user(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: &str,
        id: &str,
        lock: bool,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT {} FROM scim_users u WHERE u.tenant = ",
            self.user_columns()
        ));
        sql.text(tenant);
        sql.push(" AND u.id = ");
        sql.text(id);
        if lock && self.dialect == Dialect::Postgres {
            sql.push(" FOR UPDATE");
        }
        match query!(sql).fetch_optional(&mut *conn).await? {
            Some(row) => Ok(user_from_row(&row).ok()),
            None => Ok(None),
        }
    }

    async fn load_group(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: &str,
        id: &str,
        members: bool,
        lock: bool,
    ) -> Result<Option<GroupRecord>, sqlx::Error> {
        let mut sql = self.sql();
        sql.push(&format!(
            "SELECT {} FROM scim_groups g WHERE g.tenant = ",
            self.group_columns()
        ));
        sql.text(tenant);
        sql.push(" AND g.id = ");
        sql.text(id);
        if lock && self.dialect == Dialect::Postgres {
            sql.push(" FOR UPDATE");
        }
        let Some(row) = query!(sql).fetch_optional(&mut *conn).await? else {
            return Ok(None);
        };
        let Ok(mut group) = group_from_row(&row) else {
            return Ok(None);
        };
        if members {
            let mut all = self
                .members_of(conn, tenant, std::slice::from_ref(&group.id))
                .await?;
            group.members = all.remove(&group.id).unwrap_or_default();
        }
        Ok(Some(group))
    }

    async fn members_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: &str,
        groups: &[String],
    ) -> Result<HashMap<String, Vec<Member>>, sqlx::Error> {
        let mut out: HashMap<String, Vec<Member>> = HashMap::new();
        if groups.is_empty() {
            return Ok(out);
        }
        let mut sql = self.sql();
        sql.push("SELECT group_id, member_id, member_type, display FROM scim_group_members WHERE tenant = ");
        sql.text(tenant);
        sql.push(" AND group_id IN (");
        for (i, g) in groups.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(g.clone());
        }
        sql.push(") ORDER BY group_id, position");
        for row in query!(sql).fetch_all(&mut *conn).await? {
            let group: String = row.try_get("group_id")?;
            out.entry(group).or_default().push(Member {
                value: row.try_get("member_id")?,
                kind: row.try_get("member_type")?,
                display: row.try_get("display")?,
            });
        }
        Ok(out)
    }

    /// Refuses members that are not users or groups of this directory.
    async fn check_members(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: &str,
        members: &[Member],
    ) -> Result<Result<(), ScimError>, sqlx::Error> {
        for m in members {
            let table = if m.kind == "Group" {
                "scim_groups"
            } else {
                "scim_users"
            };
            let mut sql = self.sql();
            sql.push(&format!("SELECT 1 FROM {table} WHERE tenant = "));
            sql.text(tenant);
            sql.push(" AND id = ");
            sql.text(m.value.clone());
            if query!(sql).fetch_optional(&mut *conn).await?.is_none() {
                return Ok(Err(ScimError::invalid_value(format!(
                    "member {} is not a {} of this directory",
                    m.value,
                    m.kind.to_lowercase()
                ))));
            }
        }
        Ok(Ok(()))
    }

    async fn write_group(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant: &str,
        group: &GroupRecord,
        before: Option<&GroupRecord>,
    ) -> Result<(), sqlx::Error> {
        let mut sql = self.sql();
        let name = group.display_name().to_string();
        match before {
            None => {
                sql.push("INSERT INTO scim_groups (tenant, id, display_name, display_name_lower, external_id, attributes, created_ms, modified_ms, version) VALUES (");
                sql.text(tenant);
                sql.push(", ");
                sql.text(group.id.clone());
                sql.push(", ");
                sql.text(name.clone());
                sql.push(", ");
                sql.text(name.to_lowercase());
                sql.push(", ");
                match &group.external_id {
                    Some(e) => sql.text(e.clone()),
                    None => sql.push("NULL"),
                };
                sql.push(", ");
                self.json_bind(&mut sql, &group.attributes);
                sql.push(", ");
                sql.bind(Bind::Int(group.created_ms as i64));
                sql.push(", ");
                sql.bind(Bind::Int(group.modified_ms as i64));
                sql.push(", ");
                sql.bind(Bind::Int(group.version));
                sql.push(")");
            }
            Some(_) => {
                sql.push("UPDATE scim_groups SET display_name = ");
                sql.text(name.clone());
                sql.push(", display_name_lower = ");
                sql.text(name.to_lowercase());
                sql.push(", external_id = ");
                match &group.external_id {
                    Some(e) => sql.text(e.clone()),
                    None => sql.push("NULL"),
                };
                sql.push(", attributes = ");
                self.json_bind(&mut sql, &group.attributes);
                sql.push(", modified_ms = ");
                sql.bind(Bind::Int(group.modified_ms as i64));
                sql.push(", version = ");
                sql.bind(Bind::Int(group.version));
                sql.push(" WHERE tenant = ");
                sql.text(tenant);
                sql.push(" AND id = ");
                sql.text(group.id.clone());
            }
        }
        query!(sql).execute(&mut *conn).await?;

        // Members: remove what left, add what came, in order.
        let old: Vec<&Member> = before
            .map(|b| b.members.iter().collect())
            .unwrap_or_default();
        for gone in old
            .iter()
            .filter(|o| !group.members.iter().any(|m| m.value == o.value))
        {
            let mut del = self.sql();
            del.push("DELETE FROM scim_group_members WHERE tenant = ");
            del.text(tenant);
            del.push(" AND group_id = ");
            del.text(group.id.clone());
            del.push(" AND member_id = ");
            del.text(gone.value.clone());
            query!(del).execute(&mut *conn).await?;
        }
        for (position, m) in group.members.iter().enumerate() {
            let existed = old.iter().find(|o| o.value == m.value);
            let mut sql = self.sql();
            match existed {
                Some(o) if o.display == m.display && o.kind == m.kind => continue,
                Some(_) => {
                    sql.push("UPDATE scim_group_members SET member_type = ");
                    sql.text(m.kind.clone());
                    sql.push(", display = ");
                    match &m.display {
                        Some(d) => sql.text(d.clone()),
                        None => sql.push("NULL"),
                    };
                    sql.push(" WHERE tenant = ");
                    sql.text(tenant);
                    sql.push(" AND group_id = ");
                    sql.text(group.id.clone());
                    sql.push(" AND member_id = ");
                    sql.text(m.value.clone());
                }
                None => {
                    sql.push("INSERT INTO scim_group_members (tenant, group_id, member_id, member_type, display, position) VALUES (");
                    sql.text(tenant);
                    sql.push(", ");
                    sql.text(group.id.clone());
                    sql.push(", ");
                    sql.text(m.value.clone());
                    sql.push(", ");
                    sql.text(m.kind.clone());
                    sql.push(", ");
                    match &m.display {
                        Some(d) => sql.text(d.clone()),
                        None => sql.push("NULL"),
                    };
                    sql.push(", ");
                    sql.bind(Bind::Int(now_ms() * 1000 + position as i64));
                    sql.push(")");
                }
            }
            query!(sql).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn count_and_page<T>(
        &self,
        listing: Listing<T>,
        tenant: &str,
        filter: Option<&Filter>,
        start: usize,
        count: usize,
    ) -> Result<(usize, Vec<T>), ScimError> {
        let Listing {
            from,
            alias,
            columns,
            kind,
            map,
        } = listing;
        let mut where_sql = self.sql();
        where_sql.push(&format!(" FROM {from} {alias} WHERE {alias}.tenant = "));
        where_sql.text(tenant);
        if let Some(f) = filter {
            push_filter(&mut where_sql, kind, alias, tenant, f)?;
        }
        let mut count_sql = self.sql();
        count_sql.push("SELECT COUNT(*)");
        count_sql.push(&where_sql.text);
        count_sql.binds = where_sql.binds.clone();
        let total: i64 = query!(count_sql)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        if count == 0 {
            return Ok((total as usize, Vec::new()));
        }
        // The page's keys first, then only those rows: skipping `startIndex` rows then
        // touches only the narrow (tenant, seq) index, and whatever plan the database
        // picks (even without statistics) sorts keys, never whole resources.
        let mut page_sql = self.sql();
        page_sql.push(&format!(
            "SELECT {columns} FROM {from} {alias} WHERE {alias}.seq IN (SELECT {alias}.seq"
        ));
        page_sql.push(&where_sql.text);
        page_sql.binds = where_sql.binds.clone();
        page_sql.push(&format!(" ORDER BY {alias}.seq"));
        page(&mut page_sql, start, count);
        page_sql.push(&format!(") ORDER BY {alias}.seq"));
        let rows = query!(page_sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let items = rows.iter().map(map).collect::<Result<Vec<_>, _>>()?;
        Ok((total as usize, items))
    }
}

impl DirectoryStore for SqlDirectory {
    async fn create_user(&self, tenant: &str, user: Normalized) -> Result<UserRecord, ScimError> {
        let now = now_ms() as u64;
        let record = UserRecord {
            id: portcullis_core::random::uuid_v4(),
            external_id: user.external_id,
            attributes: user.attributes,
            created_ms: now,
            modified_ms: now,
            version: 1,
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        if let Err(e) = self.write_user_row(&mut tx, tenant, &record, true).await {
            return Err(if is_unique_violation(&e) {
                ScimError::uniqueness(format!(
                    "a user with userName {:?} exists",
                    record.user_name()
                ))
            } else {
                db_error(e)
            });
        }
        tx.commit().await.map_err(db_error)?;
        self.wrote().await;
        Ok(record)
    }

    async fn get_user(&self, tenant: &str, id: &str) -> Result<Option<UserRecord>, ScimError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.load_user(&mut conn, tenant, id, false)
            .await
            .map_err(db_error)
    }

    async fn user_groups(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<(String, String)>, ScimError> {
        // The same query as for a page of users, so that it has the same (indexed) plan.
        let mut all = self.groups_of_users(tenant, &[id.to_string()]).await?;
        Ok(all.remove(id).unwrap_or_default())
    }

    async fn groups_of_users(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<(String, String)>>, ScimError> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut sql = self.sql();
        sql.push("SELECT m.member_id, g.id, g.display_name FROM scim_group_members m JOIN scim_groups g ON g.tenant = m.tenant AND g.id = m.group_id WHERE m.tenant = ");
        sql.text(tenant);
        sql.push(" AND m.member_id IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(id.clone());
        }
        sql.push(") ORDER BY m.member_id, g.display_name_lower, g.id");
        let rows = query!(sql).fetch_all(&self.pool).await.map_err(db_error)?;
        for r in &rows {
            let member: String = r.try_get("member_id").map_err(db_error)?;
            out.entry(member).or_default().push((
                r.try_get("id").map_err(db_error)?,
                r.try_get("display_name").map_err(db_error)?,
            ));
        }
        Ok(out)
    }

    async fn update_user<F>(
        &self,
        tenant: &str,
        id: &str,
        change: F,
    ) -> Result<Option<(UserRecord, UserRecord)>, ScimError>
    where
        F: FnOnce(&UserRecord) -> Result<Normalized, ScimError> + Send,
    {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some(before) = self
            .load_user(&mut tx, tenant, id, true)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let next = change(&before)?;
        let after = UserRecord {
            id: before.id.clone(),
            external_id: next.external_id,
            attributes: next.attributes,
            created_ms: before.created_ms,
            modified_ms: (now_ms() as u64).max(before.modified_ms),
            version: before.version + 1,
        };
        if let Err(e) = self.write_user_row(&mut tx, tenant, &after, false).await {
            return Err(if is_unique_violation(&e) {
                ScimError::uniqueness(format!(
                    "a user with userName {:?} exists",
                    after.user_name()
                ))
            } else {
                db_error(e)
            });
        }
        tx.commit().await.map_err(db_error)?;
        self.wrote().await;
        Ok(Some((before, after)))
    }

    async fn delete_user(&self, tenant: &str, id: &str) -> Result<Option<UserRecord>, ScimError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some(user) = self
            .load_user(&mut tx, tenant, id, true)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        for table_where in [
            "scim_users WHERE tenant = {t} AND id = {id}",
            "scim_user_emails WHERE tenant = {t} AND user_id = {id}",
            "scim_group_members WHERE tenant = {t} AND member_id = {id}",
        ] {
            let mut sql = self.sql();
            let (head, tail) = table_where
                .split_once("{t}")
                .expect("template has a tenant");
            let (mid, end) = tail.split_once("{id}").expect("template has an id");
            sql.push("DELETE FROM ");
            sql.push(head);
            sql.text(tenant);
            sql.push(mid);
            sql.text(id);
            sql.push(end);
            query!(sql).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        self.wrote().await;
        Ok(Some(user))
    }

    async fn list_users(
        &self,
        tenant: &str,
        filter: Option<&Filter>,
        start: usize,
        count: usize,
    ) -> Result<(usize, Vec<UserRecord>), ScimError> {
        let listing = Listing {
            from: "scim_users",
            alias: "u",
            columns: self.user_columns(),
            kind: &schema::USER,
            map: user_from_row,
        };
        self.count_and_page(listing, tenant, filter, start, count)
            .await
    }

    async fn create_group(
        &self,
        tenant: &str,
        group: Normalized,
    ) -> Result<GroupRecord, ScimError> {
        let now = now_ms() as u64;
        let record = GroupRecord {
            id: portcullis_core::random::uuid_v4(),
            external_id: group.external_id,
            attributes: group.attributes,
            members: group.members,
            created_ms: now,
            modified_ms: now,
            version: 1,
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        self.check_members(&mut tx, tenant, &record.members)
            .await
            .map_err(db_error)??;
        self.write_group(&mut tx, tenant, &record, None)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        self.wrote().await;
        Ok(record)
    }

    async fn get_group(
        &self,
        tenant: &str,
        id: &str,
        members: bool,
    ) -> Result<Option<GroupRecord>, ScimError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.load_group(&mut conn, tenant, id, members, false)
            .await
            .map_err(db_error)
    }

    async fn update_group<F>(
        &self,
        tenant: &str,
        id: &str,
        change: F,
    ) -> Result<Option<(GroupRecord, GroupRecord)>, ScimError>
    where
        F: FnOnce(&GroupRecord) -> Result<Normalized, ScimError> + Send,
    {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some(before) = self
            .load_group(&mut tx, tenant, id, true, true)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let next = change(&before)?;
        let added: Vec<Member> = next
            .members
            .iter()
            .filter(|m| !before.members.iter().any(|b| b.value == m.value))
            .cloned()
            .collect();
        self.check_members(&mut tx, tenant, &added)
            .await
            .map_err(db_error)??;
        let after = GroupRecord {
            id: before.id.clone(),
            external_id: next.external_id,
            attributes: next.attributes,
            members: next.members,
            created_ms: before.created_ms,
            modified_ms: (now_ms() as u64).max(before.modified_ms),
            version: before.version + 1,
        };
        self.write_group(&mut tx, tenant, &after, Some(&before))
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        self.wrote().await;
        Ok(Some((before, after)))
    }

    async fn delete_group(&self, tenant: &str, id: &str) -> Result<Option<GroupRecord>, ScimError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some(group) = self
            .load_group(&mut tx, tenant, id, true, true)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        for (table, column) in [
            ("scim_groups", "id"),
            ("scim_group_members", "group_id"),
            ("scim_group_members", "member_id"),
        ] {
            let mut sql = self.sql();
            sql.push(&format!("DELETE FROM {table} WHERE tenant = "));
            sql.text(tenant);
            sql.push(&format!(" AND {column} = "));
            sql.text(id);
            query!(sql).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        self.wrote().await;
        Ok(Some(group))
    }

    async fn list_groups(
        &self,
        tenant: &str,
        filter: Option<&Filter>,
        start: usize,
        count: usize,
        members: bool,
    ) -> Result<(usize, Vec<GroupRecord>), ScimError> {
        let listing = Listing {
            from: "scim_groups",
            alias: "g",
            columns: self.group_columns(),
            kind: &schema::GROUP,
            map: group_from_row,
        };
        let (total, mut groups) = self
            .count_and_page(listing, tenant, filter, start, count)
            .await?;
        if members && !groups.is_empty() {
            let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
            let mut conn = self.pool.acquire().await.map_err(db_error)?;
            let mut all = self
                .members_of(&mut conn, tenant, &ids)
                .await
                .map_err(db_error)?;
            for g in &mut groups {
                g.members = all.remove(&g.id).unwrap_or_default();
            }
        }
        Ok((total, groups))
    }

    async fn find_login_user(
        &self,
        tenant: &str,
        keys: &LoginKeys,
    ) -> Result<Option<LoginUser>, ScimError> {
        let mut found: Option<(String, i64)> = None;
        let mut lookups: Vec<Sql> = Vec::new();
        if let Some(e) = &keys.external_id {
            let mut sql = self.sql();
            sql.push("SELECT id, active FROM scim_users WHERE tenant = ");
            sql.text(tenant);
            sql.push(" AND external_id = ");
            sql.text(e.clone());
            lookups.push(sql);
        }
        for name in &keys.user_names {
            let mut sql = self.sql();
            sql.push("SELECT id, active FROM scim_users WHERE tenant = ");
            sql.text(tenant);
            sql.push(" AND user_name_lower = ");
            sql.text(name.to_lowercase());
            lookups.push(sql);
        }
        for email in &keys.emails {
            let mut sql = self.sql();
            sql.push("SELECT u.id, u.active FROM scim_user_emails e JOIN scim_users u ON u.tenant = e.tenant AND u.id = e.user_id WHERE e.tenant = ");
            sql.text(tenant);
            sql.push(" AND e.value_lower = ");
            sql.text(email.to_lowercase());
            lookups.push(sql);
        }
        for sql in &lookups {
            if let Some(row) = query!(*sql)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?
            {
                found = Some((
                    row.try_get("id").map_err(db_error)?,
                    row.try_get("active").map_err(db_error)?,
                ));
                break;
            }
        }
        let Some((id, active)) = found else {
            return Ok(None);
        };
        let groups = self
            .user_groups(tenant, &id)
            .await?
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        Ok(Some(LoginUser {
            id,
            active: active != 0,
            groups,
        }))
    }

    async fn ready(&self) -> Result<(), ScimError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)
            .map(|_| ())
    }
}
