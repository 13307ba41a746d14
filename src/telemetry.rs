//! Tracing setup. Only the binary calls [`init`]; libraries and tests never
//! install a subscriber of their own.
//!
//! `RUST_LOG` filters (default `corral=info`); `CORRAL_LOG_FORMAT=json` turns
//! the text lines into JSON for production log pipelines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("corral=info"));
    let json = std::env::var("CORRAL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
