//! The API's request parsers, as the server runs them: the first byte picks a request type, the
//! rest is its JSON body, parsed by `extract::parse_json` (serde_json with serde_path_to_error,
//! the code behind every `JsonBody<T>`), or its query string, parsed by
//! `extract::serde_urlencoded_like` (behind every `QueryParams<T>`).
//!
//! Beyond "never panics": a body that parses, serialised again, parses again.
#![no_main]

use cofre_fuzz::PARSERS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (_, parse) = PARSERS[usize::from(pick) % PARSERS.len()];
    parse(rest);
});
