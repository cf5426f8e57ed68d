#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| host_api::fuzzing::mqtt_from_broker(data));
