//! `--set a.b.c=value` overrides on the YAML tree, and deserialisation whose errors name the full key path.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::error::{Result, TrainError};

/// Apply one `a.b.c=value` override (value in YAML syntax) to a config tree.
///
/// Missing intermediate mappings are created, so a misspelt key surfaces as an unknown-key error when the tree is
/// parsed; numeric components index into sequences (`data.train_transforms.2.prob=0.3`).
pub fn apply_override(root: &mut Value, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| TrainError::config(spec, "an override must look like `a.b.c=value`"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(TrainError::config(key, "empty component in the key path"));
    }
    let value: Value = serde_yaml::from_str(raw)
        .map_err(|e| TrainError::config(key, format!("value {raw:?} is not valid YAML: {e}")))?;
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (depth, part) in parts.iter().enumerate() {
        let here = parts[..=depth].join(".");
        let last = depth + 1 == parts.len();
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        node = match node {
            Value::Mapping(m) => {
                let k = Value::String((*part).to_string());
                if last {
                    m.insert(k, value);
                    return Ok(());
                }
                m.entry(k).or_insert(Value::Null)
            }
            Value::Sequence(s) => {
                let len = s.len();
                let i: usize = part.parse().map_err(|_| {
                    TrainError::config(
                        &here,
                        format!("`{part}` is not an index into a list of {len}"),
                    )
                })?;
                let slot = s.get_mut(i).ok_or_else(|| {
                    TrainError::config(
                        &here,
                        format!("index {i} is past the end of a list of {len}"),
                    )
                })?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(TrainError::config(
                    &here,
                    format!(
                        "`{}` is a scalar, it has no key `{part}`",
                        parts[..depth].join(".")
                    ),
                ))
            }
        };
    }
    Ok(())
}

/// Deserialise a config tree; errors carry the dotted path of the key (unknown keys name their full path).
pub fn parse_config_value<T: DeserializeOwned>(value: &Value) -> Result<T> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let prefix = dotted(e.path());
        let msg = e.inner().to_string();
        let key = if let Some(name) = quoted(&msg, "unknown field `") {
            if prefix.rsplit('.').next() == Some(name) {
                prefix
            } else {
                find_key(value, &prefix, name).unwrap_or_else(|| join(&prefix, name))
            }
        } else if let Some(name) = quoted(&msg, "missing field `") {
            join(&prefix, name)
        } else {
            prefix
        };
        TrainError::config(
            if key.is_empty() {
                "<root>".to_string()
            } else {
                key
            },
            msg,
        )
    })
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let parts: Vec<String> = path
        .iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    parts.join(".")
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The text between `start` and the next backtick.
fn quoted<'a>(msg: &'a str, start: &str) -> Option<&'a str> {
    let rest = &msg[msg.find(start)? + start.len()..];
    Some(&rest[..rest.find('`')?])
}

/// Full path of the first mapping key `name` below `prefix` (serde loses the path inside tagged enums).
fn find_key(root: &Value, prefix: &str, name: &str) -> Option<String> {
    let mut node = root;
    if !prefix.is_empty() {
        for part in prefix.split('.') {
            node = match node {
                Value::Mapping(m) => m.get(part)?,
                Value::Sequence(s) => s.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
    }
    search(node, name).map(|rel| join(prefix, &rel))
}

fn search(node: &Value, name: &str) -> Option<String> {
    match node {
        Value::Mapping(m) => {
            if m.contains_key(name) {
                return Some(name.to_string());
            }
            m.iter()
                .find_map(|(k, v)| Some(format!("{}.{}", k.as_str()?, search(v, name)?)))
        }
        Value::Sequence(s) => s
            .iter()
            .enumerate()
            .find_map(|(i, v)| Some(format!("{i}.{}", search(v, name)?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Value {
        serde_yaml::from_str("a:\n  b: 1\n  list: [{x: 1}, {x: 2}]\n").unwrap()
    }

    #[test]
    fn sets_nested_keys_and_list_items() {
        let mut t = tree();
        apply_override(&mut t, "a.b=[1, 2]").unwrap();
        apply_override(&mut t, "a.list.1.x=hello").unwrap();
        apply_override(&mut t, "a.new.deep=3.5").unwrap();
        assert_eq!(
            t["a"]["b"],
            serde_yaml::from_str::<Value>("[1, 2]").unwrap()
        );
        assert_eq!(t["a"]["list"][1]["x"], Value::String("hello".into()));
        assert_eq!(t["a"]["new"]["deep"].as_f64(), Some(3.5));
    }

    #[test]
    fn override_errors_name_the_key() {
        let mut t = tree();
        let e = apply_override(&mut t, "a.list.7.x=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.list.7") && e.contains("past the end"), "{e}");
        let e = apply_override(&mut t, "a.b.c=1").unwrap_err().to_string();
        assert!(e.contains("a.b.c") && e.contains("scalar"), "{e}");
        assert!(apply_override(&mut t, "a.b")
            .unwrap_err()
            .to_string()
            .contains("a.b.c=value"));
        assert!(apply_override(&mut t, "a..b=1").is_err());
    }

    #[test]
    fn finds_keys_below_a_prefix() {
        let t: Value =
            serde_yaml::from_str("m:\n  enc:\n    dept: 1\nl: [{}, {mode: 2}]\n").unwrap();
        assert_eq!(find_key(&t, "m", "dept").as_deref(), Some("m.enc.dept"));
        assert_eq!(find_key(&t, "l", "mode").as_deref(), Some("l.1.mode"));
        assert_eq!(find_key(&t, "", "zzz"), None);
    }
}
