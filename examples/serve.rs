//! Serve answers over HTTP on 127.0.0.1 with one shared `Answerer`.
//!
//! ```sh
//! cargo run --example serve -- MODEL_DIR [--port 8080] [--backend ort|tract] [--workers 4]
//! curl -s localhost:8080/answer -d '{"questions": ["who wrote the iliad"]}'
//! curl -s 'localhost:8080/answer?q=who+wrote+the+iliad'
//! ```
//!
//! The model is loaded once; an `Arc<Answerer>` is shared by the worker threads (it is
//! `Send + Sync`), and each request's questions are answered as one batch.

use cbqa::runtime::BackendKind;
use cbqa::{Answerer, AnswererOptions};
use std::sync::Arc;

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn questions_of(req: &mut tiny_http::Request) -> Result<Vec<String>, String> {
    let url = req.url().to_string();
    if let Some((_, query)) = url.split_once('?') {
        let qs: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("q="))
            .map(percent_decode)
            .collect();
        if !qs.is_empty() {
            return Ok(qs);
        }
    }
    let mut body = String::new();
    req.as_reader()
        .read_to_string(&mut body)
        .map_err(|e| format!("cannot read body: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    v.get("questions")
        .and_then(|q| q.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|q| q.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| "expected {\"questions\": [\"...\"]} or ?q=...".to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let (mut port, mut workers, mut opts) = (8080u16, 4usize, AnswererOptions::default());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--workers" => workers = args.next().ok_or("--workers needs a value")?.parse()?,
            "--backend" => {
                opts.backend.kind = match args.next().as_deref() {
                    Some("ort") => BackendKind::Ort,
                    Some("tract") => BackendKind::Tract,
                    other => return Err(format!("--backend ort|tract, got {other:?}").into()),
                }
            }
            _ => model = Some(a),
        }
    }
    let model =
        model.ok_or("usage: serve MODEL_DIR [--port P] [--backend ort|tract] [--workers N]")?;
    let answerer = Arc::new(Answerer::load(model.as_ref(), opts)?);
    let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).map_err(|e| e.to_string())?);
    let addr = server.server_addr().to_ip().ok_or("not an IP listener")?;
    println!("listening on http://{addr}");
    let handles: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (server, answerer) = (server.clone(), answerer.clone());
            std::thread::spawn(move || {
                for mut req in server.incoming_requests() {
                    let (status, body) = match questions_of(&mut req) {
                        Err(msg) => (400, serde_json::json!({ "error": msg })),
                        Ok(qs) => {
                            let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
                            let answers: Vec<serde_json::Value> = answerer
                                .answer_batch(&refs)
                                .into_iter()
                                .zip(&qs)
                                .map(|(a, q)| match a {
                                    Ok(a) => serde_json::json!({"question": q, "answer": a.text,
                                        "score": a.score, "candidates": a.candidates}),
                                    Err(e) => {
                                        serde_json::json!({"question": q, "error": e.to_string()})
                                    }
                                })
                                .collect();
                            (200, serde_json::json!({ "answers": answers }))
                        }
                    };
                    let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
                        .expect("static header");
                    let resp = tiny_http::Response::from_string(body.to_string())
                        .with_status_code(status)
                        .with_header(header);
                    let _ = req.respond(resp);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
