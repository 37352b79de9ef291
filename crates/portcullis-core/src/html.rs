//! The few server-rendered pages (error pages, the sign-in page, the dev provider's form):
//! one document skeleton, and escaping. Every value interpolated into HTML goes through
//! [`escape`].

use std::fmt::Write;

/// Escapes text for an HTML element body or a double-quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A complete HTML document: `title` (escaped here), a style sheet (trusted, written by
/// Portcullis) and the already-escaped `body` markup inside `<main>`; `main_attrs` are
/// extra attributes of `<main>` (such as `aria-labelledby="title"`).
pub fn document(title: &str, style: &str, main_attrs: &str, body: &str) -> String {
    let space = if main_attrs.is_empty() { "" } else { " " };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>{style}</style>\n</head>\n<body>\n<main{space}{main_attrs}>\n{body}\n</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::{document, escape};

    #[test]
    fn the_document_escapes_its_title() {
        let d = document("<b>", "p{}", "", "<p>x</p>");
        assert!(d.contains("<title>&lt;b&gt;</title>"));
        assert!(d.contains("<main>\n<p>x</p>\n</main>"));
        assert!(d.starts_with("<!doctype html>"));
    }

    #[test]
    fn markup_and_quotes_are_neutralised() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("a\u{0}b"), "a&#0;b");
    }
}
