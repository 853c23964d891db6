//! Share lines as custodians type them, one per line: unseal shares of the server's keyring
//! (`cofre-unseal-...`, `UnsealShare::parse` and `UnsealProgress::submit` against a fixed 2-of-3
//! keyring) and break-glass shares (`cofre-bg-...`, `Share::parse` and a `ShareSet` that combines
//! them once complete), with the helpers of `cofre_crypto::share_text`.
//!
//! A random line almost never carries a valid checksum, so each line is also tried with its
//! checksum recomputed: that is how the fuzzer reaches the parsing after the checksum check.
//! Beyond "never panics": a share that parses prints as a line that parses to the same share.
#![no_main]

use cofre_breakglass::share::ShareSet;
use cofre_breakglass::Share;
use cofre_crypto::share_text;
use cofre_crypto::{Keyring, UnsealShare};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        serde_json::from_str(include_str!("../fixtures/keyring.json"))
            .expect("fixtures/keyring.json is a keyring (cargo run --example make_seeds)")
    })
}

/// The line with its last part replaced by the checksum of everything before it.
fn repaired(line: &str) -> String {
    let normal = share_text::normalise(line);
    let body = normal.rsplit_once('-').map_or(normal.as_str(), |(b, _)| b);
    share_text::with_checksum(body).as_str().to_owned()
}

fn unseal(line: &str, progress: &mut cofre_crypto::UnsealProgress) {
    if let Ok(share) = UnsealShare::parse(line) {
        let again = UnsealShare::parse(share.as_str()).expect("a parsed unseal share reparses");
        assert_eq!(again.as_str(), share.as_str());
        assert_eq!(again.index(), share.index());
        assert_eq!(again.threshold(), share.threshold());
        assert_eq!(again.keyring_id(), share.keyring_id());
    }
    let _ = progress.submit(keyring(), line);
}

fn breakglass(line: &str, any: &mut ShareSet) {
    if let Ok(share) = Share::parse(line) {
        let again = Share::parse(share.as_str()).expect("a parsed break-glass share reparses");
        assert_eq!(again.as_str(), share.as_str());
        assert_eq!(
            (again.instance(), again.epoch(), again.key_id()),
            (share.instance(), share.epoch(), share.key_id())
        );
        assert_eq!(
            (again.threshold(), again.index()),
            (share.threshold(), share.index())
        );
    }
    if any.add_text(line).is_ok() && any.is_complete() {
        let _ = any.combine();
    }
    let _ = (any.need(), any.have(), any.indexes());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut progress = keyring().unseal_progress();
    let mut any = ShareSet::new();
    for line in text.lines().take(32) {
        let fixed = repaired(line);
        for l in [line, fixed.as_str()] {
            unseal(l, &mut progress);
            breakglass(l, &mut any);
            let normal = share_text::normalise(l);
            let _ = share_text::has_share_alphabet(&normal);
            let _ = share_text::split_checked(&normal);
            for part in normal.split('-') {
                let _ = share_text::parse_small_number(part);
                if let Some(bytes) = share_text::decode_payload(part) {
                    let encoded = share_text::encode_payload(&bytes);
                    assert_eq!(
                        encoded.as_str(),
                        part,
                        "base32 decodes only its own encoding"
                    );
                }
            }
        }
    }
    let _ = cofre_breakglass::combine(&[]);
});
