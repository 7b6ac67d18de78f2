//! Portable SQL: what projections and inbox handlers hand to a read store.
//!
//! Why statements instead of a connection: the same projection code must run
//! on SQLite and PostgreSQL, inside a transaction the read store owns (with
//! the checkpoint or inbox row). Placeholders are `$1, $2, …` on both
//! backends; write SQL both understand (`INSERT … ON CONFLICT … DO UPDATE`,
//! `BIGINT`, `TEXT`, `CASE`).

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer (BIGINT / INTEGER).
    Int(i64),
    /// A floating-point number (DOUBLE PRECISION / REAL).
    Real(f64),
    /// Text.
    Text(String),
}

impl SqlValue {
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// One statement with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    /// The SQL, with `$1, $2, …` placeholders.
    pub sql: String,
    /// The parameters, in placeholder order.
    pub params: Vec<SqlValue>,
}

impl Sql {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Sql {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Adds the next parameter.
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.params.push(value.into());
        self
    }
}

/// Rewrites `$N` placeholders to SQLite's `?N`.
pub(crate) fn to_sqlite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}
