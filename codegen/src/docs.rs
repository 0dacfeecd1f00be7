//! Proto comments as rustdoc that cannot break the user's build: whatever a comment holds shows as
//! the text it is. Markdown and HTML characters are escaped, so `<T>` is not an unclosed HTML tag and
//! `[x]` not a broken link; indentation is dropped, so an indented line is not a code block that
//! `cargo test` would compile as a doctest; URLs stay as written and become links.
//!
//! The comments are rewritten in the descriptors before prost reads them, so message, field and enum
//! docs (which prost writes) and service docs (which duet writes) are treated alike.

use prost_types::FileDescriptorSet;

/// Characters markdown or HTML would read as syntax.
const SPECIAL: &[char] = &['\\', '`', '*', '_', '[', ']', '<', '>', '#', '|', '~', '&', '!', '{', '}'];

/// Rewrites every comment in `fds` as [`text`] does.
pub(crate) fn sanitize_set(fds: &mut FileDescriptorSet) {
    for location in fds.file.iter_mut().filter_map(|f| f.source_code_info.as_mut()).flat_map(|i| &mut i.location) {
        for comment in location.leading_comments.iter_mut().chain(location.trailing_comments.iter_mut()) {
            *comment = text(comment);
        }
        for comment in &mut location.leading_detached_comments {
            *comment = text(comment);
        }
    }
}

/// A comment as markdown that renders as its own text: special characters escaped (except in URLs),
/// each line's indentation dropped.
pub(crate) fn text(comment: &str) -> String {
    let lines: Vec<String> = comment.lines().map(|line| escape_line(line.trim_start())).collect();
    let mut out = lines.join("\n");
    if comment.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Put before a line that starts with a fence character: prost passes comments through a markdown
/// writer that drops the escape of `~`, and a line of `~~~` would open a code block, which `cargo
/// test` compiles as a doctest. A zero-width space in front keeps it text and shows nothing.
const FENCE_GUARD: char = '\u{200B}';

fn escape_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    if line.starts_with("```") || line.starts_with('~') {
        out.push(FENCE_GUARD);
    }
    let mut rest = line;
    while !rest.is_empty() {
        if let Some(len) = url_len(rest) {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        if let Some(len) = code_span_len(rest) {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        let c = rest.chars().next().expect("not empty");
        if SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
        // Anywhere in a line (after a list marker, say) three `~` would open a code block once the
        // escape is dropped: the zero-width space keeps any run of them apart.
        if c == '~' {
            out.push(FENCE_GUARD);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length of the code span `s` starts with (a run of backticks, text, the same run), if it starts
/// with one: a code span shows its text as written, so it is kept whole.
fn code_span_len(s: &str) -> Option<usize> {
    let ticks = s.len() - s.trim_start_matches('`').len();
    if ticks == 0 {
        return None;
    }
    let fence = &s[..ticks];
    let body = &s[ticks..];
    let mut from = 0;
    while let Some(at) = body[from..].find(fence) {
        let end = from + at;
        let after = &body[end + ticks..];
        // A longer run of backticks does not close the span.
        if !after.starts_with('`') && end > 0 {
            return Some(ticks + end + ticks);
        }
        from = end + ticks + (after.len() - after.trim_start_matches('`').len());
    }
    None
}

/// The length of the URL `s` starts with, if it starts with one.
fn url_len(s: &str) -> Option<usize> {
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return None;
    }
    let end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | ')' | '`' | '"' | '\'' | '\\'))
        .unwrap_or(s.len());
    Some(end)
}

/// A comment line prepared by [`text`] with its URLs in angle brackets, as prost writes them, so
/// rustdoc links them rather than warning about a bare URL.
pub(crate) fn link_urls(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 4);
    let mut rest = line;
    while !rest.is_empty() {
        // A backslash escapes the next character: never the start of a URL.
        if let Some(stripped) = rest.strip_prefix('\\') {
            let c = stripped.chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..1 + c]);
            rest = &rest[1 + c..];
            continue;
        }
        if let Some(len) = url_len(rest) {
            out.push('<');
            out.push_str(&rest[..len]);
            out.push('>');
            rest = &rest[len..];
            continue;
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{link_urls, text};

    #[test]
    fn markdown_and_html_show_as_written() {
        assert_eq!(text("a <b> [c] `d` *e* _f_"), r"a \<b\> \[c\] `d` \*e\* \_f\_");
        assert_eq!(
            text("`Vec<u8>` and ``a ` b`` stay code; ` alone does not"),
            r"`Vec<u8>` and ``a ` b`` stay code; \` alone does not"
        );
        assert_eq!(text("# not a heading"), r"\# not a heading");
        assert_eq!(text("```rust\nfn main() {}\n```"), "\u{200B}\\`\\`\\`rust\nfn main() \\{\\}\n\u{200B}\\`\\`\\`");
        assert_eq!(text("~~~"), "\u{200B}\\~\u{200B}\\~\u{200B}\\~\u{200B}");
        assert_eq!(text("- ~~~"), "- \\~\u{200B}\\~\u{200B}\\~\u{200B}");
        assert_eq!(text("&amp; | ![i](j)"), r"\&amp; \| \!\[i\](j)");
    }

    #[test]
    fn indentation_is_dropped_so_nothing_becomes_a_doctest() {
        assert_eq!(text("text\n\n    let x = 1;\n\tmore"), "text\n\nlet x = 1;\nmore");
    }

    #[test]
    fn urls_stay_whole_and_become_links() {
        let line = text("see https://example.org/a_b?c=<d> and http://x.y/z.");
        assert_eq!(line, r"see https://example.org/a_b?c=\<d\> and http://x.y/z.");
        assert_eq!(link_urls(&line), r"see <https://example.org/a_b?c=>\<d\> and <http://x.y/z.>");
    }
}
