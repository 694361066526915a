//! Fuzz target: PNG / JPEG decoding as `tessera run` does it (the `image` crate with the same
//! features), with the decoder's allocation limit set to 64 MiB so a decompression bomb is an
//! error here rather than an out-of-memory kill of the fuzzer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = image::ImageReader::new(std::io::Cursor::new(data)).with_guessed_format()
    else {
        return;
    };
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(64 << 20);
    reader.limits(limits);
    if let Ok(img) = reader.decode() {
        let rgb = img.to_rgb8();
        assert_eq!(rgb.as_raw().len(), rgb.width() as usize * rgb.height() as usize * 3);
    }
});
