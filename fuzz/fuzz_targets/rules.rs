//! The rule-file parser: any text is either a valid configuration or a
//! `file:line:col` error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match ftpgate::rules::parse_str("fuzz.rules", text) {
            Ok(config) => assert!(!config.listeners.is_empty()),
            Err(e) => assert!(e.to_string().starts_with("fuzz.rules:")),
        }
    }
});
