//! Fuzz target `serve_request`: see [`cbqa_fuzz::Target`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cbqa_fuzz::fuzz(cbqa_fuzz::Target::from_name("serve_request").unwrap(), data);
});
