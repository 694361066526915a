//! Fuzz target: the `.npy` reader on arbitrary bytes, with the true length and with a length
//! that lies (as a pipe or a growing file might).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_models::io::npy;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = npy::read_from(std::io::Cursor::new(data), data.len() as u64, "fuzz.npy") {
        assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
    }
    let _ = npy::read_from(std::io::Cursor::new(data), u64::MAX, "fuzz.npy");
});
