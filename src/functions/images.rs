//! Image work for media (spec §10.2, §10.5, §10.6): size caps read from the header before any
//! pixel buffer exists, decoding with EXIF orientation, avatar normalisation, attachment
//! re-encoding, WebP metadata removal, variants and identicons.
//!
//! Everything here is synchronous and CPU-bound: callers run it on the blocking pool.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

/// No side may be longer (spec §10.2).
pub const MAX_SIDE: u32 = 16_384;
/// No image may have more pixels (spec §10.2).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Avatars and space icons are normalised to this square.
pub const AVATAR_SIDE: u32 = 512;
/// Default avatars are this square.
pub const IDENTICON_SIDE: u32 = 256;
/// JPEG attachments are re-encoded at this quality.
pub const JPEG_QUALITY: u8 = 90;
/// Decoders may allocate at most this much (a 40 MP image at 16 bits per RGBA channel fits).
const MAX_ALLOC: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("The image is too large: at most {MAX_SIDE} pixels per side and 40 megapixels are accepted")]
    TooLarge,
    #[error("The content cannot be decoded as an image")]
    Undecodable,
    #[error("image I/O: {0}")]
    Io(#[from] io::Error),
    #[error("image encoding: {0}")]
    Encode(String),
}

/// Runs image work on the blocking pool, at most one job per core at a time: decoding a
/// 40-megapixel image takes hundreds of megabytes, so the number of jobs in flight bounds memory.
#[derive(Clone, Debug)]
pub struct ImageWorkers {
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for ImageWorkers {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ImageWorkers {
            slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }
}

impl ImageWorkers {
    /// Runs `job` once a slot is free. The slot is held by the blocking task itself, so a
    /// cancelled request does not free it before the work is done.
    pub async fn run<T, F>(&self, job: F) -> Result<T, ImageError>
    where
        F: FnOnce() -> Result<T, ImageError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ImageError::Encode(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| ImageError::Encode(format!("image task failed: {e}")))?
    }
}

/// The decoder format of a raster content type.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_ALLOC);
    l
}

fn decode_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Limits(_) => ImageError::TooLarge,
        image::ImageError::IoError(e) if e.kind() != io::ErrorKind::UnexpectedEof => ImageError::Io(e),
        _ => ImageError::Undecodable,
    }
}

fn encode_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::IoError(e) => ImageError::Io(e),
        other => ImageError::Encode(other.to_string()),
    }
}

fn reader<R: io::BufRead + Seek>(inner: R, format: ImageFormat) -> ImageReader<R> {
    let mut r = ImageReader::with_format(inner, format);
    r.limits(limits());
    r
}

/// Reads only the header and enforces the caps: nothing the size of the pixels is allocated.
fn checked_decoder<'a, R: io::BufRead + Seek + 'a>(
    inner: R,
    format: ImageFormat,
) -> Result<impl ImageDecoder + 'a, ImageError> {
    let decoder = reader(inner, format).into_decoder().map_err(decode_error)?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(ImageError::TooLarge);
    }
    if w == 0 || h == 0 {
        return Err(ImageError::Undecodable);
    }
    Ok(decoder)
}

/// The caps of §10.2 for an image file that is stored without decoding (GIF, WebP).
pub fn check_file(path: &Path, format: ImageFormat) -> Result<(u32, u32), ImageError> {
    let decoder = checked_decoder(BufReader::new(File::open(path)?), format)?;
    Ok(decoder.dimensions())
}

