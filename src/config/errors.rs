//! Everything wrong with a configuration file, reported at once: each
//! problem with the file, the key, the line and the value as written
//! (hickory-dns `bin/src/config`, and rustc's `file:line:` habit).
//!
//! serde stops at the first error, so when the whole document does not
//! deserialize, every top-level key, every key of every section and every
//! `[[listener]]` is tried on its own to find the others.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `relay.min-port` or `listener[0].port`.
    pub key: Option<String>,
    /// 1-based line of the key (or of its section when the key is absent).
    pub line: Option<usize>,
    /// The offending value as written in the file.
    pub value: Option<String>,
    pub message: String,
}

/// Every problem of one file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// A problem that concerns the file, not a key (it cannot be read).
    pub fn whole(file: &str, message: String) -> Self {
        Self {
            file: file.to_string(),
            problems: vec![Problem {
                key: None,
                line: None,
                value: None,
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some(l) = p.line {
                write!(f, ":{l}")?;
            }
            write!(f, ": ")?;
            if let Some(k) = &p.key {
                write!(f, "key `{k}`")?;
                if let Some(v) = &p.value {
                    write!(f, " = {v}")?;
                }
                write!(f, ": ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The parsed document, for finding where a key is written.
pub struct Located<'a> {
    text: &'a str,
    doc: toml_edit::ImDocument<&'a str>,
}

impl<'a> Located<'a> {
    /// Parses `text`; a syntax error is the one problem then.
    pub fn parse(text: &'a str) -> Result<Self, Problem> {
        match toml_edit::ImDocument::parse(text) {
            Ok(doc) => Ok(Self { text, doc }),
            Err(e) => Err(Problem {
                key: None,
                line: e.span().map(|s| line_of(text, s.start)),
                value: None,
                message: format!("not valid TOML: {}", e.message().trim()),
            }),
        }
    }

    /// A problem for `key` (a dotted path) with its line and value, or the
    /// line of the nearest enclosing table written in the file.
    pub fn problem(&self, key: &str, message: String) -> Problem {
        let segments = segments(key);
        let mut line = None;
        let mut value = None;
        for n in (1..=segments.len()).rev() {
            if let Some((key_span, value_span)) = self.spans(&segments[..n]) {
                line = key_span.or(value_span.clone()).map(|s| line_of(self.text, s.start));
                if n == segments.len() {
                    value = value_span.map(|s| shorten(self.text[s].trim()));
                }
                break;
            }
        }
        Problem {
            key: (!key.is_empty() && key != ".").then(|| key.to_string()),
            line,
            value,
            message,
        }
    }

    /// Where the key at `path` and its value are written.
    fn spans(&self, path: &[Segment]) -> Option<Spans> {
        let mut table: &dyn toml_edit::TableLike = self.doc.as_table();
        let mut key_span = None;
        let mut item: Option<&toml_edit::Item> = None;
        let mut value: Option<&toml_edit::Value> = None;
        for (i, seg) in path.iter().enumerate() {
            match seg {
                Segment::Key(k) => {
                    let (key, it) = table.get_key_value(k)?;
                    key_span = key.span();
                    item = Some(it);
                    value = it.as_value();
                    if i + 1 < path.len() {
                        if let Some(t) = it.as_table_like() {
                            table = t;
                        }
                    }
                }
                Segment::Index(n) => {
                    let it = item?;
                    if let Some(tables) = it.as_array_of_tables() {
                        let t = tables.get(*n)?;
                        key_span = t.span();
                        table = t;
                        value = None;
                    } else {
                        let v = value?.as_array()?.get(*n)?;
                        key_span = None;
                        value = Some(v);
                        if let Some(t) = v.as_inline_table() {
                            table = t;
                        }
                    }
                }
            }
        }
        let value_span = value.and_then(|v| v.span());
        Some((key_span.or(value_span.clone()), value_span))
    }
}

/// Where a key (or, for an array element, its value) and its value are.
type Spans = (Option<Range<usize>>, Option<Range<usize>>);

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `listener[0].port` → Key(listener), Index(0), Key(port).
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Segment::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix('[') {
                let Some((n, after)) = r.split_once(']') else { break };
                if let Ok(n) = n.parse() {
                    out.push(Segment::Index(n));
                }
                rest = after;
            }
        } else {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn shorten(v: &str) -> String {
    const MAX: usize = 80;
    if v.chars().count() <= MAX {
        v.to_string()
    } else {
        format!("{}…", v.chars().take(MAX).collect::<String>())
    }
}

/// Deserializes `value` as `T`; the failing key's dotted path and why.
fn try_as<T: DeserializeOwned>(value: toml::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().message().trim().to_string())
    })
}

/// Deserializes the document. When it does not: every problem found by
/// trying its parts one by one, and the document without the keys at
/// fault, deserialized (when that works), so the rules of the rest can be
/// checked too.
pub fn deserialize_all<T: DeserializeOwned>(text: &str, located: &Located) -> Result<T, (Vec<Problem>, Option<T>)> {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let p = Problem {
                key: None,
                line: e.span().map(|s| line_of(text, s.start)),
                value: None,
                message: e.message().trim().to_string(),
            };
            return Err((vec![p], None));
        }
    };
    let first = match try_as::<T>(toml::Value::Table(table.clone())) {
        Ok(v) => return Ok(v),
        Err(first) => first,
    };
    let mut found: Vec<Problem> = Vec::new();
    let mut faulty: Vec<String> = Vec::new();
    let mut add = |(path, message): (String, String), at: String| {
        let p = located.problem(&path, message);
        if !found.contains(&p) {
            found.push(p);
        }
        faulty.push(at);
    };
    for (k, v) in &table {
        let one = |v: toml::Value| toml::Value::Table(toml::Table::from_iter([(k.clone(), v)]));
        match v {
            // A section: each of its keys alone, so one bad key does not
            // hide the next.
            toml::Value::Table(section) => {
                for (f, fv) in section {
                    let sub = toml::Value::Table(toml::Table::from_iter([(f.clone(), fv.clone())]));
                    if let Err(e) = try_as::<T>(one(sub)) {
                        add(e, format!("{k}.{f}"));
                    }
                }
            }
            // `[[listener]]`: each entry whole (its keys depend on each other).
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    if let Err((path, message)) = try_as::<T>(one(toml::Value::Array(vec![item.clone()]))) {
                        let path = path.replacen(&format!("{k}[0]"), &format!("{k}[{i}]"), 1);
                        add((path, message), format!("{k}[{i}]"));
                    }
                }
            }
            other => {
                if let Err(e) = try_as::<T>(one(other.clone())) {
                    add(e, k.clone());
                }
            }
        }
    }
    if found.is_empty() {
        let p = located.problem(&first.0, first.1);
        return Err((vec![p], None));
    }
    let mut rest = table;
    prune(&mut rest, &faulty);
    Err((found, try_as::<T>(toml::Value::Table(rest)).ok()))
}

