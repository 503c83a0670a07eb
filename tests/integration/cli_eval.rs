//! Issues 5 and 6 through the binary: predict, eval, score, and their bad inputs.

use crate::common::*;
use crate::runtime::optimum_export;
use std::io::Write;
use std::process::Stdio;

#[test]
fn predict_streams_stdin_and_reports_bad_lines() {
    let model = optimum_export("t5_v1_0");
    let mut child = cbqa()
        .args([
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"who wrote hamlet\n\xff\xfe not utf8\n\nwhen did the war end\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["question"], "who wrote hamlet");
    assert!(lines[0]["answer"].is_string() && lines[0]["candidates"].is_array());
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("stdin:2: invalid UTF-8"),
        "{stdout}"
    );
    assert_eq!(lines[2]["question"], "when did the war end");
    assert!(stderr.contains("stdin:3: empty line"), "{stderr}");
}

/// `cbqa predict ... | head -1`: when the reader goes away, cbqa ends like other Unix tools
/// (SIGPIPE), without a panic message.
#[test]
fn predict_ends_quietly_when_stdout_is_closed() {
    use std::os::unix::process::ExitStatusExt;
    let model = optimum_export("t5_v1_0");
    let mut child = cbqa()
        .args(["predict", "--model", model.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before anything is written
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"who wrote hamlet\nwhen did the war end\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}
