//! Reading a YAML config: the tree from a file or text, `--set` overrides applied in order, and typed parsing whose
//! errors carry the dotted path of the key (unknown keys name their full path).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
pub use yaml_serde::Value;

use crate::error::{ConfigError, Result};
use crate::overrides::apply_override;

/// Parse YAML text into a tree; `origin` (the file) is named in the error.
pub fn parse_text(text: &str, origin: &Path) -> Result<Value> {
    yaml_serde::from_str(text)
        .map_err(|e| ConfigError::format(origin, format!("invalid YAML: {e}")))
}

/// Read a YAML file and apply `key=value` overrides in order.
pub fn read_tree(path: &Path, overrides: &[String]) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    let mut value = parse_text(&text, path)?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    Ok(value)
}

/// Read a YAML file, apply overrides, and parse it as `T` (any config type, e.g. a `prepare` config).
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    parse_config_value(&read_tree(path, overrides)?)
}

/// Write `value` as YAML to `path` atomically (a temporary file in the same folder, fsync, rename).
pub fn save<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let text =
        yaml_serde::to_string(value).map_err(|e| ConfigError::format(path, e.to_string()))?;
    Ok(spec::file::write_atomic(path, text.as_bytes())?)
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
        ConfigError::key(if key.is_empty() { "<root>".into() } else { key }, msg)
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

    #[test]
    fn finds_keys_below_a_prefix() {
        let t: Value =
            yaml_serde::from_str("m:\n  enc:\n    dept: 1\nl: [{}, {mode: 2}]\n").unwrap();
        assert_eq!(find_key(&t, "m", "dept").as_deref(), Some("m.enc.dept"));
        assert_eq!(find_key(&t, "l", "mode").as_deref(), Some("l.1.mode"));
        assert_eq!(find_key(&t, "", "zzz"), None);
    }

    #[test]
    fn save_is_atomic_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        let v: Value = yaml_serde::from_str("a: {b: [1, 2]}\n").unwrap();
        save(&v, &p).unwrap();
        save(&v, &p).unwrap();
        assert_eq!(
            read_tree(&p, &["a.b.1=3".into()]).unwrap()["a"]["b"][1].as_u64(),
            Some(3)
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
        let e = save(&v, &dir.path().join("missing/c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing/c.yaml"), "{e}");
    }
}
