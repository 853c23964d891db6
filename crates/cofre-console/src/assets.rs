//! The browser assets, embedded at build time (see build.rs) and served under a name with their
//! content hash, so browsers may keep them for a year: a new build names new files.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub(crate) struct Asset {
    /// The name pages ask for (`xterm.js`).
    pub(crate) name: &'static str,
    /// The name it is served under (`xterm.0123456789abcdef.js`).
    pub(crate) file: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The URL of an asset, by its plain name.
pub(crate) fn url(name: &str) -> String {
    let file = ASSETS
        .iter()
        .find(|a| a.name == name)
        .map_or(name, |a| a.file);
    format!("/assets/{file}")
}

pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.file == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut res = asset.bytes.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The name changes with the content: the file never does.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    res
}
