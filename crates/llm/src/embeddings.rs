//! OpenAI Embeddings (`POST /v1/embeddings`): the request and the answer, typed, with the
//! input's size for an estimate when the upstream reports no usage.

use crate::error::{LlmError, field};
use crate::fields::{get, object, opt_count, opt_str, req_str};
use crate::tokens::text_weight;
use serde_json::{Map, Value, json};

/// What to embed: the four shapes the wire allows.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    /// One input already tokenized.
    Tokens(Vec<u32>),
    /// Several inputs already tokenized.
    TokenBatches(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// The input's weight in quarter tokens (see [`crate::tokens::text_weight`]); a token
    /// id weighs four, being one token.
    pub fn weight(&self) -> u64 {
        match self {
            EmbeddingInput::Text(s) => text_weight(s),
            EmbeddingInput::Texts(list) => list.iter().map(|s| text_weight(s)).sum(),
            EmbeddingInput::Tokens(t) => 4 * t.len() as u64,
            EmbeddingInput::TokenBatches(b) => b.iter().map(|t| 4 * t.len() as u64).sum(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            EmbeddingInput::Text(s) => json!(s),
            EmbeddingInput::Texts(l) => json!(l),
            EmbeddingInput::Tokens(t) => json!(t),
            EmbeddingInput::TokenBatches(b) => json!(b),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64`.
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
    pub user: Option<String>,
}

impl EmbeddingsRequest {
    /// Estimated input tokens: never zero, since the wire refuses empty inputs.
    pub fn estimate_tokens(&self) -> u64 {
        self.input.weight().div_ceil(4).max(1)
    }
}

fn token_ids(list: &[Value], at: &str) -> Result<Vec<u32>, LlmError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| field(format!("{at}[{i}]"), "expected a token id"))
        })
        .collect()
}

fn parse_input(v: Option<&Value>) -> Result<EmbeddingInput, LlmError> {
    const SHAPE: &str = "required: a string, an array of strings or an array of token ids";
    let list = match v {
        Some(Value::String(s)) if s.is_empty() => return Err(field("input", "must not be empty")),
        Some(Value::String(s)) => return Ok(EmbeddingInput::Text(s.clone())),
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(field("input", "must not be empty")),
        _ => return Err(field("input", SHAPE)),
    };
    // The first element decides the shape; the others must agree with it.
    match list.first() {
        Some(Value::String(_)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                Some("") => Err(field(format!("input[{i}]"), "must not be empty")),
                Some(s) => Ok(s.to_owned()),
                None => Err(field(format!("input[{i}]"), "expected a string")),
            })
            .collect::<Result<_, _>>()
            .map(EmbeddingInput::Texts),
        Some(Value::Number(_)) => token_ids(list, "input").map(EmbeddingInput::Tokens),
        Some(Value::Array(_)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_array() {
                Some(ids) if !ids.is_empty() => token_ids(ids, &format!("input[{i}]")),
                Some(_) => Err(field(format!("input[{i}]"), "must not be empty")),
                None => Err(field(
                    format!("input[{i}]"),
                    "expected an array of token ids",
                )),
            })
            .collect::<Result<_, _>>()
            .map(EmbeddingInput::TokenBatches),
        _ => Err(field("input[0]", "expected a string or a token id")),
    }
}

/// Parses a client's embeddings request.
pub fn parse_request(body: &Value) -> Result<EmbeddingsRequest, LlmError> {
    let obj = object(body, "body")?;
    let model = req_str(obj, "", "model")?;
    if model.is_empty() {
        return Err(field("model", "must not be empty"));
    }
    let input = parse_input(get(obj, "input"))?;
    let encoding_format = match opt_str(obj, "", "encoding_format")? {
        None => None,
        Some(f @ ("float" | "base64")) => Some(f.to_owned()),
        Some(other) => {
            return Err(field(
                "encoding_format",
                format!("expected \"float\" or \"base64\", not {other:?}"),
            ));
        }
    };
    Ok(EmbeddingsRequest {
        model: model.to_owned(),
        input,
        encoding_format,
        dimensions: opt_count(obj, "", "dimensions")?,
        user: opt_str(obj, "", "user")?.map(str::to_owned),
    })
}

/// Renders a request for an upstream.
pub fn render_request(req: &EmbeddingsRequest) -> Value {
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("input".into(), req.input.to_json());
    if let Some(f) = &req.encoding_format {
        out.insert("encoding_format".into(), json!(f));
    }
    if let Some(d) = req.dimensions {
        out.insert("dimensions".into(), json!(d));
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), json!(u));
    }
    Value::Object(out)
}

/// Checks a client's embeddings request; returns its model and the input's weight in
/// quarter tokens (characters for English), for an estimate of a quarter of it when the
/// upstream reports no usage.
pub fn check_request(body: &Value) -> Result<(String, u64), LlmError> {
    let req = parse_request(body)?;
    let weight = req.input.weight();
    Ok((req.model, weight))
}

/// One vector, as the client asked for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Vector {
    Floats(Vec<f64>),
    /// Little-endian f32s in base64 (`encoding_format: base64`), passed on untouched.
    Base64(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub index: u32,
    pub embedding: Vector,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsResponse {
    pub model: String,
    pub data: Vec<Embedding>,
    /// `usage.prompt_tokens`, when the upstream reported it.
    pub prompt_tokens: Option<u64>,
}

/// Parses an upstream's answer.
pub fn parse_response(body: &Value) -> Result<EmbeddingsResponse, LlmError> {
    let data = body["data"]
        .as_array()
        .ok_or_else(|| field("data", "required array"))?;
    let mut out = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let at = format!("data[{i}]");
        let embedding = match &d["embedding"] {
            Value::String(s) => Vector::Base64(s.clone()),
            Value::Array(values) => Vector::Floats(
                values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        v.as_f64().ok_or_else(|| {
                            field(format!("{at}.embedding[{j}]"), "expected a number")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(field(
                    format!("{at}.embedding"),
                    "expected an array or base64",
                ));
            }
        };
        out.push(Embedding {
            // Without an index the position says it.
            index: d["index"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)),
            embedding,
        });
    }
    Ok(EmbeddingsResponse {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        data: out,
        prompt_tokens: usage(body),
    })
}

/// Renders an answer for a client. `prompt_tokens` is the charged count (reported or
/// estimated): the usage block is required by the wire.
pub fn render_response(resp: &EmbeddingsResponse, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = resp
        .data
        .iter()
        .map(|e| {
            let v = match &e.embedding {
                Vector::Floats(f) => json!(f),
                Vector::Base64(s) => json!(s),
            };
            json!({"object": "embedding", "index": e.index, "embedding": v})
        })
        .collect();
    json!({"object": "list", "data": data, "model": resp.model,
           "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

/// The input tokens an upstream reported.
pub fn usage(answer: &Value) -> Option<u64> {
    answer["usage"]["prompt_tokens"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_shape() {
        let parse = |input: Value| parse_request(&json!({"model": "m", "input": input}));
        assert_eq!(
            parse(json!("hi")).unwrap().input,
            EmbeddingInput::Text("hi".into())
        );
        assert_eq!(
            parse(json!(["a", "b"])).unwrap().input,
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse(json!([1, 2, 3])).unwrap().input,
            EmbeddingInput::Tokens(vec![1, 2, 3])
        );
        assert_eq!(
            parse(json!([[1], [2, 3]])).unwrap().input,
            EmbeddingInput::TokenBatches(vec![vec![1], vec![2, 3]])
        );
        let err = |input: Value| match parse(input) {
            Err(LlmError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(json!("")), "input");
        assert_eq!(err(json!([])), "input");
        assert_eq!(err(json!(5)), "input");
        assert_eq!(err(json!(["a", 1])), "input[1]");
        assert_eq!(err(json!([1, "a"])), "input[1]");
        assert_eq!(err(json!([1, -1])), "input[1]");
        assert_eq!(err(json!([[1], []])), "input[1]");
        assert_eq!(err(json!([[1], [2, "x"]])), "input[1][1]");
        assert_eq!(err(json!([{}])), "input[0]");
        assert!(matches!(
            parse_request(&json!({"input": "x"})),
            Err(LlmError::Field { field, .. }) if field == "model"
        ));
        assert!(matches!(
            parse_request(&json!({"model": "m", "input": "x", "encoding_format": "hex"})),
            Err(LlmError::Field { field, .. }) if field == "encoding_format"
        ));
    }

    #[test]
    fn requests_round_trip_and_weigh() {
        let body = json!({"model": "openai/text-embedding-3-small", "input": ["hello", "world!"],
                          "encoding_format": "float", "dimensions": 256, "user": "u1"});
        let req = parse_request(&body).unwrap();
        assert_eq!(render_request(&req), body);
        assert_eq!(req.estimate_tokens(), 3);
        assert_eq!(
            check_request(&body).unwrap(),
            ("openai/text-embedding-3-small".to_owned(), 11)
        );
        let tokens = parse_request(&json!({"model": "m", "input": [[1, 2], [3]]})).unwrap();
        assert_eq!(tokens.estimate_tokens(), 3);
    }

    #[test]
    fn responses_round_trip() {
        let body = json!({"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -1.5]},
                     {"object": "embedding", "index": 1, "embedding": "AACAPg=="}],
            "usage": {"prompt_tokens": 7, "total_tokens": 7}});
        let resp = parse_response(&body).unwrap();
        assert_eq!(resp.prompt_tokens, Some(7));
        assert_eq!(resp.data[1].embedding, Vector::Base64("AACAPg==".into()));
        assert_eq!(render_response(&resp, 7), body);
        assert!(matches!(
            parse_response(&json!({"data": [{"embedding": [1, "x"]}]})),
            Err(LlmError::Field { field, .. }) if field == "data[0].embedding[1]"
        ));
    }
}
