//! Metric keys: a name, then the measurement's tags, in one string; and
//! the bounds that keep a guest from forging or bloating them.

use crate::limits::truncate;

/// Separates a request name from its tags in a metric key.
pub const TAG_SEPARATOR: char = '\u{1f}';

/// The metric key of a request: its name, then `key=value` tags sorted.
pub fn tagged_key(name: &str, tags: &[(String, String)]) -> String {
    if tags.is_empty() {
        return name.to_owned();
    }
    let mut sorted: Vec<&(String, String)> = tags.iter().collect();
    sorted.sort();
    let mut key = name.to_owned();
    for (k, v) in sorted {
        key.push(TAG_SEPARATOR);
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// Most tags one measurement keeps.
const MAX_TAGS: usize = crate::limits::sizes::TAGS;

/// Longest tag key or value kept.
const MAX_TAG_LEN: usize = crate::limits::sizes::TAG;

/// A guest's tags, bounded in number and length and free of the characters
/// metric keys use, so a guest cannot forge or bloat keys through them.
pub fn clean_tags(tags: Vec<(String, String)>) -> Vec<(String, String)> {
    let clean = |mut s: String| {
        s.retain(|c| c != TAG_SEPARATOR && c != '=');
        truncate(s, MAX_TAG_LEN)
    };
    tags.into_iter()
        .take(MAX_TAGS)
        .map(|(k, v)| (clean(k), clean(v)))
        .collect()
}

/// Splits a metric key into the request name and its tags.
pub fn split_key(key: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = key.split(TAG_SEPARATOR);
    let name = parts.next().unwrap_or_default();
    let tags = parts.filter_map(|t| t.split_once('=')).collect();
    (name, tags)
}

/// A metric key as people read it: `name {k=v, ...}`.
pub fn key_label(key: &str) -> String {
    let (name, tags) = split_key(key);
    if tags.is_empty() {
        return name.to_owned();
    }
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name} {{{}}}", tags.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_tags_are_bounded_and_cannot_forge_keys() {
        let many: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i}"), "v".repeat(1000)))
            .collect();
        let clean = clean_tags(many);
        assert_eq!(clean.len(), MAX_TAGS);
        for (k, v) in &clean {
            assert!(k.starts_with('k'));
            assert!(v.len() <= MAX_TAG_LEN && v.ends_with(crate::limits::sizes::CUT));
        }
        // The separator and '=' are dropped, so a tag cannot add a tag.
        let forged = clean_tags(vec![("a=b".into(), format!("x{TAG_SEPARATOR}admin=yes"))]);
        let key = tagged_key("GET /", &forged);
        assert_eq!(split_key(&key), ("GET /", vec![("ab", "xadminyes")]));
        assert_eq!(key_label(&key), "GET / {ab=xadminyes}");
    }
}
