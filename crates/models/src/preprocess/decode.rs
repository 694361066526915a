//! Decoding image files (PNG, JPEG, WebP) to 8-bit RGB with the `image` crate, with the pixel
//! count checked from the header before anything is allocated.

use crate::error::{ModelError, Result};
use crate::io::FileError;
use image::{ImageReader, Limits};
use std::path::Path;

/// The largest image decoded: 64 Mi pixels (an 8K frame is 33 M, a 50-megapixel photo 50 M).
/// Larger files are refused from their header, before decoding allocates.
pub const MAX_PIXELS: u64 = 1 << 26;

/// Decodes the image at `path` to interleaved 8-bit RGB (alpha dropped, grey expanded), with
/// its width and height. Errors name the file.
pub fn decode_rgb8(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let fail = |msg: String| ModelError::File(FileError::new(path, msg));
    let open = || -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
        ImageReader::open(path)
            .map_err(|e| ModelError::File(FileError::io(path, "cannot open", e)))?
            .with_guessed_format()
            .map_err(|e| ModelError::File(FileError::io(path, "cannot read", e)))
    };
    let reader = open()?;
    if reader.format().is_none() {
        return Err(fail(
            "not a PNG, JPEG or WebP image (unrecognised content)".into(),
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| fail(format!("not a readable image: {e}")))?;
    let pixels = w as u64 * h as u64;
    if pixels == 0 {
        return Err(fail(format!("the image is empty ({w}x{h})")));
    }
    if pixels > MAX_PIXELS {
        return Err(fail(format!(
            "the image is {w}x{h} = {pixels} pixels, more than the limit of {MAX_PIXELS}"
        )));
    }
    let mut reader = open()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // The decoder's own buffers: up to 16-bit RGBA (8 bytes per pixel).
    limits.max_alloc = Some(pixels * 8 + (1 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| fail(format!("not a readable PNG, JPEG or WebP image: {e}")))?;
    let rgb = img.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    Ok((rgb.into_raw(), w, h))
}
