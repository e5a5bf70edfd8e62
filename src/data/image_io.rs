//! Image files in and out, with errors that name the file.

use std::path::Path;

use image::RgbImage;

use crate::{Error, Result};

/// Decode any supported image file (JPEG, PNG) to 8-bit RGB. A JPEG cut short is an error
/// ([`jpeg_is_complete`]): the decoder would fill its missing rows with grey.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        return Err(Error::format(
            path.display(),
            "truncated JPEG: no end-of-image marker after the last scan (the file was cut short)",
        ));
    }
    let img = reader
        .decode()
        .map_err(|e| Error::format(path.display(), format!("cannot decode image: {e}")))?;
    Ok(img.to_rgb8())
}

/// Whether a JPEG's last scan is followed by its end-of-image marker (`FF D9`). Inside a scan's
/// entropy-coded data a `FF` byte is always followed by `00` or a restart marker (`D0`..`D7`),
/// so an `FF D9` after the last start-of-scan (`FF DA`) is the real end; a file cut short
/// anywhere in or before its last scan has none (libjpeg's "premature end of JPEG file").
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]))
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
    crate::atomic_file::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real encoded JPEG is complete; cut anywhere short of its end-of-image marker it is
    /// not, and a header alone (no scan) is not either.
    #[test]
    fn a_cut_jpeg_is_incomplete() {
        let img = RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 10, 99]));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert_eq!(bytes[bytes.len() - 2..], [0xFF, 0xD9]);
        assert!(jpeg_is_complete(&bytes));
        // Trailing bytes after the end (some cameras append data) are accepted.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0, 0, 0x12]);
        assert!(jpeg_is_complete(&padded));
        let scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        for cut in [
            bytes.len() - 1,
            bytes.len() - 2,
            (scan + bytes.len()) / 2,
            scan + 2,
            scan,
            20,
        ] {
            assert!(
                !jpeg_is_complete(&bytes[..cut]),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
    }
}
