//! Fuzz target `config_json`: see [`cbqa_fuzz::Target`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cbqa_fuzz::fuzz(cbqa_fuzz::Target::from_name("config_json").unwrap(), data);
});
