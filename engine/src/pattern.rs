//! Path patterns, for `backup --exclude` and `find`: `*` and `?` within one path component,
//! `**` across components. A pattern without `/` matches an entry's name wherever it is; one
//! with `/` matches the whole path from the top (a leading `/` is optional); a trailing `/`
//! matches directories only (`_uploads/`).

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    glob: String,
    whole_path: bool,
    dirs_only: bool,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        let dirs_only = text.len() > 1 && text.ends_with('/');
        let text = text.trim_end_matches('/');
        let whole_path = text.contains('/');
        Pattern {
            glob: text.trim_start_matches('/').to_string(),
            whole_path,
            dirs_only,
        }
    }

    /// Whether the entry at `path` (`/`-separated, from the top) matches.
    pub fn matches(&self, path: &str, is_dir: bool) -> bool {
        if self.dirs_only && !is_dir {
            return false;
        }
        let subject = match self.whole_path {
            true => path.trim_start_matches('/'),
            false => path.rsplit('/').next().unwrap_or(path),
        };
        glob(self.glob.as_bytes(), subject.as_bytes())
    }
}

/// Whether `text` matches `pattern` (`*`, `?` within a component, `**` across).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|at| glob(rest, &text[at..]))
        }
        [b'*', rest @ ..] => {
            let component = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=component).any(|at| glob(rest, &text[at..]))
        }
        [b'?', rest @ ..] => matches!(text, [c, tail @ ..] if *c != b'/' && glob(rest, tail)),
        [p, rest @ ..] => matches!(text, [c, tail @ ..] if c == p && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_paths_and_directories() {
        let yes = [
            ("*.json", "a/index.json", false),
            (
                "_uploads/",
                "docker/registry/v2/repositories/x/_uploads",
                true,
            ),
            ("tags/*/current/link", "tags/v1/current/link", false),
            ("/tags/*/current/link", "tags/v1/current/link", false),
            ("**/link", "a/b/c/link", false),
            ("**/link", "link", false),
            ("a/**/d", "a/b/c/d", true),
            ("v?", "x/v1", true),
        ];
        for (pattern, path, dir) in yes {
            assert!(
                Pattern::new(pattern).matches(path, dir),
                "{pattern} ~ {path}"
            );
        }
        let no = [
            ("_uploads/", "x/_uploads", false),
            ("tags/*/link", "tags/v1/current/link", false),
            ("a/*.json", "a/b/c.json", false),
            ("v?", "v12", false),
        ];
        for (pattern, path, dir) in no {
            assert!(
                !Pattern::new(pattern).matches(path, dir),
                "{pattern} !~ {path}"
            );
        }
    }
}
