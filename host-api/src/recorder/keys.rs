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
