//! `cbqa serve`: the real binary on 127.0.0.1, real HTTP requests — answers as `cbqa predict`
//! gives them, alone and under concurrency; every error status; `/metrics` in Prometheus text;
//! SIGTERM with requests in flight. Also the embedding API it serves (`Answerer`).

use crate::common::*;
use crate::runtime::optimum_export;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `cbqa serve` process on a free port of 127.0.0.1, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = cbqa()
            .args(["serve", "--port", "0", "--threads", "2", "--model"])
            .arg(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start cbqa serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("cbqa serve did not start: {line:?}\n{err}");
        };
        Server {
            addr: addr.to_string(),
            child,
        }
    }

    fn post(&self, body: &Value) -> Response {
        http(
            &self.addr,
            "POST",
            "/v1/answer",
            body.to_string().as_bytes(),
        )
    }

    fn get(&self, path: &str) -> Response {
        http(&self.addr, "GET", path, b"")
    }

    /// Send SIGTERM and wait for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling a child process this test started and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, lower-cased headers, body.
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `error.field` and `error.kind` of an error body.
    fn error(&self) -> (String, String) {
        let v = self.json();
        let e = &v["error"];
        let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
        (s(&e["field"]), s(&e["kind"]))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`, so the body runs to EOF).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A refused body may be answered before it is all sent; the response still comes.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{raw}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

fn questions(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("who was president of the united states in {}", 1900 + 7 * i))
        .collect()
}

/// `cbqa predict --format jsonl` on `qs` with `flags`: one JSON object per question.
fn predict(model: &Path, qs: &[String], flags: &[&str]) -> Vec<Value> {
    let mut args = vec!["predict", "--format", "jsonl", "--threads", "2"];
    args.extend_from_slice(flags);
    let model = model.to_str().unwrap();
    args.extend_from_slice(&["--model", model]);
    args.extend(qs.iter().map(String::as_str));
    let (ok, out, err) = run_cbqa(&args);
    assert!(ok, "cbqa predict failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The best answer and the candidates' texts of an answer object (predict's or the server's).
fn texts(a: &Value) -> (String, Vec<String>) {
    let best = a.get("answer").unwrap().as_str().unwrap().to_string();
    let candidates = a["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["text"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (best, candidates)
}

fn assert_score(got: &Value, want: &Value, what: &str) {
    let (g, w) = (
        got["score"].as_f64().unwrap(),
        want["score"].as_f64().unwrap(),
    );
    assert!((g - w).abs() < 1e-4, "{what}: score {g} vs predict's {w}");
}

#[test]
fn serve_answers_as_predict_does_alone_and_under_concurrency() {
    // optimum's export cannot join running batches: dynamic batching
    check_serve_parity(&optimum_export("t5_v1_1"), &[], "dynamic", 1);
}

#[test]
fn continuous_batching_answers_as_predict_does() {
    // cbqa's export joins running batches; a batch of 3 questions makes the 16 clients' questions
    // join and leave it between decoder steps, requests of 2 questions split across joins; on 2
    // threads two decode loops each run a batch, on their own session copies
    let model = crate::runtime::cbqa_export("t5_v1_1");
    check_serve_parity(&model, &["--batch-size", "3"], "continuous", 2);
    check_serve_parity(&model, &["--batching", "dynamic"], "dynamic", 1);
    // tract runs a batch per thread too
    let tract = ["--backend", "tract", "--batch-size", "3"];
    check_serve_parity(&model, &tract, "continuous", 2);
    // one batch on both threads
    let server = Server::start(&model, &["--serial-batches"]);
    let info = server.get("/v1/model").json();
    assert_eq!(info["defaults"]["decode_loops"], 1, "{info}");
}

/// `cbqa serve --model model extra…` answers as `cbqa predict` (with the same `--backend`) does,
/// one request at a time and under 16 concurrent clients, greedy and beam search, with
/// `batching` and `loops` decode loops in `/v1/model`.
fn check_serve_parity(model: &Path, extra: &[&str], batching: &str, loops: usize) {
    let model = model.to_path_buf();
    let qs = questions(8);
    let backend = match extra.iter().position(|&a| a == "--backend") {
        Some(i) => extra[i..i + 2].to_vec(),
        None => Vec::new(),
    };
    let greedy = predict(&model, &qs, &backend);
    let beam_flags = [&backend[..], &["--beams", "4", "--candidates", "3"]].concat();
    let beams = predict(&model, &qs, &beam_flags);
    let server = Server::start(&model, extra);
    let info = server.get("/v1/model").json();
    assert_eq!(info["defaults"]["batching"], batching, "{info}");
    assert_eq!(info["defaults"]["decode_loops"], loops, "{info}");
    for (i, q) in qs.iter().enumerate() {
        let r = server.post(&json!({ "question": q }));
        assert_eq!(r.status, 200, "{}", r.body);
        let got = r.json();
        assert_eq!(texts(&got).0, texts(&greedy[i]).0, "question {i}");
        assert_score(&got, &greedy[i], q);
        assert_eq!(got["truncated"], false);
        assert!(got.get("candidates").is_none(), "{got}");
    }
    let r = server.post(&json!({ "questions": qs, "beams": 4, "candidates": 3 }));
    assert_eq!(r.status, 200, "{}", r.body);
    for (i, got) in r.json()["answers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(texts(got), texts(&beams[i]), "beam search, question {i}");
        assert_eq!(texts(got).1.len(), 3);
        assert_score(got, &beams[i], &qs[i]);
    }
    // 16 clients at once, single questions and batches, greedy and beam: the same answers.
    let addr = server.addr.clone();
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let (addr, qs) = (addr.clone(), qs.clone());
            std::thread::spawn(move || {
                let i = t % qs.len();
                let body = match t % 3 {
                    0 => json!({ "question": qs[i] }),
                    1 => json!({ "questions": [qs[i], qs[(i + 1) % qs.len()]] }),
                    _ => json!({ "questions": [qs[i]], "beams": 4, "candidates": 3 }),
                };
                let r = http(&addr, "POST", "/v1/answer", body.to_string().as_bytes());
                assert_eq!(r.status, 200, "{}", r.body);
                (t, i, r.json())
            })
        })
        .collect();
    for h in handles {
        let (t, i, got) = h.join().unwrap();
        let next = (i + 1) % qs.len();
        match t % 3 {
            0 => assert_eq!(texts(&got).0, texts(&greedy[i]).0, "client {t}"),
            1 => {
                assert_eq!(
                    texts(&got["answers"][0]).0,
                    texts(&greedy[i]).0,
                    "client {t}"
                );
                assert_eq!(
                    texts(&got["answers"][1]).0,
                    texts(&greedy[next]).0,
                    "client {t}"
                );
            }
            _ => assert_eq!(texts(&got["answers"][0]), texts(&beams[i]), "client {t}"),
        }
    }
    let metrics = parse_metrics(&server.get("/metrics").body);
    assert_eq!(metrics["cbqa_requests_total{status=\"200\"}"], 25.0);
    assert_eq!(metrics["cbqa_questions_total"], 8.0 + 8.0 + 16.0 + 5.0);
    assert_eq!(metrics["cbqa_requests_in_flight"], 0.0);
    assert!(metrics["cbqa_generated_tokens_total"] >= 37.0);
    assert_eq!(metrics["cbqa_time_to_answer_seconds_count"], 25.0);
    // Continuous batching: every question joined the running batch once (the join sizes sum to
    // the questions); dynamic batching runs whole batches and joins none.
    let joined = if batching == "continuous" { 37.0 } else { 0.0 };
    assert_eq!(metrics["cbqa_join_size_sum"], joined, "{batching}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// Every sample line of a Prometheus text exposition, by name and labels; panics on a line that
/// is not `# HELP`/`# TYPE`, or not `name{labels} value` with a number; checks that each
/// histogram's buckets are cumulative and end at its count.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP cbqa_") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(name.starts_with("cbqa_"), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "{line}: no # TYPE before it");
        if key.contains('{') {
            assert!(key.ends_with("\"}") && key.contains("=\""), "{line}");
        }
        samples.insert(key.to_string(), value);
    }
    for (name, _) in typed.iter().filter(|(_, k)| *k == "histogram") {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    *v,
                ))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: {buckets:?}"
        );
        assert_eq!(
            buckets.last().unwrap().1,
            samples[&format!("{name}_count")],
            "{name}"
        );
    }
    samples
}

