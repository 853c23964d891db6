//! The snapshot reader: arbitrary bytes as the snapshot file. Reads the clear header
//! (`format::read_header`), opens the snapshot key the way a restore does
//! (`restore::open_key`, under a fixed master key that the seeds' keys are sealed with), opens
//! the file (`Reader::open`: trailer, manifest frame) and reads every member
//! (`Reader::for_each_member`: each frame's tag, sizes and SHA-256s), writing nowhere.
#![no_main]

use cofre_crypto::MasterKey;
use cofre_app::snapshot::{format, restore};
use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Write};

/// The same key as `examples/make_seeds.rs`.
const SNAPSHOT_MASTER: [u8; 32] = [0x5a; 32];

struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut file = Cursor::new(data);
    let Ok((header, _)) = format::read_header(&mut file) else {
        return;
    };
    let master = MasterKey::from_bytes(SNAPSHOT_MASTER);
    let Ok(key) = restore::open_key(&header, &master) else {
        return;
    };
    let Ok(mut reader) = format::Reader::open(Cursor::new(data), key) else {
        return;
    };
    let _ = reader.for_each_member(|_| Ok(Some(Box::new(Count(0)))), &mut |_| {});
    let _ = reader.for_each_member(|_| Ok(None), &mut |_| {});
});
