//! Unit tests of the readers on small inline files, mostly the bad cases.

use super::*;

fn read(name: &str, text: &str, opts: &ReadOptions) -> Result<Dataset, DataError> {
    Dataset::from_text(name, text, opts)
}

fn ok(name: &str, text: &str) -> Vec<QaExample> {
    match read(name, text, &ReadOptions::default()) {
        Ok(ds) => ds.examples,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn err(name: &str, text: &str) -> String {
    err_with(name, text, &ReadOptions::default())
}

fn err_with(name: &str, text: &str, opts: &ReadOptions) -> String {
    match read(name, text, opts) {
        Ok(ds) => panic!("{name}: expected an error, read {:?}", ds.examples),
        Err(e) => e.to_string(),
    }
}

fn ex(id: &str, q: &str, answers: &[&str]) -> QaExample {
    QaExample {
        id: id.to_string(),
        question: q.to_string(),
        answers: answers.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn jsonl_reads_nq_open_lines_and_ignores_extra_fields() {
    let text = "{\"question\": \"q1\", \"answer\": [\"a\", \"54\u{a0}Mbit/s\"]}\n\
                \n\
                {\"question\": \"q2\", \"answer\": [\"\"], \"def_correct_predictions\": []}\r\n";
    assert_eq!(
        ok("d.jsonl", text),
        [
            ex("0", "q1", &["a", "54\u{a0}Mbit/s"]),
            ex("1", "q2", &[""])
        ]
    );
}

#[test]
fn jsonl_answer_field_can_be_chosen() {
    let text = "{\"question\": \"q\", \"answer\": [\"a\"], \"answer_and_def_correct_predictions\": [\"a\", \"b\"]}\n";
    let opts = ReadOptions {
        answer_field: Some("answer_and_def_correct_predictions".into()),
        ..ReadOptions::default()
    };
    let ds = read("t.jsonl", text, &opts).map(|d| d.examples);
    assert_eq!(ds.ok(), Some(vec![ex("0", "q", &["a", "b"])]));
}

#[test]
fn jsonl_bad_records_name_file_line_and_problem() {
    let good = "{\"question\": \"q\", \"answer\": [\"a\"]}\n";
    let cases = [
        (
            "{\"question\": \"q\", \"answer\": 3}",
            "data.jsonl:2: field \"answer\" must be a list of strings, got number",
        ),
        (
            "{\"question\": \"q\", \"answer\": [\"a\", null]}",
            "data.jsonl:2: field \"answer\" must be a list of strings, but item 1 is a null",
        ),
        (
            "{\"question\": \"q\", \"answer\": []}",
            "data.jsonl:2: field \"answer\" is an empty list",
        ),
        (
            "{\"question\": \" \\u00a0\", \"answer\": [\"a\"]}",
            "data.jsonl:2: field \"question\" is empty",
        ),
        (
            "{\"question\": 5, \"answer\": [\"a\"]}",
            "data.jsonl:2: field \"question\" must be a string, got number",
        ),
        (
            "{\"q\": \"x\", \"answer\": [\"a\"]}",
            "data.jsonl:2: missing field \"question\" (fields present: q, answer)",
        ),
        ("[1, 2]", "data.jsonl:2: expected a JSON object, got list"),
        (
            "{\"question\": \"q\", \"answer\": [\"a\"",
            "data.jsonl:2: invalid JSON: EOF while parsing a list (column 32)",
        ),
        (
            "{\"question\": \"q\", \"answer\": [\"a\"], \"id\": [1]}",
            "data.jsonl:2: field \"id\" must be a string or number, got list",
        ),
    ];
    for (bad, want) in cases {
        let text = format!("{good}{bad}\n{good}");
        assert_eq!(err("data.jsonl", &text), want);
    }
}

#[test]
fn skip_bad_collects_warnings() {
    let text = "{\"question\": \"q\", \"answer\": [\"a\"]}\n\
                {\"question\": \"q\", \"answer\": 3}\n\
                not json\n\
                {\"question\": \"q3\", \"answer\": [\"c\"]}\n";
    let opts = ReadOptions {
        skip_bad: true,
        ..ReadOptions::default()
    };
    let ds = match read("d.jsonl", text, &opts) {
        Ok(ds) => ds,
        Err(e) => panic!("{e}"),
    };
    // Ids stay the record index, so skipping does not renumber the survivors.
    assert_eq!(ds.examples, [ex("0", "q", &["a"]), ex("3", "q3", &["c"])]);
    let warnings: Vec<String> = ds.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].starts_with("d.jsonl:2: field \"answer\""));
    assert!(warnings[1].starts_with("d.jsonl:3: invalid JSON"));
    // A file with nothing usable is still an error.
    let e = err_with("d.jsonl", "oops\n", &opts);
    assert_eq!(e, "d.jsonl: no examples found (1 bad records skipped)");
}

#[test]
fn training_policy_drops_blank_answers_and_rejects_answerless() {
    let text = "{\"question\": \"q\", \"answer\": [\"\", \"a\", \" \"]}\n\
                {\"question\": \"q2\", \"answer\": [\"\"]}\n";
    let e = err_with("t.jsonl", text, &ReadOptions::for_training());
    assert_eq!(
        e,
        "t.jsonl:2: field \"answer\" has only blank answers (rejected for training)"
    );
    let eval = ok("t.jsonl", text);
    assert_eq!(eval[1].answers, [""]);
    let opts = ReadOptions {
        skip_bad: true,
        ..ReadOptions::for_training()
    };
    let ds = read("t.jsonl", text, &opts).map(|d| d.examples);
    assert_eq!(ds.ok(), Some(vec![ex("0", "q", &["a"])]));
}

#[test]
fn dpr_tsv_quoting_and_python_lists() {
    let text = "who?\t['a', \"b's\"]\n\
                \"\"\"Q\"\" x\"\t\"['\"\"Thriller\"\"', 'S\\xe3o']\"\n";
    assert_eq!(
        ok("t.txt", text),
        [
            ex("0", "who?", &["a", "b's"]),
            ex("1", "\"Q\" x", &["\"Thriller\"", "São"])
        ]
    );
}

#[test]
fn dpr_tsv_bad_lines() {
    let good = "q\t['a']\n";
    let cases = [
        (
            "q\t['a'",
            "t.txt:2: column 2: invalid Python list literal: unterminated list: missing ']' at character 5",
        ),
        (
            "q\t['a', 3]",
            "t.txt:2: column 2: invalid Python list literal: expected a string literal, found '3' at character 7",
        ),
        ("q\t[]", "t.txt:2: column 2 (answers) is an empty list"),
        (
            "q",
            "t.txt:2: expected 2 tab-separated fields (question, answers), got 1",
        ),
        (
            "q\t['a']\tx",
            "t.txt:2: expected 2 tab-separated fields (question, answers), got 3",
        ),
        (
            "\"q\t['a']",
            "t.txt:2: field 1 has an unterminated quote (opened at character 1)",
        ),
        ("\t['a']", "t.txt:2: column 1 (question) is empty"),
    ];
    for (bad, want) in cases {
        let opts = ReadOptions {
            format: Some(DataFormat::DprTsv),
            ..ReadOptions::default()
        };
        assert_eq!(err_with("t.txt", &format!("{good}{bad}\n"), &opts), want);
    }
}

#[test]
fn json_array_uses_brmson_fields_and_reports_element_lines() {
    let text = "[\n {\"qId\": \"wqs000000\", \"answers\": [\"x\"], \"qText\": \"q?\"},\n \
                {\"qId\": \"wqs000001\", \"answers\": [], \"qText\": \"q2?\"}\n]\n";
    assert_eq!(
        err("test.json", text),
        "test.json:3: field \"answers\" is an empty list"
    );
    let text = "[\n {\"qId\": \"wqs000000\", \"answers\": [\"x\"], \"qText\": \"q?\"},\n \
                {\"qId\": 7, \"answers\": [\"y\"],\n \"qText\": 1}\n]\n";
    assert_eq!(
        err("test.json", text),
        "test.json:3: field \"qText\" must be a string, got number"
    );
    let text = "[\n {\"qId\": \"a\", \"answers\": [\"x\"], \"qText\": \"q?\"},\n {\"qId\": \"b\",\n \"answers\": [\"x\" \"y\"], \"qText\": \"q\"}\n]";
    assert!(err("test.json", text).starts_with("test.json:4: invalid JSON: expected `,` or `]`"));
    let text = "[\n {\"qId\": \"a\", \"answers\": [\"x\"], \"qText\": \"q?\"}\n";
    assert_eq!(
        err("test.json", text),
        "test.json:2: unterminated array: missing ']'"
    );
    let good = "[{\"qId\": \"wqr1\", \"answers\": [\"x\"], \"qText\": \"q?\"}]";
    assert_eq!(ok("val.json", good), [ex("wqr1", "q?", &["x"])]);
}

#[test]
fn generic_csv_and_tsv_with_columns_and_encodings() {
    let text =
        "id,q,ans\n7,\"who, really?\",\"[\"\"a\"\", \"\"b\"\"]\"\n8,what?,['c']\n9,why?,plain\n";
    let opts = ReadOptions {
        question_field: Some("q".into()),
        answer_field: Some("ans".into()),
        ..ReadOptions::default()
    };
    let ds = read("x.csv", text, &opts).map(|d| d.examples);
    assert_eq!(
        ds.ok(),
        Some(vec![
            ex("7", "who, really?", &["a", "b"]),
            ex("8", "what?", &["c"]),
            ex("9", "why?", &["plain"]),
        ])
    );
    let text = "question\tanswer\nq1\ta | b|c\n";
    let opts = ReadOptions {
        answer_encoding: AnswerEncoding::Separated('|'),
        ..ReadOptions::default()
    };
    let ds = read("x.tsv", text, &opts).map(|d| d.examples);
    assert_eq!(ds.ok(), Some(vec![ex("0", "q1", &["a", "b", "c"])]));
    let opts = ReadOptions {
        answer_encoding: AnswerEncoding::Single,
        ..ReadOptions::default()
    };
    let ds = read("x.tsv", "question\tanswer\nq\t[x]\n", &opts).map(|d| d.examples);
    assert_eq!(ds.ok(), Some(vec![ex("0", "q", &["[x]"])]));
}

#[test]
fn generic_csv_errors() {
    assert_eq!(
        err("x.csv", "question,answers\nq,a\n"),
        "x.csv:1: no column named \"answer\" in the header (columns: question, answers)"
    );
    assert_eq!(
        err("x.csv", "question,answer\nq,a\nq2,a,extra\n"),
        "x.csv:3: expected 2 fields like the header, got 3"
    );
    assert_eq!(
        err("x.csv", "question,answer\nq,\"[1, 2]\"\n"),
        "x.csv:2: column \"answer\": looks like a list but is neither a JSON list of strings nor \
         a Python list literal: expected a string literal, found '1' at character 2"
    );
    assert_eq!(
        err("x.csv", "question,answer\n,a\n"),
        "x.csv:2: column \"question\" is empty"
    );
    let opts = ReadOptions {
        id_field: Some("qid".into()),
        ..ReadOptions::default()
    };
    assert!(err_with("x.csv", "question,answer\nq,a\n", &opts).contains("no column named \"qid\""));
}

#[test]
fn format_detection_errors_and_override() {
    assert_eq!(
        err("notes.txt", "just text\n"),
        "notes.txt: cannot detect the data format (extension \"txt\" and a first line that is \
         neither JSON nor `question<TAB>['answer', ...]`); choose one explicitly"
    );
    let opts = ReadOptions {
        format: Some(DataFormat::Tsv),
        ..ReadOptions::default()
    };
    let ds = read("notes.txt", "question\tanswer\nq\ta\n", &opts).map(|d| d.examples);
    assert_eq!(ds.ok(), Some(vec![ex("0", "q", &["a"])]));
}

#[test]
fn io_and_utf8_errors() {
    let missing = Dataset::read("/nonexistent/cbqa/x.jsonl", &ReadOptions::default());
    assert!(matches!(missing, Err(DataError::Io { .. })));
    let dir = std::env::temp_dir().join(format!("cbqa-data-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("bad.jsonl");
    let good = b"{\"question\": \"q\", \"answer\": [\"a\"]}\n";
    let wrote = std::fs::write(&path, [&good[..], b"\xff\n"].concat());
    assert!(wrote.is_ok());
    let e = Dataset::read(&path, &ReadOptions::default())
        .err()
        .map(|e| e.to_string());
    let want = format!("{}:2: invalid UTF-8 at byte {}", path.display(), good.len());
    assert_eq!(e, Some(want));
    let _ = std::fs::remove_dir_all(&dir);
}
