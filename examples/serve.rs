//! Embedding the answering service in a program of your own: load a model once, then serve it
//! with the same library call `cbqa serve` makes (dynamic batching, limits, metrics, graceful
//! SIGTERM). `cbqa serve --model MODEL_DIR` is the ready-made command; this is the API under it.
//!
//! ```sh
//! cargo run --example serve -- MODEL_DIR [PORT]
//! curl -s localhost:8080/v1/answer -d '{"question": "who wrote the iliad"}'
//! ```

use cbqa::serve::{serve, Limits, ServeOptions};
use cbqa::{Answerer, AnswererOptions};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or("usage: serve MODEL_DIR [PORT]")?;
    let port = args.next().map(|p| p.parse()).transpose()?.unwrap_or(8080);
    // A running batch per thread, each on its own session copy (set
    // `backend.parallel_batches = false` for one batch on all threads).
    let answerer = Answerer::load(model.as_ref(), AnswererOptions::default())?;
    let opts = ServeOptions {
        port,
        model_dir: model.into(),
        limits: Limits {
            timeout: Duration::from_secs(10),
            ..Limits::default()
        },
        ..ServeOptions::default()
    };
    serve(answerer, opts, |addr| {
        println!("listening on http://{addr}")
    })?;
    Ok(())
}
