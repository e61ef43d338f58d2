//! Inbound `/ws` frame decoding (spec §7.2): any text, including invalid UTF-8 turned away
//! before decoding as the WebSocket layer does, must decode or be refused — never panic — and
//! a decoded `ping` must echo as valid JSON.
#![no_main]

use alterego::routes::ws::protocol::{Command, decode, pong};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > alterego::routes::ws::protocol::MAX_INBOUND_FRAME {
        return; // closed with 1009 before decoding
    }
    if let Ok(Command::Ping { data }) = decode(text) {
        let echoed = pong(&data);
        assert!(serde_json::from_str::<serde_json::Value>(&echoed).is_ok(), "{echoed}");
    }
});
