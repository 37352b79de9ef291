//! How the sign-in page looks, and the colour arithmetic that keeps it readable (WCAG 2.x
//! relative luminance and contrast).

use std::path::PathBuf;

/// How the sign-in page looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    /// The page's title and heading.
    pub title: String,
    /// A line under the heading.
    pub message: Option<String>,
    /// An image (SVG, PNG, JPEG, WebP, GIF) shown above the heading, embedded in the page.
    pub logo_file: Option<PathBuf>,
    /// The buttons' colour, `#rrggbb`; the text on them is black or white, whichever
    /// contrasts more.
    pub primary_color: String,
    pub background_color: String,
}

/// A colour as `#rgb` or `#rrggbb`, normalised to `#rrggbb`.
pub fn parse_color(text: &str) -> Option<String> {
    let hex = text.trim().strip_prefix('#')?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(format!("#{}", hex.to_ascii_lowercase())),
        3 => Some(format!(
            "#{}",
            hex.chars()
                .flat_map(|c| [c, c])
                .collect::<String>()
                .to_ascii_lowercase()
        )),
        _ => None,
    }
}

/// WCAG 2.x relative luminance of a `#rrggbb` colour.
fn luminance(color: &str) -> f64 {
    let channel = |i: usize| {
        let v = u8::from_str_radix(&color[i..i + 2], 16).unwrap_or(0) as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

/// WCAG contrast ratio of two `#rrggbb` colours (1 to 21).
pub fn contrast(a: &str, b: &str) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// The text colour (black or white) that contrasts more with `background`.
pub fn text_color_on(background: &str) -> &'static str {
    if contrast(background, "#ffffff") >= contrast(background, "#111111") {
        "#ffffff"
    } else {
        "#111111"
    }
}

/// WCAG AA for normal text.
pub const MIN_CONTRAST: f64 = 4.5;

/// The media type of a logo by its file extension.
pub fn logo_type(extension: &str) -> Option<&'static str> {
    match extension.to_ascii_lowercase().as_str() {
        "svg" => Some("image/svg+xml"),
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        _ => None,
    }
}
