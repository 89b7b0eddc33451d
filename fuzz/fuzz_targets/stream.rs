//! Fuzzes the stream decoder and the engine behind it: any bytes are
//! either inputs (which the engine then applies, refusing those that break
//! the ordering rules) or an error, never a panic, a hang or an unbounded
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmapwatch_engine::{
    engine::{Engine, Options},
    stream,
};

fuzz_target!(|data: &[u8]| {
    let inputs = match stream::decode_all(data) {
        Ok(i) => i,
        Err((i, _)) => i,
    };
    let mut e = Engine::new(Options::default());
    for i in inputs {
        let _ = e.apply(i);
    }
    let _ = e.take_requests();
    let _ = e.report(true);
    let _ = e.frame();
});
