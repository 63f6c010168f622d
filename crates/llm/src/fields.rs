//! Typed reads of JSON fields that name the field on failure, shared by both wire formats
//! so that every "wrong type" answer reads the same way.

use crate::error::{LlmError, field};
use serde_json::{Map, Value};

pub(crate) type Obj = Map<String, Value>;

/// The path of `key` under `at` (`messages[0]` + `role` → `messages[0].role`).
pub(crate) fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// A field's value; JSON `null` reads as absent, because clients send `null` for "unset".
pub(crate) fn get<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(crate) fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, LlmError> {
    v.as_object().ok_or_else(|| field(at, "expected an object"))
}

pub(crate) fn opt_object<'a>(
    obj: &'a Obj,
    at: &str,
    key: &str,
) -> Result<Option<&'a Obj>, LlmError> {
    get(obj, key)
        .map(|v| {
            v.as_object()
                .ok_or_else(|| field(path(at, key), "expected an object"))
        })
        .transpose()
}

pub(crate) fn opt_str<'a>(obj: &'a Obj, at: &str, key: &str) -> Result<Option<&'a str>, LlmError> {
    get(obj, key)
        .map(|v| {
            v.as_str()
                .ok_or_else(|| field(path(at, key), "expected a string"))
        })
        .transpose()
}

pub(crate) fn req_str<'a>(obj: &'a Obj, at: &str, key: &str) -> Result<&'a str, LlmError> {
    opt_str(obj, at, key)?.ok_or_else(|| field(path(at, key), "required string"))
}

pub(crate) fn opt_bool(obj: &Obj, at: &str, key: &str) -> Result<Option<bool>, LlmError> {
    get(obj, key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| field(path(at, key), "expected a boolean"))
        })
        .transpose()
}

pub(crate) fn opt_f64(obj: &Obj, at: &str, key: &str) -> Result<Option<f64>, LlmError> {
    get(obj, key)
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| field(path(at, key), "expected a number"))
        })
        .transpose()
}

/// A token count: a whole number from 1 up; zero would ask for an empty answer, which
/// neither provider accepts.
pub(crate) fn opt_count(obj: &Obj, at: &str, key: &str) -> Result<Option<u32>, LlmError> {
    get(obj, key)
        .map(|v| {
            v.as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| field(path(at, key), "expected a positive integer"))
        })
        .transpose()
}

pub(crate) fn opt_array<'a>(
    obj: &'a Obj,
    at: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, LlmError> {
    get(obj, key)
        .map(|v| {
            v.as_array()
                .ok_or_else(|| field(path(at, key), "expected an array"))
        })
        .transpose()
}

/// A list of strings (stop sequences), naming the first element that is not one.
pub(crate) fn strings(list: &[Value], at: &str) -> Result<Vec<String>, LlmError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| field(format!("{at}[{i}]"), "expected a string"))
        })
        .collect()
}

/// A tool's argument text as JSON text: clients normally send a string, but some send the
/// object itself, which means the same thing.
pub(crate) fn arguments_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}