#[test]
fn serve_answers_every_bad_request_with_its_status_and_keeps_serving() {
    let model = optimum_export("t5_v1_1");
    let server = Server::start(
        &model,
        &[
            "--max-queue",
            "4",
            "--max-questions",
            "4",
            "--max-body-bytes",
            "2000",
            "--max-input-tokens",
            "8",
        ],
    );
    let bad = |body: &str, status: u16, field: &str, kind: &str| {
        let r = http(&server.addr, "POST", "/v1/answer", body.as_bytes());
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.error(), (field.to_string(), kind.to_string()), "{body}");
    };
    bad("{\"question\": ", 400, "", "invalid_json");
    bad("[\"a\"]", 400, "body", "invalid_field");
    bad("{}", 400, "question", "invalid_field");
    bad(r#"{"question": 7}"#, 400, "question", "invalid_field");
    bad(r#"{"question": ""}"#, 400, "question", "invalid_field");
    bad(r#"{"questions": "a"}"#, 400, "questions", "invalid_field");
    bad(
        r#"{"questions": ["a", null]}"#,
        400,
        "questions[1]",
        "invalid_field",
    );
    bad(
        r#"{"questions": ["a", "b", "c", "d", "e"]}"#,
        400,
        "questions",
        "invalid_field",
    );
    bad(
        r#"{"question": "a", "beams": -1}"#,
        400,
        "beams",
        "invalid_field",
    );
    bad(
        r#"{"question": "a", "beams": 2, "candidates": 3}"#,
        400,
        "candidates",
        "invalid_field",
    );
    bad(
        r#"{"question": "a", "max_new_tokens": 100000}"#,
        400,
        "max_new_tokens",
        "invalid_field",
    );
    bad(
        r#"{"question": "a", "prefix": 1}"#,
        400,
        "prefix",
        "invalid_field",
    );
    bad(
        r#"{"question": "a", "beam": 2}"#,
        400,
        "beam",
        "invalid_field",
    );
    let huge = json!({ "question": "why ".repeat(1000) }).to_string();
    bad(&huge, 413, "", "body_too_large");
    let r = server.get("/v2/answer");
    assert_eq!((r.status, r.error().1.as_str()), (404, "not_found"));
    assert_eq!(server.get("/v1/answer").status, 405);
    // a question over --max-input-tokens is cut and says so
    let long = "who was the first person to walk on the moon and when did it happen exactly";
    let r = server.post(&json!({ "questions": ["short", long] }));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (&v["answers"][0]["truncated"], &v["answers"][1]["truncated"]),
        (&json!(false), &json!(true))
    );
    // a full queue: one slow request decoding, one waiting (4 questions = --max-queue), a third
    // is refused at once with Retry-After; the admitted ones are answered.
    let slow = json!({ "questions": questions(4), "beams": 16, "max_new_tokens": 64 });
    let send = |body: Value| {
        let addr = server.addr.clone();
        std::thread::spawn(move || http(&addr, "POST", "/v1/answer", body.to_string().as_bytes()))
    };
    let first = send(slow.clone());
    wait_for(&server, "cbqa_running_batch_size", 4.0);
    let second = send(slow.clone());
    wait_for(&server, "cbqa_queue_depth", 4.0);
    let r = server.post(&json!({ "question": "one more" }));
    assert_eq!(
        (r.status, r.error().1.as_str()),
        (429, "queue_full"),
        "{}",
        r.body
    );
    let retry: u64 = r.headers["retry-after"].parse().unwrap();
    assert!(retry >= 1);
    for h in [first, second] {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // still serving, with the errors counted by kind
    assert_eq!(server.post(&json!({ "question": "and now" })).status, 200);
    assert_eq!(server.get("/health").json()["status"], "ok");
    assert_eq!(server.get("/ready").json()["ready"], true);
    let model_info = server.get("/v1/model").json();
    assert_eq!(model_info["config"]["d_model"], 40, "{model_info}");
    assert_eq!(model_info["limits"]["max_queue"], 4);
    assert!(model_info["backend"]
        .as_str()
        .unwrap()
        .contains("onnxruntime"));
    let m = parse_metrics(&server.get("/metrics").body);
    assert_eq!(m["cbqa_errors_total{kind=\"invalid_field\"}"], 12.0);
    assert_eq!(m["cbqa_errors_total{kind=\"queue_full\"}"], 1.0);
    assert_eq!(m["cbqa_errors_total{kind=\"body_too_large\"}"], 1.0);
    // the long question, and the 8 of the two slow requests (longer than 8 tokens too)
    assert_eq!(m["cbqa_truncated_questions_total"], 9.0);
}

/// Poll `/metrics` until `name` is at least `value` (at most 20 s).
fn wait_for(server: &Server, name: &str, value: f64) {
    let start = Instant::now();
    loop {
        let m = parse_metrics(&server.get("/metrics").body);
        if m[name] >= value {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} never reached {value}: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn serve_times_out_slow_requests_and_finishes_in_flight_ones_on_sigterm() {
    // dynamic batching (optimum's export), then continuous batching (cbqa's), where a request
    // that times out leaves the running batch at the next step
    check_timeout_and_sigterm(&optimum_export("t5_v1_1"));
    check_timeout_and_sigterm(&crate::runtime::cbqa_export("t5_v1_1"));
}

fn check_timeout_and_sigterm(model: &Path) {
    let model = model.to_path_buf();
    let slow = json!({ "questions": questions(16), "beams": 16, "max_new_tokens": 64 });
    let server = Server::start(&model, &["--timeout", "0.2"]);
    let start = Instant::now();
    let r = server.post(&slow);
    assert_eq!(
        (r.status, r.error().1.as_str()),
        (504, "timeout"),
        "{}",
        r.body
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(server);

    // SIGTERM while four requests are in flight: each is answered, then the server exits 0.
    let server = Server::start(&model, &[]);
    let work = json!({ "questions": questions(4), "beams": 8 });
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (addr, body) = (server.addr.clone(), work.to_string());
            std::thread::spawn(move || http(&addr, "POST", "/v1/answer", body.as_bytes()))
        })
        .collect();
    wait_for(&server, "cbqa_requests_in_flight", 4.0);
    let addr = server.addr.clone();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["answers"].as_array().unwrap().len(), 4);
    }
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening after SIGTERM"
    );
}

