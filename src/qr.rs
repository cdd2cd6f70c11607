//! QR codes of join links, for a phone's camera: in the terminal (Unicode
//! half blocks, two modules a character) and as SVG for the call page's
//! "Invite a phone". Encoded by the `qrcode` crate.

use qrcode::render::{svg, unicode::Dense1x2};
use qrcode::{EcLevel, QrCode};

/// The most a code carries (a join link with its key and a room name is
/// about 100 bytes).
pub const MAX_TEXT: usize = 1024;

fn code(text: &str) -> Option<QrCode> {
    if text.is_empty() || text.len() > MAX_TEXT {
        return None;
    }
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()
}

/// `text` as rows of half blocks for a terminal with a dark background:
/// the light modules (and the quiet zone around them) are drawn, the dark
/// ones left as background, so the code reads the right way round.
pub fn terminal(text: &str) -> Option<String> {
    Some(
        code(text)?
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// `text` as an SVG image (dark modules on white, with the quiet zone).
pub fn svg(text: &str) -> Option<String> {
    Some(
        code(text)?
            .render::<svg::Color<'_>>()
            .min_dimensions(264, 264)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal rendering read back into modules (dark where a
    /// character leaves its half blank) and decoded by `rqrr`.
    fn decode_terminal(rows: &str) -> String {
        const SCALE: usize = 6;
        let lines: Vec<Vec<char>> = rows.lines().map(|l| l.chars().collect()).collect();
        let width = lines.iter().map(Vec::len).max().expect("rows");
        let height = lines.len() * 2;
        let dark = |x: usize, y: usize| -> bool {
            let c = lines[y / 2].get(x).copied().unwrap_or(' ');
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            // Drawn halves are the light modules.
            !(if y % 2 == 0 { top } else { bottom })
        };
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(width * SCALE, height * SCALE, |x, y| {
            if dark(x / SCALE, y / SCALE) {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one code in the rendering");
        grids[0].decode().expect("decodes").1
    }

    #[test]
    fn the_terminal_rendering_decodes_to_the_link() {
        let link = "https://turn.example.org/?key=q3V0bU2yZ7cX1PpYdA9WkQ&room=kitchen-table";
        let rows = terminal(link).expect("renders");
        assert!(rows.lines().count() < 40, "fits a terminal:\n{rows}");
        assert_eq!(decode_terminal(&rows), link);
    }

    #[test]
    fn svg_and_limits() {
        let s = svg("https://turn.example.org/?key=k").expect("renders");
        assert!(
            s.starts_with("<?xml") && s.contains("<svg") && s.contains("#000000"),
            "{s}"
        );
        assert!(svg("").is_none());
        assert!(terminal(&"x".repeat(MAX_TEXT + 1)).is_none());
    }
}
