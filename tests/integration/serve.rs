//! The HTTP example serves one shared Answerer to concurrent clients.

use crate::common::*;
use crate::runtime::optimum_export;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn post(addr: &str, body: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /answer HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, json) = resp.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    serde_json::from_str(json).unwrap()
}

#[test]
fn http_example_answers_concurrent_requests() {
    // This test binary is <target>/<profile>/deps/integration-…; the examples are built beside
    // `deps` (wherever CARGO_TARGET_DIR puts the target directory).
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("serve");
    assert!(
        exe.exists(),
        "{} not built: run `cargo build --examples` before the tests (scripts/test.sh does)",
        exe.display()
    );
    let model = optimum_export("t5_v1_1");
    // What the library answers directly, to compare with.
    let answerer = cbqa::Answerer::load(&model, Default::default()).unwrap();
    let questions: Vec<String> = (0..8)
        .map(|i| format!("who was president of the united states in {}", 1900 + 7 * i))
        .collect();
    let want: Vec<String> = answerer
        .answer_batch(&questions.iter().map(String::as_str).collect::<Vec<_>>())
        .into_iter()
        .map(|a| a.unwrap().text)
        .collect();

    let mut child = Command::new(&exe)
        .arg(&model)
        .args(["--port", "0", "--workers", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let handles: Vec<_> = questions
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, q)| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                // one request with one question, and one with two (an empty one fails alone)
                let one = post(&addr, &serde_json::json!({ "questions": [q] }).to_string());
                let two = post(
                    &addr,
                    &serde_json::json!({ "questions": [q, "  "] }).to_string(),
                );
                (i, one, two)
            })
        })
        .collect();
    for h in handles {
        let (i, one, two) = h.join().unwrap();
        assert_eq!(one["answers"][0]["answer"], want[i], "question {i}");
        assert_eq!(two["answers"][0]["answer"], want[i], "question {i}");
        assert!(
            two["answers"][1]["error"]
                .as_str()
                .unwrap()
                .contains("empty question"),
            "{two}"
        );
    }
    // GET with a query string
    let mut s = TcpStream::connect(&addr).unwrap();
    let q = questions[0].replace(' ', "+");
    write!(s, "GET /answer?q={q} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.contains(&want[0]), "{resp}");
    child.kill().unwrap();
    let _ = child.wait();
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
