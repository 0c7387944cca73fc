//! Makes TOML errors say where and what to do: the key at fault (`server.listen`), and for an
//! unknown key, the nearest valid one.

use std::ops::Range;

/// The message for a TOML error at `span` of `text`.
pub(super) fn explain(text: &str, span: &Range<usize>, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let Some((unknown, valid)) = names.split_first() else {
            return message.to_owned();
        };
        let place = match table_at(text, span.start) {
            Some(t) => match t.split_once(" #") {
                Some((array, n)) => format!("in [[{array}]] #{n}"),
                None => format!("in [{t}]"),
            },
            None => "at the top level".to_owned(),
        };
        let hint = nearest(unknown, valid)
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_default();
        let list = valid
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return format!("unknown key `{unknown}` {place}{hint} (valid keys: {list})");
    }
    match key_at(text, span) {
        Some(key) => format!("`{key}`: {message}"),
        None => message.to_owned(),
    }
}

/// The valid name closest to `unknown`, if any is close enough to be a typo.
pub(super) fn nearest<'a>(unknown: &str, valid: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase().replace('-', "_");
    valid
        .iter()
        .map(|v| (strsim::levenshtein(&unknown, &v.replace('-', "_")), *v))
        .filter(|(d, v)| *d <= (v.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// The names quoted in backticks in `s`.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The table whose body holds `at`: `server`, `queues.orders`, `bindings #2`.
fn table_at(text: &str, at: usize) -> Option<String> {
    let before = &text[..at.min(text.len())];
    // A key on the header line itself (`[queue.orders]`) belongs to the table above it.
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut table = None;
    let mut arrays = std::collections::HashMap::<String, usize>::new();
    for line in text[..line_start].lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = arrays.entry(name.clone()).or_default();
            *n += 1;
            table = Some(format!("{name} #{n}"));
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = Some(name.trim().to_owned());
        }
    }
    table
}

/// The dotted key whose value is at `span`: the table it is in and the key before `=` on its
/// line.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    if span.start == 0 && span.end == 0 {
        return None;
    }
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[line_start..start];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    Some(match table_at(text, start) {
        Some(t) if t.contains(" #") => format!("{key}` in `[[{}", t.replace(" #", "]] #")),
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_nearest_key() {
        let keys = ["listen", "data_dir", "max_message_size", "api_token"];
        assert_eq!(nearest("lisen", &keys), Some("listen"));
        assert_eq!(nearest("data-dir", &keys), Some("data_dir"));
        assert_eq!(nearest("max_msg_size", &keys), Some("max_message_size"));
        assert_eq!(nearest("token", &keys), None);
        assert_eq!(nearest("zzz", &keys), None);
    }

    #[test]
    fn tables_and_keys_are_named() {
        let text = "[server]\nlisten = 1\n[[bindings]]\nsource = 2\n[[bindings]]\nplugin = 3\n";
        assert_eq!(table_at(text, 12).as_deref(), Some("server"));
        let at = text.find("plugin").unwrap();
        assert_eq!(table_at(text, at).as_deref(), Some("bindings #2"));
        let v = text.find("1\n").unwrap();
        assert_eq!(key_at(text, &(v..v + 1)).as_deref(), Some("server.listen"));
    }
}
