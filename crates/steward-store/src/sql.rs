//! The one SQL interface the store's queries are written against, with two implementations:
//! SQLite (`rusqlite`, the embedded default) and PostgreSQL (`postgres`). Queries are written
//! once, in the SQL both engines accept, with SQLite's numbered placeholders (`?1`); on
//! PostgreSQL they are rewritten to `$1`. Values cross the boundary as [`Value`]s, so each
//! query method reads the same on both backends.
//!
//! Portable SQL used by the store: `INSERT … ON CONFLICT … DO NOTHING`, `COALESCE`,
//! `CAST(… AS BIGINT)` around aggregates that PostgreSQL widens (`sum`), integers for
//! booleans, text for times (RFC 3339 UTC with milliseconds, which sorts as time).

use std::cell::RefCell;
use std::fmt;

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Errors of one statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("the query returned no rows")]
    NoRows,
    #[error("column {column}: {message}")]
    Conversion { column: usize, message: String },
}

impl Error {
    /// The connection to the database is gone (PostgreSQL down or unreachable); the request
    /// may succeed once it is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Postgres(e) => {
                // A closed connection, a socket error, or the server saying it is going away
                // or full (classes 08, 57P, 53300).
                let io = std::error::Error::source(e)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
                e.is_closed()
                    || io
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        c.starts_with("08") || c.starts_with("57P") || c == "53300"
                    })
            }
            _ => false,
        }
    }
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(src) => format!("PostgreSQL: {e}: {src}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `query_row(…).optional()`: no row is `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Values in
// ---------------------------------------------------------------------------------------

/// A Rust value that can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for f32 {
    fn to_value(&self) -> Value {
        Value::Real(f64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

/// The parameters of one statement: `[]`, `[a]`, `params![a, b]`, or `params_from_iter(…)`.
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for [&dyn ToValue; 0] {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for &[&dyn ToValue] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
        impl<T: ToValue> Params for &[T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

/// Parameters from an iterator of values of one type.
pub fn params_from_iter<I>(iter: I) -> Vec<Value>
where
    I: IntoIterator,
    I::Item: ToValue,
{
    iter.into_iter().map(|v| v.to_value()).collect()
}

/// `params![a, b, c]`: parameters of different types.
macro_rules! params {
    () => { [] as [&dyn $crate::sql::ToValue; 0] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::ToValue),+] as &[&dyn $crate::sql::ToValue] };
}
pub(crate) use params;

// ---------------------------------------------------------------------------------------
// Values out
// ---------------------------------------------------------------------------------------

/// A Rust type a column can be read into.
pub trait FromValue: Sized {
    fn from_value(v: Value) -> std::result::Result<Self, String>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> std::result::Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} does not fit in {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
int_from_value!(i32, i64, u32, u64, usize);

impl FromValue for bool {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b),
            Value::Text(s) => Ok(s.into_bytes()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        Ok(v)
    }
}

/// One result row.
pub struct Row<'r> {
    inner: RowInner<'r>,
}

enum RowInner<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Pg(&'r postgres::Row),
}

/// A column position (rusqlite's `get::<_, T>(i)` shape is kept).
pub trait ColumnIndex {
    fn index(self) -> usize;
}
impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row<'_> {
    pub fn get<I: ColumnIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let column = idx.index();
        let v = self.value(column)?;
        T::from_value(v).map_err(|message| Error::Conversion { column, message })
    }

    fn value(&self, i: usize) -> Result<Value> {
        match &self.inner {
            RowInner::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            }
            RowInner::Pg(r) => pg_value(r, i),
        }
    }
}