#[test]
fn answerer_is_shareable_truncates_long_questions_and_names_mismatched_graphs() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<cbqa::Answerer>();

    let model = crate::runtime::cbqa_export("t5_v1_0");
    let opts = cbqa::AnswererOptions {
        max_input_tokens: 8,
        ..Default::default()
    };
    let a = cbqa::Answerer::load(&model, opts).unwrap();
    let long = "who was the first person to walk on the moon and when did it happen exactly";
    let out = a.answer_batch(&["short one", long, ""]);
    assert!(!out[0].as_ref().unwrap().truncated);
    assert!(out[1].as_ref().unwrap().truncated);
    assert!(out[2]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("empty question"));
    assert_eq!(a.truncations(), 1);

    // a graph whose output names are not optimum's is refused, naming the file and the tensor
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&model, tmp.path());
    let dec = tmp.path().join("decoder_model.onnx");
    let script = "import onnx, sys\nm = onnx.load(sys.argv[1], load_external_data=False)\n\
                  [setattr(o, 'name', 'logitz') for o in m.graph.output if o.name == 'logits']\n\
                  [n.output.__setitem__(i, 'logitz') for n in m.graph.node for i, x in enumerate(n.output) if x == 'logits']\n\
                  onnx.save(m, sys.argv[1])\n";
    let st = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&dec)
        .status()
        .unwrap();
    assert!(st.success());
    let err = cbqa::Answerer::load(tmp.path(), Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("decoder_model.onnx") && err.contains("`logits`"),
        "{err}"
    );
}
