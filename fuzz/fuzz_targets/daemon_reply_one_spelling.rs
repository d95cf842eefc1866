//! A line the daemon's client reads as a reply is exactly the line that reply writes: no forged or
//! garbled line is taken for another spelling of an answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synergy_craft::daemon::proto::Reply;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(r) = Reply::parse(line) {
        assert_eq!(r.line(), line);
    }
});
