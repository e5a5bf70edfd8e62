//! Image files in and out, with errors that name the file.

use std::path::Path;

use image::RgbImage;

use crate::{Error, Result};

/// Decode any supported image file (JPEG, PNG) to 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::format(path.display(), format!("cannot decode image: {e}")))?;
    Ok(img.to_rgb8())
}

/// Encode an RGB image; the format follows the extension (`.png`, `.jpg`). Written through a
/// temporary file and renamed.
pub fn write_rgb(path: &Path, img: &RgbImage) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let format = match ext.as_str() {
        "png" => image::ImageFormat::Png,
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        other => {
            return Err(Error::format(
                path.display(),
                format!("unsupported image extension `{other}` (use .png or .jpg)"),
            ))
        }
    };
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .map_err(|e| Error::format(path.display(), format!("cannot encode image: {e}")))?;
    crate::data::dataset::write_atomic(path, &bytes)
}