/// Decodes the first frame within the caps and applies the EXIF orientation.
fn decode<R: io::BufRead + Seek>(inner: R, format: ImageFormat) -> Result<DynamicImage, ImageError> {
    let mut decoder = checked_decoder(inner, format)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn decode_file(path: &Path, format: ImageFormat) -> Result<DynamicImage, ImageError> {
    decode(BufReader::new(File::open(path)?), format)
}

/// Resizes to fit inside `w`×`h` keeping the aspect ratio; large reductions first shrink with a
/// fast box filter to twice the target so Lanczos3 works on a bounded image.
fn shrink(img: &DynamicImage, w: u32, h: u32, exact: bool) -> DynamicImage {
    let pre = if img.width() > w.saturating_mul(4) || img.height() > h.saturating_mul(4) {
        if exact {
            img.thumbnail_exact(w.saturating_mul(2), h.saturating_mul(2))
        } else {
            img.thumbnail(w.saturating_mul(2), h.saturating_mul(2))
        }
    } else {
        img.clone()
    };
    if exact {
        pre.resize_exact(w, h, FilterType::Lanczos3)
    } else {
        pre.resize(w, h, FilterType::Lanczos3)
    }
}

/// Eight bits per channel, alpha only where the image has it.
fn to_8bit(img: DynamicImage) -> DynamicImage {
    match (img.color().has_color(), img.color().has_alpha()) {
        (_, true) => DynamicImage::ImageRgba8(img.to_rgba8()),
        (true, false) => DynamicImage::ImageRgb8(img.to_rgb8()),
        (false, false) => DynamicImage::ImageLuma8(img.to_luma8()),
    }
}

fn write_png(img: &DynamicImage, out: impl Write) -> Result<(), ImageError> {
    img.write_with_encoder(PngEncoder::new(out)).map_err(encode_error)
}

fn create(dst: &Path) -> Result<BufWriter<File>, ImageError> {
    Ok(BufWriter::new(File::create(dst)?))
}

fn finish(mut out: BufWriter<File>, dst: &Path) -> Result<u64, ImageError> {
    out.flush()?;
    drop(out);
    Ok(std::fs::metadata(dst)?.len())
}

/// Avatar and space icon (spec §10.2): first frame, EXIF orientation applied, centre-cropped
/// and resized to 512×512 with Lanczos3, written as PNG to `dst`. Returns the size written.
pub fn normalise_avatar(src: &Path, format: ImageFormat, dst: &Path) -> Result<u64, ImageError> {
    let img = decode_file(src, format)?;
    let side = img.width().min(img.height());
    let square = img.crop_imm((img.width() - side) / 2, (img.height() - side) / 2, side, side);
    let sized = to_8bit(shrink(&square, AVATAR_SIDE, AVATAR_SIDE, true));
    let mut out = create(dst)?;
    write_png(&sized, &mut out)?;
    finish(out, dst)
}

/// A JPEG attachment: orientation applied, re-encoded at quality 90 (no metadata survives).
pub fn reencode_jpeg(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    let img = decode_file(src, ImageFormat::Jpeg)?;
    let img = if img.color().has_color() {
        DynamicImage::ImageRgb8(img.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(img.to_luma8())
    };
    let mut out = create(dst)?;
    img.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))
        .map_err(encode_error)?;
    finish(out, dst)
}

/// A PNG attachment: re-encoded losslessly (same pixels and depth, no ancillary chunks). An
/// `eXIf` orientation is applied so the image looks as it did.
pub fn reencode_png(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    let img = decode_file(src, ImageFormat::Png)?;
    let mut out = create(dst)?;
    write_png(&img, &mut out)?;
    finish(out, dst)
}

