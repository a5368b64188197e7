//! Text on RGB images: pre-rasterised Noto Sans Mono glyphs (16 px line height, anti-aliased), Basic Latin only
//! (other characters are drawn as `?`).

use image::{Rgb, RgbImage};
use noto_sans_mono_bitmap::{get_raster, get_raster_width, FontWeight, RasterHeight};

const WEIGHT: FontWeight = FontWeight::Regular;
const SIZE: RasterHeight = RasterHeight::Size16;

/// Height of a line of text in pixels.
pub const LINE_HEIGHT: u32 = SIZE.val() as u32;

/// Width of one character in pixels (the font is monospaced).
pub fn char_width() -> u32 {
    get_raster_width(WEIGHT, SIZE) as u32
}

/// Width of `text` in pixels.
pub fn text_width(text: &str) -> u32 {
    text.chars().count() as u32 * char_width()
}

/// Draw `text` with its top-left corner at (`x`, `y`), blending `colour` over the image by the glyph coverage;
/// whatever falls outside the image is clipped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, colour: [u8; 3]) {
    let w = char_width() as i64;
    for (n, ch) in text.chars().enumerate() {
        let Some(glyph) = get_raster(ch, WEIGHT, SIZE).or_else(|| get_raster('?', WEIGHT, SIZE))
        else {
            continue;
        };
        let x0 = x + n as i64 * w;
        for (gy, row) in glyph.rows().enumerate() {
            for (gx, &cov) in row.iter().enumerate() {
                let (px, py) = (x0 + gx as i64, y + gy as i64);
                if cov == 0 || px < 0 || py < 0 {
                    continue;
                }
                let (px, py) = (px as u32, py as u32);
                if px >= img.width() || py >= img.height() {
                    continue;
                }
                let under = img.get_pixel(px, py).0;
                let a = u16::from(cov);
                let mix = |k: usize| {
                    ((u16::from(colour[k]) * a + u16::from(under[k]) * (255 - a)) / 255) as u8
                };
                img.put_pixel(px, py, Rgb([mix(0), mix(1), mix(2)]));
            }
        }
    }
}

/// `text` cut to at most `max_px` pixels wide (ending in `..` when cut).
pub fn fit(text: &str, max_px: u32) -> String {
    let max_chars = (max_px / char_width()) as usize;
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let keep = max_chars.saturating_sub(2);
    text.chars()
        .take(keep)
        .chain("..".chars())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_marks_pixels_inside_its_box_only() {
        let mut img = RgbImage::new(100, 30);
        draw_text(&mut img, 5, 5, "Ab", [255, 255, 255]);
        let lit: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] > 0)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(lit.len() > 20, "glyphs drawn");
        let right = 5 + text_width("Ab");
        assert!(lit
            .iter()
            .all(|&(x, y)| (5..right).contains(&x) && (5..5 + LINE_HEIGHT).contains(&y)));
        // Clipped at the border without panicking.
        draw_text(&mut img, 95, 25, "clipped", [255, 0, 0]);
        draw_text(&mut img, -20, -8, "ünïcode", [255, 0, 0]);
        assert_eq!(fit("reconstruction", 8 * char_width()), "recons..");
        assert_eq!(fit("input", 100), "input");
    }
}
