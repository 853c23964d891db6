//! The break-glass file reader: arbitrary bytes as the file. Reads the clear header and stanza
//! (`Header::parse`) and opens the file (`file::open`, age decryption, the JSON inside and its
//! checks against the header) with the fixed epoch secret combined from
//! `fixtures/breakglass-shares.txt`, the epoch the seeds in the corpus are encrypted to. Shares
//! are also collected against each parsed header (`ShareSet::for_file`), as `breakglass open` does.
#![no_main]

use cofre_breakglass::share::ShareSet;
use cofre_breakglass::{EpochSecret, Header};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const SHARES: &str = include_str!("../fixtures/breakglass-shares.txt");

fn secret() -> &'static EpochSecret {
    static SECRET: OnceLock<EpochSecret> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut set = ShareSet::new();
        for line in SHARES.lines() {
            set.add_text(line)
                .expect("fixtures/breakglass-shares.txt holds shares");
        }
        set.combine().expect("the fixture shares combine")
    })
}

fuzz_target!(|data: &[u8]| {
    let secret = secret();
    if let Ok(header) = Header::parse(data) {
        let _ = header.file_name();
        let _ = header.describe();
        let mut set = ShareSet::for_file(&header);
        for line in SHARES.lines() {
            if set.add_text(line).is_err() {
                break;
            }
        }
    }
    if let Ok((header, contents)) = cofre_breakglass::file::open(data, secret) {
        // What opened is what the header announced (open checks it; this holds it to that).
        let counts = contents.actual_counts();
        assert_eq!(
            (counts.targets, counts.credentials, counts.versions),
            (header.targets, header.credentials, header.versions)
        );
        let session = cofre_breakglass::session::Session::new(&contents, true);
        let _ = session.matches("db");
    }
});