/// Removes the entries at `faulty` (`key`, `section.key` or `key[i]`) from
/// `table`.
fn prune(table: &mut toml::Table, faulty: &[String]) {
    for at in faulty {
        if at.contains('[') {
            continue;
        }
        match at.split_once('.') {
            Some((section, key)) => {
                if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                    t.remove(key);
                }
            }
            None => {
                table.remove(at);
            }
        }
    }
    for (k, v) in table.iter_mut() {
        if let toml::Value::Array(items) = v {
            let mut i = 0;
            items.retain(|_| {
                let keep = !faulty.contains(&format!("{k}[{i}]"));
                i += 1;
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_lines_and_values() {
        let text = "realm = \"x\"\n\n[relay]\nmin-port = 6000\n\n[[listener]]\naddress = \"0.0.0.0\"\n\n[[listener]]\naddress = \"::\"\nport = 70000\n[peers]\nallow = [\"10.0.0.0/8\", \"10.8.0.0/33\"]\n";
        let l = Located::parse(text).expect("toml");
        let p = l.problem("relay.min-port", "m".into());
        assert_eq!((p.line, p.value.as_deref()), (Some(4), Some("6000")));
        let p = l.problem("listener[1].port", "m".into());
        assert_eq!((p.line, p.value.as_deref()), (Some(11), Some("70000")));
        let p = l.problem("peers.allow[1]", "m".into());
        assert_eq!((p.line, p.value.as_deref()), (Some(13), Some("\"10.8.0.0/33\"")));
        // Absent key: the section's line, no value.
        let p = l.problem("relay.max-port", "m".into());
        assert_eq!((p.line, p.value), (Some(3), None));
        let p = l.problem("tcp.idle-timeout", "m".into());
        assert_eq!((p.line, p.value), (None, None));
    }
}
