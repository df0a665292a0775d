//! Ordered metadata (key -> value) with typed getters.

use std::collections::HashMap;

use crate::error::{GgufError, Result};
use crate::value::{Array, MetadataValueType, Value};

/// The metadata of a GGUF file: keys in file order, each with one [`Value`].
///
/// Typed getters fail with [`GgufError::MissingKey`] when the key is absent and with
/// [`GgufError::WrongType`] (naming the key, the expected and the found type) otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

fn wrong(key: &str, expected: &str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected: expected.to_string(),
        found: found.type_name(),
    }
}

fn int_as<T: TryFrom<i128>>(key: &str, expected: &str, v: &Value) -> Result<T> {
    let i = v.as_integer().ok_or_else(|| wrong(key, expected, v))?;
    T::try_from(i).map_err(|_| GgufError::WrongType {
        key: key.to_string(),
        expected: expected.to_string(),
        found: format!("{} value {i} (out of range)", v.type_name()),
    })
}

impl<K: Into<String>> FromIterator<(K, Value)> for Metadata {
    /// Collects key-value pairs in order; a repeated key keeps its first position and its last
    /// value (as [`Metadata::insert`]).
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        m.extend(iter);
        m
    }
}

impl<K: Into<String>> Extend<(K, Value)> for Metadata {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl Metadata {
    /// An empty metadata set (for building files with [`crate::GgufWriter`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`. An existing key keeps its position and gets the new value, which is
    /// returned.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let key = key.into();
        if let Some(&i) = self.index.get(&key) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        None
    }

    /// Inserts a key that must be new (the reader's path): duplicate keys are an error.
    pub(crate) fn insert_new(&mut self, key: String, value: Value) -> Result<()> {
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.insert(key, value);
        Ok(())
    }

    /// Reserves room for `n` more entries.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        self.index.reserve(n);
    }

    /// Removes `key`, returning its value; later keys keep their order.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// All entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn need(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.need(key)?;
        v.as_str().ok_or_else(|| wrong(key, "string", v))
    }

    /// An integer of any GGUF integer type that fits in `u32` losslessly.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        int_as(key, "integer fitting u32", self.need(key)?)
    }

    /// An integer of any GGUF integer type that fits in `u64` losslessly.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        int_as(key, "integer fitting u64", self.need(key)?)
    }

    /// An integer of any GGUF integer type that fits in `i32` losslessly.
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        int_as(key, "integer fitting i32", self.need(key)?)
    }

    /// A float: `F32`, or `F64` rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.need(key)?;
        v.as_float()
            .map(|f| f as f32)
            .ok_or_else(|| wrong(key, "f32 or f64", v))
    }

    /// A boolean.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.need(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(wrong(key, "bool", v)),
        }
    }

    /// An array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.need(key)?;
        v.as_array().ok_or_else(|| wrong(key, "array", v))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let a = self.get_array(key)?;
        if a.elem_type != MetadataValueType::String {
            return Err(GgufError::WrongType {
                key: key.to_string(),
                expected: "array of string".into(),
                found: a.type_name(),
            });
        }
        a.values
            .iter()
            .map(|v| v.as_str().ok_or_else(|| wrong(key, "array of string", v)))
            .collect()
    }

    /// An array of integers (any integer element type) whose every element fits in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let a = self.get_array(key)?;
        a.values
            .iter()
            .map(|v| int_as(key, "array of integers fitting i32", v))
            .collect()
    }

    /// An array of `F32` or `F64` values (as `f32`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let a = self.get_array(key)?;
        if !matches!(a.elem_type, MetadataValueType::F32 | MetadataValueType::F64) {
            return Err(GgufError::WrongType {
                key: key.to_string(),
                expected: "array of f32 or f64".into(),
                found: a.type_name(),
            });
        }
        a.values
            .iter()
            .map(|v| {
                v.as_float()
                    .map(|f| f as f32)
                    .ok_or_else(|| wrong(key, "array of f32", v))
            })
            .collect()
    }

    /// Like [`Metadata::get_str`], but `Ok(None)` when the key is absent.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.opt(key, Self::get_str)
    }

    /// Like [`Metadata::get_u32`], but `Ok(None)` when the key is absent.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt(key, Self::get_u32)
    }

    /// Like [`Metadata::get_u64`], but `Ok(None)` when the key is absent.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.opt(key, Self::get_u64)
    }

    /// Like [`Metadata::get_i32`], but `Ok(None)` when the key is absent.
    pub fn opt_i32(&self, key: &str) -> Result<Option<i32>> {
        self.opt(key, Self::get_i32)
    }

    /// Like [`Metadata::get_f32`], but `Ok(None)` when the key is absent.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.opt(key, Self::get_f32)
    }

    /// Like [`Metadata::get_bool`], but `Ok(None)` when the key is absent.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.opt(key, Self::get_bool)
    }

    fn opt<'a, T>(
        &'a self,
        key: &str,
        get: impl FnOnce(&'a Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.contains_key(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}
