//! The shape of the code: no crate of the workspace has an import cycle
//! between sibling modules. STYLE.md: "Leaf modules for shared keys, ids
//! and the clock, so imports point one way. A cycle between two modules
//! means a third one is missing."
//!
//! Each `.rs` file under a crate's `src/` is a module (`a/b.rs` and
//! `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` the root). Its
//! references are the `crate::` and `super::` paths (`use` groups
//! included) outside comments, string literals and `#[cfg(test)]` modules,
//! each resolved to the deepest module it names. At every level of the
//! tree, the references between the children of one module form a graph
//! (a reference from `a::x` to `b::y` is an edge `a` → `b`), and that graph
//! must have no cycle. Plain text, std only: no parser, no `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module's path inside its crate; empty for the crate root.
type Module = Vec<String>;

#[test]
fn no_workspace_crate_has_a_module_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    let members = workspace_members(&root.join("Cargo.toml"));
    assert!(!members.is_empty(), "no members found in the workspace's Cargo.toml");
    let mut report = String::new();
    for member in &members {
        let src = root.join(member).join("src");
        assert!(src.is_dir(), "{} has no src/ directory", src.display());
        for cycle in cycles(&src) {
            report.push_str(&format!("{member}: {cycle}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "module import cycles (move what both sides share into a leaf module):\n{report}"
    );
}

/// The checker finds a cycle through `use` groups and `super::`, and
/// ignores comments, strings, test modules and function calls.
#[test]
fn the_checker_sees_real_references_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    };
    write("lib.rs", "mod a;\nmod b;\nmod c;\n");
    write("a.rs", "use crate::{b::{self, Thing}, c};\n");
    write("b/mod.rs", "mod inner;\n");
    write("b/inner.rs", "use super::super::a::X;\n");
    // None of these is a reference from c to a.
    write(
        "c.rs",
        "// crate::a::X\n/* crate::a::Y */\nconst S: &str = \"crate::a::Z\";\n\
         const R: &str = r#\"super::a\"#;\nfn f<'a>(_: &'a str) -> char { '\"' }\n\
         #[cfg(test)]\nmod tests {\n    use crate::a::W;\n}\n#[cfg(test)]\nmod more_tests;\n\
         fn g() { crate::a(); }\n",
    );
    write("c/more_tests.rs", "use crate::a::V;\n");
    let found = cycles(src);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("in the crate root: {a, b}"), "{found:?}");
    assert!(
        found[0].contains("b -> a: b/inner.rs `super::super::a::X`"),
        "{found:?}"
    );

    write("a.rs", "use crate::c;\n");
    assert_eq!(cycles(src), Vec::<String>::new());
}

