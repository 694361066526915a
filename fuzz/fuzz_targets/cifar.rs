//! Fuzz target: CIFAR-10 binary records from arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((images, labels)) =
        tessera_models::data::cifar::parse_batch(data, std::path::Path::new("fuzz.bin"))
    {
        assert_eq!(images.len(), labels.len() * 3072);
    }
});