/// A WebP attachment: the `EXIF` and `XMP ` chunks removed (and their VP8X flags cleared),
/// everything else copied unchanged, without re-encoding. Checks the caps first.
pub fn strip_webp(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    check_file(src, ImageFormat::WebP)?;
    let mut input = BufReader::new(File::open(src)?);
    let file_len = input.get_ref().metadata()?.len();
    let mut header = [0u8; 12];
    input.read_exact(&mut header).map_err(|_| ImageError::Undecodable)?;
    if &header[0..4] != b"RIFF" || &header[8..12] != b"WEBP" {
        return Err(ImageError::Undecodable);
    }
    let riff_end = (u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]])) + 8).min(file_len);
    let mut out = create(dst)?;
    out.write_all(&header)?;
    let mut pos = 12u64;
    let mut written = 12u64;
    while pos + 8 <= riff_end {
        let mut chunk = [0u8; 8];
        input.read_exact(&mut chunk)?;
        let fourcc = [chunk[0], chunk[1], chunk[2], chunk[3]];
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let padded = size + (size & 1);
        if pos + 8 + padded > riff_end {
            // The last chunk may omit its padding byte; anything else is truncated.
            if pos + 8 + size > riff_end {
                return Err(ImageError::Undecodable);
            }
        }
        let take = padded.min(riff_end - pos - 8);
        match &fourcc {
            b"EXIF" | b"XMP " => {
                input.seek_relative(i64::try_from(take).map_err(|_| ImageError::Undecodable)?)?;
            }
            b"VP8X" if size >= 1 => {
                let mut payload = vec![0u8; usize::try_from(take).map_err(|_| ImageError::Undecodable)?];
                input.read_exact(&mut payload)?;
                // Flags: bit 3 EXIF, bit 2 XMP.
                payload[0] &= !0b0000_1100;
                out.write_all(&chunk)?;
                out.write_all(&payload)?;
                written += 8 + take;
            }
            _ => {
                out.write_all(&chunk)?;
                let copied = io::copy(&mut (&mut input).take(take), &mut out)?;
                if copied != take {
                    return Err(ImageError::Undecodable);
                }
                written += 8 + take;
            }
        }
        pos += 8 + take;
    }
    // Bytes after the RIFF container are dropped; the container size is rewritten.
    let riff_size = u32::try_from(written - 8).map_err(|_| ImageError::Undecodable)?;
    out.flush()?;
    let mut file = out.into_inner().map_err(|e| ImageError::Io(e.into_error()))?;
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&riff_size.to_le_bytes())?;
    file.flush()?;
    Ok(written)
}

/// The fitted size of a `w`×`h` variant: aspect ratio kept, never upscaled.
pub fn fitted(width: u32, height: u32, w: u32, h: u32) -> (u32, u32) {
    if width <= w && height <= h {
        return (width, height);
    }
    // Scale by the tighter of the two ratios, in integers.
    let (wide, tall) = (u64::from(width), u64::from(height));
    if wide * u64::from(h) >= tall * u64::from(w) {
        let th = (tall * u64::from(w) + wide / 2) / wide;
        (w, u32::try_from(th).unwrap_or(h).clamp(1, h))
    } else {
        let tw = (wide * u64::from(h) + tall / 2) / tall;
        (u32::try_from(tw).unwrap_or(w).clamp(1, w), h)
    }
}

