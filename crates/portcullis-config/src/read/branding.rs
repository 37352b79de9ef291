//! The sign-in page's branding.

use std::path::PathBuf;

use crate::branding::*;
use crate::reader::Reader;

pub(super) fn read_branding(r: &Reader<'_>) -> Branding {
    let color = |key: &str, default: &str| match r.string(key) {
        None => default.to_string(),
        Some(text) => parse_color(&text).unwrap_or_else(|| {
            r.error(
                key,
                format!("`{text}` is not a colour"),
                "write it as #rrggbb, such as #1d4ed8",
            );
            default.to_string()
        }),
    };
    let primary = color("branding.primary_color", "#1d4ed8");
    let background = color("branding.background_color", "#f4f4f5");
    let on_primary = text_color_on(&primary);
    if contrast(&primary, on_primary) < MIN_CONTRAST {
        r.error(
            "branding.primary_color",
            format!(
                "{primary} leaves the button text too little contrast ({:.1}:1, at least {MIN_CONTRAST}:1 is needed to be readable)",
                contrast(&primary, on_primary)
            ),
            "pick a darker or a lighter shade",
        );
    }
    if contrast(&background, "#18181b") < MIN_CONTRAST {
        r.error(
            "branding.background_color",
            format!("{background} leaves the page's dark text too little contrast"),
            "pick a lighter background",
        );
    }
    let logo_file = r.string("branding.logo_file").map(PathBuf::from);
    if let Some(path) = &logo_file {
        let known = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| logo_type(e).is_some());
        if !known {
            r.error(
                "branding.logo_file",
                format!(
                    "{} is not an .svg, .png, .jpg, .webp or .gif file",
                    path.display()
                ),
                "use an image in one of those formats",
            );
        }
    }
    Branding {
        title: r
            .string("branding.title")
            .unwrap_or_else(|| "Sign in".into()),
        message: r.string("branding.message"),
        logo_file,
        primary_color: primary,
        background_color: background,
    }
}
