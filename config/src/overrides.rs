//! `--set a.b.c=value` overrides on a YAML config tree. A path component selects a mapping key, a list element by
//! index (`data.train_transforms.2.prob`), or a list element by its `name` (`data.train_transforms.Spacing.pixdim`).

use yaml_serde::Value;

use crate::error::{ConfigError, Result};

/// Apply one `a.b.c=value` override (value in YAML syntax) to a config tree.
///
/// Missing intermediate mappings are created, so a misspelt key surfaces as an unknown-key error when the tree is
/// parsed. In a list, a numeric component is an index and any other component names the one element whose `name`
/// is that component (transform lists); a name that matches no element, or several, is an error listing the
/// names there are.
pub fn apply_override(root: &mut Value, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::key(spec, "an override must look like `a.b.c=value`"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::key(key, "empty component in the key path"));
    }
    let value: Value = yaml_serde::from_str(raw)
        .map_err(|e| ConfigError::key(key, format!("value {raw:?} is not valid YAML: {e}")))?;
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (depth, part) in parts.iter().enumerate() {
        let here = parts[..=depth].join(".");
        let parent = parts[..depth].join(".");
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let slot = match node {
            Value::Mapping(m) => m
                .entry(Value::String((*part).to_string()))
                .or_insert(Value::Null),
            Value::Sequence(s) => {
                let i = list_index(s, part, &here, &parent)?;
                &mut s[i]
            }
            _ => {
                return Err(ConfigError::key(
                    &here,
                    format!("`{parent}` is a scalar, it has no key `{part}`"),
                ))
            }
        };
        if depth + 1 == parts.len() {
            *slot = value;
            return Ok(());
        }
        node = slot;
    }
    Ok(())
}

/// The element of `list` that `part` selects: an index, or the one element whose `name` is `part`.
fn list_index(list: &[Value], part: &str, here: &str, parent: &str) -> Result<usize> {
    let len = list.len();
    if let Ok(i) = part.parse::<usize>() {
        return if i < len {
            Ok(i)
        } else {
            Err(ConfigError::key(
                here,
                format!("index {i} is past the end of a list of {len}"),
            ))
        };
    }
    let name_of = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
    let names: Vec<Option<String>> = list.iter().map(name_of).collect();
    if names.iter().all(Option::is_none) {
        return Err(ConfigError::key(
            here,
            format!("`{part}` is not an index into a list of {len}"),
        ));
    }
    let hits: Vec<usize> = (0..len)
        .filter(|&i| names[i].as_deref() == Some(part))
        .collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => {
            let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
            Err(ConfigError::key(
                here,
                format!(
                    "no element of `{parent}` is named `{part}` (names: {}); use a name or an index below {len}",
                    known.join(", ")
                ),
            ))
        }
        many => {
            let at: Vec<String> = many.iter().map(|i| format!("{parent}.{i}")).collect();
            Err(ConfigError::key(
                here,
                format!(
                    "`{part}` names {} elements of `{parent}` ({}); select one by index",
                    many.len(),
                    at.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Value {
        yaml_serde::from_str(
            "a:\n  b: 1\n  list: [{x: 1}, {x: 2}]\n  t: [{name: Pad, s: 1}, {name: Flip, p: 0.1}, {name: Flip, p: 0.2}]\n",
        )
        .unwrap()
    }

    #[test]
    fn sets_nested_keys_and_list_items() {
        let mut t = tree();
        apply_override(&mut t, "a.b=[1, 2]").unwrap();
        apply_override(&mut t, "a.list.1.x=hello").unwrap();
        apply_override(&mut t, "a.new.deep=3.5").unwrap();
        assert_eq!(
            t["a"]["b"],
            yaml_serde::from_str::<Value>("[1, 2]").unwrap()
        );
        assert_eq!(t["a"]["list"][1]["x"], Value::String("hello".into()));
        assert_eq!(t["a"]["new"]["deep"].as_f64(), Some(3.5));
    }

    #[test]
    fn selects_list_elements_by_name() {
        let mut t = tree();
        apply_override(&mut t, "a.t.Pad.s=[2, 2, 5]").unwrap();
        assert_eq!(
            t["a"]["t"][0]["s"],
            yaml_serde::from_str::<Value>("[2, 2, 5]").unwrap()
        );
        apply_override(&mut t, "a.t.Pad={name: Pad, s: 7}").unwrap();
        assert_eq!(t["a"]["t"][0]["s"].as_u64(), Some(7));
        apply_override(&mut t, "a.t.2.p=0.5").unwrap();
        assert_eq!(t["a"]["t"][2]["p"].as_f64(), Some(0.5));
        let e = apply_override(&mut t, "a.t.Flip.p=1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a.t.Flip`") && e.contains("2 elements") && e.contains("a.t.1, a.t.2"),
            "{e}"
        );
        let e = apply_override(&mut t, "a.t.Spacing.pixdim=1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a.t.Spacing`") && e.contains("names: Pad, Flip, Flip"),
            "{e}"
        );
        let e = apply_override(&mut t, "a.list.x=1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a.list.x`") && e.contains("not an index"),
            "{e}"
        );
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
        let e = apply_override(&mut t, "a.b=[1,").unwrap_err().to_string();
        assert!(e.contains("`a.b`") && e.contains("not valid YAML"), "{e}");
    }
}