fn pg_value(r: &postgres::Row, i: usize) -> Result<Value> {
    use postgres::types::Type;
    let Some(col) = r.columns().get(i) else {
        return Err(Error::Conversion {
            column: i,
            message: "no such column".into(),
        });
    };
    let ty = col.type_().clone();
    let v = if ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
    } else if ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into()))
    } else if ty == Type::INT2 {
        r.try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into()))
    } else if ty == Type::BOOL {
        r.try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into()))
    } else if ty == Type::FLOAT8 {
        r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
    } else if ty == Type::FLOAT4 {
        r.try_get::<_, Option<f32>>(i)?
            .map(|v| Value::Real(v.into()))
    } else if ty == Type::BYTEA {
        r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
    } else if ty == Type::TEXT || ty == Type::VARCHAR || ty == Type::BPCHAR || ty == Type::NAME {
        r.try_get::<_, Option<String>>(i)?.map(Value::Text)
    } else {
        return Err(Error::Conversion {
            column: i,
            message: format!(
                "PostgreSQL type {ty} is not read by the store (cast it in the query)"
            ),
        });
    };
    Ok(v.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL parameters: a value written in the type PostgreSQL inferred for its placeholder
// ---------------------------------------------------------------------------------------

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes_mut::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::{IsNull, Type};
        let wrong = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {self:?} to a parameter of type {ty}").into()
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => {
                if *ty == Type::INT8 {
                    v.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*v).map_err(|_| wrong())?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*v).map_err(|_| wrong())?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*v != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    (*v as f64).to_sql(ty, out)
                } else if *ty == Type::FLOAT4 {
                    (*v as f32).to_sql(ty, out)
                } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::UNKNOWN {
                    v.to_string().as_str().to_sql(&Type::TEXT, out)
                } else {
                    Err(wrong())
                }
            }
            Value::Real(v) => {
                if *ty == Type::FLOAT8 {
                    v.to_sql(ty, out)
                } else if *ty == Type::FLOAT4 {
                    (*v as f32).to_sql(ty, out)
                } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                    v.to_string().as_str().to_sql(&Type::TEXT, out)
                } else {
                    Err(wrong())
                }
            }
            Value::Text(s) => {
                if *ty == Type::TEXT
                    || *ty == Type::VARCHAR
                    || *ty == Type::BPCHAR
                    || *ty == Type::NAME
                    || *ty == Type::UNKNOWN
                {
                    s.as_str().to_sql(&Type::TEXT, out)
                } else if *ty == Type::INT8 {
                    s.parse::<i64>().map_err(|_| wrong())?.to_sql(ty, out)
                } else if *ty == Type::BYTEA {
                    s.as_bytes().to_sql(ty, out)
                } else {
                    Err(wrong())
                }
            }
            Value::Blob(b) => {
                if *ty == Type::BYTEA {
                    b.as_slice().to_sql(ty, out)
                } else {
                    Err(wrong())
                }
            }
        }
    }

    fn accepts(_ty: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

mod bytes_mut {
    pub use postgres::types::private::BytesMut;
}

/// SQLite's `?1` / `?` placeholders as PostgreSQL's `$1`, outside quoted text.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0usize;
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&format!("${next}"));
                } else {
                    next = next.max(digits.parse().unwrap_or(0));
                    out.push('$');
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// A transaction on either backend
// ---------------------------------------------------------------------------------------

/// The connection a [`crate::Db`] runs its statements on: a SQLite transaction or a
/// PostgreSQL one.
pub enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(RefCell<postgres::Transaction<'a>>),
}

impl fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conn::Sqlite(_) => f.write_str("Conn::Sqlite"),
            Conn::Pg(_) => f.write_str("Conn::Pg"),
        }
    }
}