/// The `members` of the workspace's `[workspace]` table.
fn workspace_members(manifest: &Path) -> Vec<String> {
    let text = fs::read_to_string(manifest).expect("read the workspace Cargo.toml");
    let Some(start) = text.find("members") else {
        return Vec::new();
    };
    let rest = &text[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One reference: the module it points at, and where it was seen.
struct Reference {
    to: Module,
    file: String,
    text: String,
}

/// Every cycle between siblings in the crate whose sources are in `src`,
/// one line each, with the reference behind each edge of it.
fn cycles(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    files.sort();
    // A crate with both `lib.rs` and `main.rs` has two files for its root.
    let modules: Vec<(Module, PathBuf)> = files.iter().map(|f| (module_of(src, f), f.clone())).collect();
    let known: BTreeSet<&Module> = modules.iter().map(|(m, _)| m).collect();

    // Sources with their text cleaned, and the modules only tests compile.
    let mut test_only: BTreeSet<Module> = BTreeSet::new();
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut cleaned = Vec::new();
    for (module, file) in &modules {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let (text, test_mods) = without_test_modules(&strip_comments_and_literals(&text), &text);
        for (name, path) in test_mods {
            match path {
                Some(p) => test_files.insert(file.parent().unwrap_or(src).join(p)),
                None => test_only.insert([module.clone(), vec![name]].concat()),
            };
        }
        cleaned.push((module, file, text));
    }

    let mut references: Vec<(&Module, Vec<Reference>)> = Vec::new();
    for (module, file, text) in &cleaned {
        let is_test = test_files.contains(*file) || (1..=module.len()).any(|n| test_only.contains(&module[..n]));
        if is_test {
            continue;
        }
        let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
        let refs = paths(text, module)
            .into_iter()
            .filter_map(|(path, text)| {
                let to = deepest_module(&path.full, path.base_len, &known)?;
                Some(Reference {
                    to,
                    file: shown.clone(),
                    text,
                })
            })
            .collect();
        references.push((module, refs));
    }

    let parents: BTreeSet<Module> = known
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let mut out = Vec::new();
    for parent in &parents {
        let n = parent.len();
        let child = |m: &Module| (m.len() > n && m[..n] == parent[..]).then(|| m[n].clone());
        // Edges between children of `parent`, each with its first reference.
        let mut edges: BTreeMap<(String, String), &Reference> = BTreeMap::new();
        for (from, refs) in &references {
            let Some(a) = child(from) else { continue };
            for r in refs {
                match child(&r.to) {
                    Some(b) if b != a => {
                        edges.entry((a.clone(), b)).or_insert(r);
                    }
                    _ => {}
                }
            }
        }
        for component in strongly_connected(&edges) {
            let place = if parent.is_empty() {
                "the crate root".to_owned()
            } else {
                format!("`{}`", parent.join("::"))
            };
            let mut line = format!("in {place}: {{{}}}", component.join(", "));
            for ((a, b), r) in &edges {
                if component.contains(a) && component.contains(b) {
                    line.push_str(&format!("; {a} -> {b}: {} `{}`", r.file, r.text));
                }
            }
            out.push(line);
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    parts
}

/// The source with comments, string and char literals blanked out by
/// spaces (line breaks kept, byte offsets unchanged), so that only code is
/// searched for paths.
fn strip_comments_and_literals(src: &str) -> String {
    let s: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, chars: &[char]| {
        for &c in chars {
            match c {
                '\n' => out.push('\n'),
                c => out.extend(std::iter::repeat_n(' ', c.len_utf8())),
            }
        }
    };
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut i = 0;
    while i < s.len() {
        let (c, next) = (s[i], s.get(i + 1).copied());
        let end = if c == '/' && next == Some('/') {
            s[i..].iter().position(|&c| c == '\n').map_or(s.len(), |k| i + k)
        } else if c == '/' && next == Some('*') {
            block_comment_end(&s, i)
        } else if let Some(end) = raw_string_end(&s, i).filter(|_| !ident(out.chars().last())) {
            end
        } else if c == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{1F600}'.
            s[i + 3..]
                .iter()
                .position(|&c| c == '\'')
                .map_or(s.len(), |k| i + 3 + k + 1)
        } else if c == '\'' && s.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            // Code, or the quote of a lifetime.
            out.push(c);
            i += 1;
            continue;
        };
        let end = end.min(s.len());
        blank(&mut out, &s[i..end]);
        i = end;
    }
    out
}

/// Where the block comment starting at `i` ends (they nest).
fn block_comment_end(s: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < s.len() {
        if s[i] == '/' && s.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// Where the raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at `i`
/// ends, if one starts there.
fn raw_string_end(s: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if s.get(j) == Some(&'b') {
        j += 1;
    }
    if s.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = s[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if s.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < s.len() {
        if s[j] == '"' && s[j + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(s.len())
}

/// The cleaned source without its inline `#[cfg(test)]` modules, and the
/// test modules it declares in other files: `(name, #[path] if any)`.
/// `original` is the source before cleaning, for the `#[path]`'s string.
fn without_test_modules(text: &str, original: &str) -> (String, Vec<(String, Option<String>)>) {
    const MARK: &str = "#[cfg(test)]";
    let mut out = text.to_owned();
    let mut declared = Vec::new();
    let mut from = 0;
    while let Some(at) = out[from..].find(MARK).map(|k| from + k) {
        from = at + MARK.len();
        let mut p = Cursor { s: &out, i: from };
        let mut path = None;
        // Further attributes, such as `#[path = "x_tests.rs"]`.
        loop {
            p.skip_ws();
            if !p.rest().starts_with("#[") {
                break;
            }
            let start = p.i;
            p.skip_balanced('[', ']');
            let attr = original.get(start..p.i).unwrap_or_default();
            if attr.trim_start_matches("#[").trim_start().starts_with("path") {
                path = attr.split('"').nth(1).map(str::to_owned);
            }
        }
        p.skip_ws();
        if p.rest().starts_with("pub") {
            p.i += 3;
            p.skip_ws();
            if p.rest().starts_with('(') {
                p.skip_balanced('(', ')');
            }
            p.skip_ws();
        }
        if !p.rest().starts_with("mod ") {
            continue;
        }
        p.i += 4;
        p.skip_ws();
        let name = p.ident();
        p.skip_ws();
        if p.rest().starts_with(';') {
            // A line comment was blanked, so no literal contains this mark.
            declared.push((name, path));
        } else if p.rest().starts_with('{') {
            p.skip_balanced('{', '}');
            let end = p.i;
            // Same length, so that offsets still match `original`.
            let blank: String = out[at..end]
                .chars()
                .map(|c| {
                    if c == '\n' {
                        "\n".to_owned()
                    } else {
                        " ".repeat(c.len_utf8())
                    }
                })
                .collect();
            out.replace_range(at..end, &blank);
        }
    }
    (out, declared)
}

/// A path found in the source: its segments from the crate root, and how
/// many of them `super::` stood for (a reference must go below those).
struct FoundPath {
    full: Module,
    base_len: usize,
}

/// Every `crate::` and `super::` path in `text`, `use` groups expanded,
/// with the text of the path as written.
fn paths(text: &str, module: &Module) -> Vec<(FoundPath, String)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for keyword in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(keyword).map(|k| from + k) {
            from = at + keyword.len();
            let before = at.checked_sub(1).map(|k| bytes[k]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue; // `my_crate::`, or a `super::` inside a longer path
            }
            let mut p = Cursor { s: text, i: from };
            let base = if keyword == "crate::" {
                Vec::new()
            } else {
                let mut up = 1;
                while p.rest().starts_with("super::") {
                    p.i += "super::".len();
                    up += 1;
                }
                // A file's `super` is the parent of its module.
                let Some(len) = module.len().checked_sub(up) else {
                    continue;
                };
                module[..len].to_vec()
            };
            let mut found = Vec::new();
            p.tree(base.clone(), &mut found);
            let written: String = text[at..p.i].split_whitespace().collect::<Vec<_>>().join(" ");
            for full in found {
                out.push((
                    FoundPath {
                        full,
                        base_len: base.len(),
                    },
                    written.clone(),
                ));
            }
        }
    }
    out
}

/// The longest prefix of `path` that is a module, deeper than `base_len`.
fn deepest_module(path: &Module, base_len: usize, known: &BTreeSet<&Module>) -> Option<Module> {
    (base_len + 1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| known.contains(m))
}

/// A position in cleaned source text.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.i += rest.len() - rest.trim_start().len();
    }

    fn ident(&mut self) -> String {
        let rest = self.rest();
        let n = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.i += n;
        rest[..n].to_owned()
    }

    /// From an `open` character to just past its matching `close`.
    fn skip_balanced(&mut self, open: char, close: char) {
        let mut depth = 0usize;
        for (k, c) in self.rest().char_indices() {
            if c == open {
                depth += 1;
            } else if c == close {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    self.i += k + c.len_utf8();
                    return;
                }
            }
        }
        self.i = self.s.len();
    }

    /// One use-tree (or expression path) after `prefix::`: each path it
    /// names goes to `out`. A called last segment (`f(`, `m!`) is an item,
    /// not a module, and is left off.
    fn tree(&mut self, prefix: Module, out: &mut Vec<Module>) {
        let mut path = prefix;
        loop {
            self.skip_ws();
            if self.rest().starts_with('{') {
                self.i += 1;
                loop {
                    self.skip_ws();
                    if self.rest().starts_with('}') || self.rest().is_empty() {
                        self.i = (self.i + 1).min(self.s.len());
                        return;
                    }
                    self.tree(path.clone(), out);
                    // Past `as name` to the separator.
                    let rest = self.rest();
                    self.i += rest.find([',', '}']).unwrap_or(rest.len());
                    if self.rest().starts_with(',') {
                        self.i += 1;
                    }
                }
            }
            let name = self.ident();
            if name.is_empty() {
                out.push(path);
                return;
            }
            if name != "self" {
                path.push(name);
            }
            if self.rest().starts_with("::") {
                self.i += 2;
                continue;
            }
            let after = self.rest().trim_start();
            if after.starts_with('(') || after.starts_with('!') {
                path.pop();
            }
            out.push(path);
            return;
        }
    }
}

/// The strongly connected components with more than one member of the
/// graph given by `edges`, each sorted (Tarjan's algorithm; the graphs are
/// one module's children, so small).
fn strongly_connected<T>(edges: &BTreeMap<(String, String), T>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    struct State<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        let i = st.index.len();
        st.index.insert(v, i);
        st.low.insert(v, i);
        st.stack.push(v);
        let next = st.next;
        for &w in &next[v] {
            if !st.index.contains_key(w) {
                visit(st, w);
                let low = st.low[v].min(st.low[w]);
                st.low.insert(v, low);
            } else if st.stack.contains(&w) {
                let low = st.low[v].min(st.index[w]);
                st.low.insert(v, low);
            }
        }
        if st.low[v] == st.index[v] {
            let at = st.stack.iter().rposition(|&x| x == v).unwrap_or(0);
            let mut component: Vec<String> = st.stack.drain(at..).map(str::to_owned).collect();
            if component.len() > 1 {
                component.sort();
                st.found.push(component);
            }
        }
    }
    let mut st = State {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &v in next.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.found
}
