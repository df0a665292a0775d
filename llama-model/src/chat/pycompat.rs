//! Python methods that Hugging Face chat templates call on strings and dicts (minijinja has
//! filters for these but not the method syntax).

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, State, Value};

fn str_arg(args: &[Value], i: usize) -> Option<&str> {
    args.get(i).and_then(Value::as_str)
}

fn unknown() -> Error {
    Error::from(ErrorKind::UnknownMethod)
}

/// Strips `chars` (or whitespace) from the chosen ends.
fn strip(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let keep = |c: char| match chars {
        Some(set) => !set.contains(c),
        None => !c.is_whitespace(),
    };
    let mut t = s;
    if left {
        t = t.trim_start_matches(|c| !keep(c));
    }
    if right {
        t = t.trim_end_matches(|c| !keep(c));
    }
    t.to_owned()
}

fn string_method(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    Ok(match method {
        "strip" => Value::from(strip(s, str_arg(args, 0), true, true)),
        "lstrip" => Value::from(strip(s, str_arg(args, 0), true, false)),
        "rstrip" => Value::from(strip(s, str_arg(args, 0), false, true)),
        "startswith" => Value::from(str_arg(args, 0).is_some_and(|p| s.starts_with(p))),
        "endswith" => Value::from(str_arg(args, 0).is_some_and(|p| s.ends_with(p))),
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "replace" => match (str_arg(args, 0), str_arg(args, 1)) {
            (Some(from), Some(to)) => Value::from(s.replace(from, to)),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "replace() takes two strings",
                ))
            }
        },
        "split" => {
            let parts: Vec<Value> = match str_arg(args, 0) {
                Some(sep) if !sep.is_empty() => s.split(sep).map(Value::from).collect(),
                _ => s.split_whitespace().map(Value::from).collect(),
            };
            Value::from(parts)
        }
        _ => return Err(unknown()),
    })
}

fn map_method(map: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    let keys: Vec<Value> = map.try_iter()?.collect();
    Ok(match method {
        "keys" => Value::from(keys),
        "values" => {
            let values: Result<Vec<Value>, Error> = keys.iter().map(|k| map.get_item(k)).collect();
            Value::from(values?)
        }
        "items" => {
            let mut items = Vec::with_capacity(keys.len());
            for k in keys {
                let v = map.get_item(&k)?;
                items.push(Value::from(vec![k, v]));
            }
            Value::from(items)
        }
        "get" => {
            let key = args.first().cloned().unwrap_or(Value::UNDEFINED);
            let v = map.get_item(&key)?;
            if v.is_undefined() {
                args.get(1).cloned().unwrap_or(Value::from(()))
            } else {
                v
            }
        }
        _ => return Err(unknown()),
    })
}

/// The environment's unknown-method callback.
pub(crate) fn call_method(
    _state: &State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::String => string_method(value.as_str().unwrap_or(""), method, args),
        ValueKind::Map => map_method(value, method, args),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_string_semantics() {
        // Python: "  ab  ".strip() == "ab"; "xxaxx".strip("x") == "a"; "a,b".split(",") == ["a","b"]
        assert_eq!(strip("  ab  ", None, true, true), "ab");
        assert_eq!(strip("xxaxx", Some("x"), true, false), "axx");
        assert_eq!(strip("xxaxx", Some("x"), true, true), "a");
        let v = string_method("a,b", "split", &[Value::from(",")]).unwrap();
        assert_eq!(v.len(), Some(2));
        let v = string_method(" a  b ", "split", &[]).unwrap();
        assert_eq!(v.len(), Some(2));
        assert!(string_method("abc", "startswith", &[Value::from("ab")])
            .unwrap()
            .is_true());
        assert!(string_method("abc", "nosuch", &[]).is_err());
    }
}