/// Prepares `sql` with its placeholders typed by the values bound to them, so that a
/// placeholder PostgreSQL cannot type by itself (`?1 IS NULL OR col = ?1`) still works. A
/// NULL has no type: it is left for PostgreSQL to infer, then tried as text, then as an
/// integer.
fn pg_prepare(
    tx: &mut postgres::Transaction<'_>,
    sql: &str,
    values: &[Value],
) -> Result<postgres::Statement> {
    use postgres::types::{Kind, Type};
    let sql = to_postgres(sql);
    let unspecified = Type::new("unspecified".into(), 0, Kind::Simple, "pg_catalog".into());
    let typed = |null: &Type| -> Vec<Type> {
        values
            .iter()
            .map(|v| match v {
                Value::Null => null.clone(),
                Value::Int(_) => Type::INT8,
                Value::Real(_) => Type::FLOAT8,
                Value::Text(_) => Type::TEXT,
                Value::Blob(_) => Type::BYTEA,
            })
            .collect()
    };
    if !values.contains(&Value::Null) {
        return Ok(tx.prepare_typed(&sql, &typed(&unspecified))?);
    }
    // A failed prepare would abort the transaction: try each way inside a savepoint, and
    // remember which way worked for this statement.
    static NULL_AS: std::sync::Mutex<Option<std::collections::HashMap<String, usize>>> =
        std::sync::Mutex::new(None);
    let known = NULL_AS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&sql).copied());
    let ways = [unspecified, Type::TEXT, Type::INT8];
    if let Some(i) = known {
        return Ok(tx.prepare_typed(&sql, &typed(&ways[i]))?);
    }
    let mut last = None;
    for (i, null) in ways.iter().enumerate() {
        let mut sp = tx.savepoint("steward_prepare")?;
        match sp.prepare_typed(&sql, &typed(null)) {
            Ok(st) => {
                sp.commit()?;
                NULL_AS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(Default::default)
                    .insert(sql, i);
                return Ok(st);
            }
            Err(e) if e.code().is_some_and(|c| c.code().starts_with("42")) => {
                drop(sp);
                last = Some(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.expect("tried at least once").into())
}

fn pg_params(values: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl<'a> Conn<'a> {
    /// Whether this is the PostgreSQL backend (for the few statements that differ).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values();
        match self {
            Conn::Sqlite(c) => {
                Ok(c.execute(sql, rusqlite::params_from_iter(sqlite_values(&values)))?)
            }
            Conn::Pg(tx) => {
                let mut tx = tx.borrow_mut();
                let st = pg_prepare(&mut tx, sql, &values)?;
                Ok(tx.execute(&st, &pg_params(&values))? as usize)
            }
        }
    }

    /// Runs several statements without parameters (migrations).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(tx) => Ok(tx.borrow_mut().batch_execute(sql)?),
        }
    }

    /// The first row mapped by `f`; [`Error::NoRows`] if there is none.
    pub fn query_row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        let values = params.values();
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(sqlite_values(&values)))?;
                match rows.next()? {
                    Some(r) => f(&Row {
                        inner: RowInner::Sqlite(r),
                    }),
                    None => Err(Error::NoRows),
                }
            }
            Conn::Pg(tx) => {
                let mut tx = tx.borrow_mut();
                let st = pg_prepare(&mut tx, sql, &values)?;
                let rows = tx.query(&st, &pg_params(&values))?;
                match rows.first() {
                    Some(r) => f(&Row {
                        inner: RowInner::Pg(r),
                    }),
                    None => Err(Error::NoRows),
                }
            }
        }
    }

    /// A statement to run with [`Statement::query_map`].
    pub fn prepare<'c>(&'c self, sql: &str) -> Result<Statement<'c, 'a>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    /// The id of the row the last `INSERT` added (its `id` column).
    pub fn last_insert_rowid(&self) -> Result<i64> {
        match self {
            Conn::Sqlite(c) => Ok(c.last_insert_rowid()),
            Conn::Pg(tx) => Ok(tx
                .borrow_mut()
                .query_one("SELECT lastval()", &[])?
                .try_get::<_, i64>(0)?),
        }
    }
}

/// A query to map row by row.
pub struct Statement<'c, 'a> {
    conn: &'c Conn<'a>,
    sql: String,
}

impl Statement<'_, '_> {
    /// Every row mapped by `f`.
    pub fn query_map<T, P: Params>(
        &mut self,
        params: P,
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let values = params.values();
        let out: Vec<Result<T>> = match self.conn {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(&self.sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(sqlite_values(&values)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row {
                        inner: RowInner::Sqlite(r),
                    }));
                }
                out
            }
            Conn::Pg(tx) => {
                let mut tx = tx.borrow_mut();
                let st = pg_prepare(&mut tx, &self.sql, &values)?;
                let rows = tx.query(&st, &pg_params(&values))?;
                rows.iter()
                    .map(|r| {
                        f(&Row {
                            inner: RowInner::Pg(r),
                        })
                    })
                    .collect()
            }
        };
        Ok(out.into_iter())
    }
}

fn sqlite_values(values: &[Value]) -> impl Iterator<Item = rusqlite::types::Value> + '_ {
    values.iter().map(|v| match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    })
}
