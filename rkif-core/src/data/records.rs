//! Checked access to the fields of JSON records, with errors that name the file, the
//! record (position and id) and the field.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// The JSON type of `value`, in words, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The top-level array of `json`, or an error naming `path`.
pub(crate) fn array<'a>(path: &Path, json: &'a Value) -> Result<&'a [Value]> {
    json.as_array().map(Vec::as_slice).ok_or_else(|| {
        Error::format(
            path,
            format!(
                "expected a JSON array of records, found {}",
                type_name(json)
            ),
        )
    })
}

/// One record of a data file, positioned for error messages.
pub(crate) struct Record<'a> {
    path: &'a Path,
    index: usize,
    fields: &'a serde_json::Map<String, Value>,
}

impl<'a> Record<'a> {
    /// Record number `index` (0-based) of `path`; fails unless it is a JSON object.
    pub(crate) fn new(path: &'a Path, index: usize, value: &'a Value) -> Result<Self> {
        let fields = value.as_object().ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "record {index}: expected an object, found {}",
                    type_name(value)
                ),
            )
        })?;
        Ok(Record {
            path,
            index,
            fields,
        })
    }

    /// The field `name`, which must be present.
    pub(crate) fn field(&self, name: &str) -> Result<&'a Value> {
        self.fields
            .get(name)
            .ok_or_else(|| self.error(format!("field `{name}` is missing")))
    }

    /// The field `name`, which must be a string.
    pub(crate) fn string(&self, name: &str) -> Result<&'a str> {
        let value = self.field(name)?;
        value.as_str().ok_or_else(|| {
            self.error(format!(
                "field `{name}` is {}, expected a string",
                type_name(value)
            ))
        })
    }

    /// An error about this record: `path: record 17 (id "x"): what`.
    pub(crate) fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::format(self.path, format!("{}: {what}", self.describe()))
    }

    /// `record 17 (id "agnews_17")`, or `record 17` when the id is absent or not a string.
    pub(crate) fn describe(&self) -> String {
        match self.fields.get("id").and_then(Value::as_str) {
            Some(id) => format!("record {} (id {id:?})", self.index),
            None => format!("record {}", self.index),
        }
    }
}
