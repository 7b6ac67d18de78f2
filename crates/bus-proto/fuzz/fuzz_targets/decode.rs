//! Feeds arbitrary bytes to the frame decoder: it must never panic, and
//! whatever it decodes must re-encode to a frame that decodes the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mortar_bus_proto::BusCodec;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let mut codec = BusCodec::new(1 << 16);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let mut again = BytesMut::new();
        if codec.encode(&frame, &mut again).is_ok() {
            let back = codec.decode(&mut again).ok().flatten();
            assert_eq!(back.as_ref(), Some(&frame));
        }
    }
});
