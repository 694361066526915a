//! Fuzz target: the safetensors reader on arbitrary bytes (an error or a file, never a panic,
//! and every tensor read holds as many values as its shape says).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_models::io::safetensors;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = safetensors::read_from(std::io::Cursor::new(data), "fuzz.safetensors") {
        for t in file.tensors.values() {
            assert_eq!(t.values.len(), t.shape.iter().product::<usize>());
        }
    }
});
