//! The JSON of `POST /v1/answer`: the request as it is checked (every field named when it is
//! wrong), the answers, and the error body every failure gets.

use super::Limits;
use crate::answer::{Answer, Candidate};
use serde::Serialize;
use serde_json::{Map, Value};

/// A checked answer request.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRequest {
    pub questions: Vec<String>,
    /// `{"question": …}` (one answer object back) rather than `{"questions": […]}`.
    pub single: bool,
    pub beams: Option<usize>,
    /// Candidates wanted per question; each answer then carries them.
    pub candidates: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub prefix: Option<String>,
}

/// A failed request: the HTTP status, a stable kind for clients and metrics, the field at fault
/// (when one is), and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub field: Option<String>,
    pub message: String,
    /// Seconds a client should wait before retrying (`Retry-After`, with 429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 naming the field that is missing or wrong.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        ApiError {
            status: 400,
            kind: "invalid_field",
            message: format!("{field}: {}", message.into()),
            field: Some(field),
            retry_after: None,
        }
    }

    /// Any other failure.
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            field: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON body: `{"error": {"kind", "message", "field"?}}`.
    pub fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("kind".into(), self.kind.into());
        e.insert("message".into(), self.message.clone().into());
        if let Some(f) = &self.field {
            e.insert("field".into(), f.clone().into());
        }
        serde_json::json!({ "error": e })
    }
}

/// The fields a request may have.
const FIELDS: &[&str] = &[
    "question",
    "questions",
    "beams",
    "candidates",
    "max_new_tokens",
    "prefix",
];

/// Parse and check a request body against the server's limits.
pub fn parse_request(body: &[u8], limits: &Limits) -> Result<AnswerRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("body is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::field("body", "expected a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(
            unknown.as_str(),
            format!("unknown field (expected one of {})", FIELDS.join(", ")),
        ));
    }
    let (questions, single) = questions_of(&obj, limits)?;
    let beams = count(&obj, "beams", 1, limits.max_beams)?;
    let max_candidates = beams.unwrap_or(limits.max_beams);
    Ok(AnswerRequest {
        questions,
        single,
        beams,
        candidates: count(&obj, "candidates", 1, max_candidates)?,
        max_new_tokens: count(&obj, "max_new_tokens", 1, limits.max_new_tokens)?,
        prefix: match obj.get("prefix") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ApiError::field("prefix", "expected a string")),
        },
    })
}

/// `question` (a string) or `questions` (an array of 1 to `max_questions` strings), not both.
fn questions_of(
    obj: &Map<String, Value>,
    limits: &Limits,
) -> Result<(Vec<String>, bool), ApiError> {
    let text = |field: String, v: &Value| match v {
        Value::String(s) if s.trim().is_empty() => Err(ApiError::field(field, "empty question")),
        Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::field(field, "expected a string")),
    };
    match (obj.get("question"), obj.get("questions")) {
        (Some(_), Some(_)) => Err(ApiError::field(
            "questions",
            "give either \"question\" or \"questions\", not both",
        )),
        (Some(q), None) => Ok((vec![text("question".into(), q)?], true)),
        (None, Some(Value::Array(qs))) => {
            if qs.is_empty() || qs.len() > limits.max_questions {
                return Err(ApiError::field(
                    "questions",
                    format!(
                        "{} questions; between 1 and {} are allowed",
                        qs.len(),
                        limits.max_questions
                    ),
                ));
            }
            let qs = qs
                .iter()
                .enumerate()
                .map(|(i, q)| text(format!("questions[{i}]"), q));
            Ok((qs.collect::<Result<_, _>>()?, false))
        }
        (None, Some(_)) => Err(ApiError::field("questions", "expected an array of strings")),
        (None, None) => Err(ApiError::field(
            "question",
            "missing (send {\"question\": \"…\"} or {\"questions\": [\"…\"]})",
        )),
    }
}

/// An optional whole number between `min` and `max`.
fn count(
    obj: &Map<String, Value>,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, ApiError> {
    let v = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    match v.as_u64() {
        Some(n) if n >= min as u64 && n <= max as u64 => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::field(
            field,
            format!("{n}; must be between {min} and {max}"),
        )),
        None => Err(ApiError::field(
            field,
            format!("expected a whole number, got {v}"),
        )),
    }
}

/// One answer in a response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerBody {
    pub answer: String,
    pub score: f32,
    /// The question was longer than the model's input limit and was cut.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<Candidate>>,
}

impl AnswerBody {
    /// The response form of `a`, with its candidates when the request asked for them.
    pub fn new(a: Answer, with_candidates: bool) -> Self {
        AnswerBody {
            answer: a.text,
            score: a.score,
            truncated: a.truncated,
            candidates: with_candidates.then_some(a.candidates),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> Option<String> {
        parse_request(body.as_bytes(), &Limits::default())
            .unwrap_err()
            .field
    }

    #[test]
    fn every_wrong_field_is_named() {
        assert_eq!(field_of("{}").as_deref(), Some("question"));
        assert_eq!(field_of("[1]").as_deref(), Some("body"));
        assert_eq!(field_of(r#"{"question": 3}"#).as_deref(), Some("question"));
        assert_eq!(
            field_of(r#"{"questions": ["a", 2]}"#).as_deref(),
            Some("questions[1]")
        );
        assert_eq!(
            field_of(r#"{"questions": []}"#).as_deref(),
            Some("questions")
        );
        assert_eq!(
            field_of(r#"{"question": "a", "beams": 0}"#).as_deref(),
            Some("beams")
        );
        assert_eq!(
            field_of(r#"{"question": "a", "beams": "2"}"#).as_deref(),
            Some("beams")
        );
        assert_eq!(
            field_of(r#"{"question": "a", "beams": 2, "candidates": 3}"#).as_deref(),
            Some("candidates")
        );
        assert_eq!(
            field_of(r#"{"question": "a", "qestion": 1}"#).as_deref(),
            Some("qestion")
        );
        assert_eq!(
            field_of(r#"{"question": " "}"#).as_deref(),
            Some("question")
        );
        let err = parse_request(b"{", &Limits::default()).unwrap_err();
        assert_eq!((err.status, err.kind), (400, "invalid_json"));
    }

    #[test]
    fn a_good_request_keeps_its_settings() {
        let r = parse_request(
            br#"{"questions": ["a", "b"], "beams": 4, "candidates": 2, "prefix": "q: "}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.questions, ["a", "b"]);
        assert!(!r.single);
        assert_eq!(
            (r.beams, r.candidates, r.max_new_tokens),
            (Some(4), Some(2), None)
        );
        assert_eq!(r.prefix.as_deref(), Some("q: "));
    }
}
