//! Guest paths: lexical normalisation inside the container's namespace.

/// Normalises an absolute guest path: collapses `.`, `..` (never above `/`) and repeated
/// slashes. Returns `None` for a relative path.
pub(crate) fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Joins a guest path onto a guest directory and normalises the result.
pub(crate) fn join(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    };
    normalize(&joined).unwrap_or_else(|| "/".to_owned())
}

/// If `path` lies under `dir` (both normalised), the part of `path` below it (`""` for
/// `dir` itself).
pub(crate) fn strip<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        assert_eq!(
            normalize(input).as_deref(),
            expected,
            "normalize({input:?})"
        );
    }

    #[test]
    fn normalizes() {
        check("/", Some("/"));
        check("/a/b", Some("/a/b"));
        check("//a//b/", Some("/a/b"));
        check("/a/./b", Some("/a/b"));
        check("/a/../b", Some("/b"));
        check("/../../etc/passwd", Some("/etc/passwd"));
        check("a/b", None);
    }

    #[test]
    fn joins() {
        assert_eq!(join("/app", "x.wasm"), "/app/x.wasm");
        assert_eq!(join("/app", "../x.wasm"), "/x.wasm");
        assert_eq!(join("/app", "/y.wasm"), "/y.wasm");
        assert_eq!(join("/", "../../x"), "/x");
    }

    #[test]
    fn strips() {
        assert_eq!(strip("/data/x", "/data"), Some("x"));
        assert_eq!(strip("/data", "/data"), Some(""));
        assert_eq!(strip("/database", "/data"), None);
        assert_eq!(strip("/x/y", "/"), Some("x/y"));
    }
}