/// A `?w=&h=` variant (spec §10.5): the image fitted inside `w`×`h`, never upscaled, as PNG.
pub fn variant(bytes: &[u8], format: ImageFormat, w: u32, h: u32) -> Result<Vec<u8>, ImageError> {
    let img = decode(Cursor::new(bytes), format)?;
    let (tw, th) = fitted(img.width(), img.height(), w, h);
    let sized = if (tw, th) == (img.width(), img.height()) {
        img
    } else {
        shrink(&img, tw, th, true)
    };
    let mut out = Vec::new();
    write_png(&to_8bit(sized), &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Identicons (spec §10.6).

/// A default avatar: a symmetric 5×5 identicon from SHA-256(`id`), `side`×`side` pixels
/// (256 unless a smaller variant is asked for), as a 1-bit palette PNG.
///
/// The PNG is written here with uncompressed deflate blocks, so its bytes depend on nothing but
/// this function: the same `id` gives byte-identical output in every release that keeps it.
pub fn identicon(id: &str, side: u32) -> Vec<u8> {
    let side = side.clamp(1, IDENTICON_SIDE);
    let hash = Sha256::digest(id.as_bytes());
    let hue = u32::from(u16::from_be_bytes([hash[0], hash[1]])) % 360;
    let saturation = 45 + u32::from(hash[2]) % 21; // percent
    let lightness = 45 + u32::from(hash[3]) % 16; // percent
    let fg = hsl_to_rgb(hue, saturation, lightness);
    let bg = [0xf0, 0xf0, 0xf0];
    // 5 rows × 3 columns decided by the hash, mirrored onto columns 3 and 4.
    let mut cells = [[false; 5]; 5];
    for (row, cells_row) in cells.iter_mut().enumerate() {
        for col in 0..3 {
            let on = hash[4 + row * 3 + col] & 1 == 1;
            cells_row[col] = on;
            cells_row[4 - col] = on;
        }
    }
    // A margin of 28/256 of the side on every edge, the rest split into 5×5 cells.
    let margin = side * 28 / 256;
    let inner = side - 2 * margin;
    let cell_of = |p: u32| -> Option<usize> {
        if inner == 0 || p < margin || p >= margin + inner {
            None
        } else {
            usize::try_from((p - margin) * 5 / inner).ok()
        }
    };
    png_1bit(side, side, [bg, fg], |x, y| match (cell_of(x), cell_of(y)) {
        (Some(cx), Some(cy)) => cells[cy][cx],
        _ => false,
    })
}

/// HSL (degrees, percent, percent) to RGB, in integers.
fn hsl_to_rgb(h: u32, s: u32, l: u32) -> [u8; 3] {
    // Chroma and friends scaled by 100·100.
    let c = (100 - (2 * l as i64 - 100).abs()) * s as i64; // 0..=10000
    let h_mod = (h % 120) as i64; // position inside a pair of sectors, times 60
    let x = c * (60 - (h_mod - 60).abs()) / 60;
    let m = l as i64 * 100 - c / 2;
    let (r, g, b) = match h / 60 {
        0 => (c, x, 0),
        1 => (x, c, 0),
        2 => (0, c, x),
        3 => (0, x, c),
        4 => (x, 0, c),
        _ => (c, 0, x),
    };
    let to_byte = |v: i64| u8::try_from(((v + m) * 255 + 5000) / 10000).unwrap_or(u8::MAX);
    [to_byte(r), to_byte(g), to_byte(b)]
}

/// A 1-bit indexed PNG with a two-colour palette, deflated with stored blocks.
fn png_1bit(width: u32, height: u32, palette: [[u8; 3]; 2], on: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    let row_bytes = width.div_ceil(8) as usize;
    let mut raw = Vec::with_capacity((row_bytes + 1) * height as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        let mut byte = 0u8;
        for x in 0..width {
            if on(x, y) {
                byte |= 0x80 >> (x % 8);
            }
            if x % 8 == 7 || x + 1 == width {
                raw.push(byte);
                byte = 0;
            }
        }
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[1, 3, 0, 0, 0]); // depth 1, palette, deflate, adaptive, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"PLTE", &palette.concat());
    png_chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, Rgb, RgbImage};

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_with_encoder(PngEncoder::new(&mut out))
            .unwrap();
        out
    }

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn identicons_are_deterministic_valid_pngs() {
        let a = identicon("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 256);
        let b = identicon("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 256);
        let c = identicon("someone-else", 256);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let img = image::load_from_memory_with_format(&a, ImageFormat::Png).unwrap();
        assert_eq!(img.dimensions(), (256, 256));
        // Symmetric around the vertical axis.
        let rgb = img.to_rgb8();
        for y in 0..256 {
            for x in 0..128 {
                assert_eq!(rgb.get_pixel(x, y), rgb.get_pixel(255 - x, y));
            }
        }
        let small = identicon("x", 64);
        let img = image::load_from_memory_with_format(&small, ImageFormat::Png).unwrap();
        assert_eq!(img.dimensions(), (64, 64));
    }

    #[test]
    fn hsl_conversion() {
        assert_eq!(hsl_to_rgb(0, 100, 50), [255, 0, 0]);
        assert_eq!(hsl_to_rgb(120, 100, 50), [0, 255, 0]);
        assert_eq!(hsl_to_rgb(240, 100, 50), [0, 0, 255]);
        assert_eq!(hsl_to_rgb(0, 0, 50), [128, 128, 128]);
    }

    #[test]
    fn fitting_never_upscales() {
        assert_eq!(fitted(100, 50, 64, 64), (64, 32));
        assert_eq!(fitted(50, 100, 64, 64), (32, 64));
        assert_eq!(fitted(10, 10, 64, 64), (10, 10));
        assert_eq!(fitted(1000, 1, 64, 64), (64, 1));
        assert_eq!(fitted(512, 512, 64, 32), (32, 32));
    }

    #[test]
    fn variants_fit() {
        let v = variant(&png_bytes(300, 150), ImageFormat::Png, 64, 64).unwrap();
        let img = image::load_from_memory_with_format(&v, ImageFormat::Png).unwrap();
        assert_eq!(img.dimensions(), (64, 32));
    }

    #[test]
    fn bomb_header_is_refused_before_decoding() {
        // A PNG header claiming 60000×60000 with a few bytes of data.
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&60_000u32.to_be_bytes());
        ihdr.extend_from_slice(&60_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png_chunk(&mut png, b"IHDR", &ihdr);
        png_chunk(&mut png, b"IDAT", &zlib_stored(&[0; 16]));
        png_chunk(&mut png, b"IEND", &[]);
        assert!(matches!(
            variant(&png, ImageFormat::Png, 64, 64),
            Err(ImageError::TooLarge)
        ));
        // 10000×5000 is within the side cap but over 40 megapixels.
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&10_000u32.to_be_bytes());
        ihdr.extend_from_slice(&5_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png_chunk(&mut png, b"IHDR", &ihdr);
        png_chunk(&mut png, b"IDAT", &zlib_stored(&[0; 16]));
        png_chunk(&mut png, b"IEND", &[]);
        assert!(matches!(
            variant(&png, ImageFormat::Png, 64, 64),
            Err(ImageError::TooLarge)
        ));
    }

    #[test]
    fn garbage_is_undecodable() {
        assert!(matches!(
            variant(b"\x89PNG\r\n\x1a\nnot really", ImageFormat::Png, 64, 64),
            Err(ImageError::Undecodable)
        ));
    }

    #[test]
    fn webp_metadata_chunks_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A lossless 1×1 WebP from the image crate, with EXIF and XMP chunks spliced in.
        let mut plain = Vec::new();
        DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(1, 1, image::Rgba([1, 2, 3, 255])))
            .write_to(&mut Cursor::new(&mut plain), ImageFormat::WebP)
            .unwrap();
        let body = &plain[12..];
        let mut vp8x = b"VP8X".to_vec();
        vp8x.extend_from_slice(&10u32.to_le_bytes());
        vp8x.extend_from_slice(&[0b0001_1100, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut exif = b"EXIF".to_vec();
        exif.extend_from_slice(&5u32.to_le_bytes());
        exif.extend_from_slice(b"GPS!!\0");
        let mut xmp = b"XMP ".to_vec();
        xmp.extend_from_slice(&4u32.to_le_bytes());
        xmp.extend_from_slice(b"<x/>");
        let inner = [b"WEBP".as_slice(), &vp8x, body, &exif, &xmp].concat();
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        file.extend_from_slice(&inner);
        let src = dir.path().join("in.webp");
        let dst = dir.path().join("out.webp");
        std::fs::write(&src, &file).unwrap();
        let n = strip_webp(&src, &dst).unwrap();
        let out = std::fs::read(&dst).unwrap();
        assert_eq!(n as usize, out.len());
        assert!(!out.windows(4).any(|w| w == b"EXIF" || w == b"XMP "));
        assert!(!out.windows(4).any(|w| w == b"GPS!"));
        assert_eq!(
            u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as usize,
            out.len() - 8
        );
        // The VP8X flags keep alpha, lose EXIF and XMP.
        assert_eq!(out[20], 0b0001_0000);
    }
}
