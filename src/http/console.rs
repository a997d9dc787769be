//! The console at `/console/`: one HTML page, its script and its style sheet, compiled into the
//! binary (no CDN, no build step, works offline). The page holds no data: it calls the API
//! with the token the operator types in, kept in a variable of the page and nowhere else, so
//! the assets themselves are public. Every asset is sent with a content security policy that
//! lets the page load only itself and talk only to this origin.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// One file of the console.
struct Asset {
    /// The path under `/console/` (`""` for the page itself).
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static str,
}

/// Every file of the console.
const ASSETS: [Asset; 4] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_str!("console/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/console.js"),
    },
    Asset {
        name: "tokens.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/tokens.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console/console.css"),
    },
];

/// Only this origin's own script, styles and API; no inline script, no frames, no forms
/// posted anywhere, no plugins. The charts are SVG drawn by the script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Each asset's entity tag: a browser revalidates (`Cache-Control: no-cache`) and gets `304`
/// until the binary changes.
static ENTITY_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body.as_bytes());
            let hex: String = digest[..12]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// Registers `/console` (a redirect), `/console/` and the assets beside it.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/console",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/console/"))
                .finish()
        }),
    );
    for (index, asset) in ASSETS.iter().enumerate() {
        let path = match asset.name {
            "" => "/console/".to_owned(),
            name => format!("/console/{name}"),
        };
        cfg.route(
            &path,
            web::get().to(move |request: HttpRequest| async move { serve(index, &request) }),
        );
    }
}

/// Answers one asset, or `304` when the browser holds this version.
fn serve(index: usize, request: &HttpRequest) -> HttpResponse {
    let asset = &ASSETS[index];
    let tags: &'static [String] = &ENTITY_TAGS;
    let tag = tags[index].as_str();
    let held = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|presented| presented.as_bytes() == tag.as_bytes());
    let mut response = if held {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((header::ETAG, HeaderValue::from_static(tag)))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if held {
        response.finish()
    } else {
        response.body(asset.body)
    }
}

/// The console's files and their sizes in bytes, for the page-weight figure of the bench.
pub fn asset_sizes() -> Vec<(&'static str, usize)> {
    ASSETS
        .iter()
        .map(|asset| (asset.name, asset.body.len()))
        .collect()
}
