//! The bad-input corpus: each malformed or over-limit request gets the right 4xx and a JSON
//! error naming the field (or header) and, where there is one, the limit; the server keeps
//! serving after every case.

mod common;

use common::*;
use guardreasoner_server::{ApiKeys, ServerConfig};
use serde_json::json;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    auth: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// The `error.param` the answer must name.
    param: Option<&'static str>,
    /// Text the error message must contain (the limit, the expected type...).
    says: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    param: Option<&'static str>,
    says: &'static str,
) -> Case {
    Case {
        name,
        method: "POST",
        path,
        content_type: Some("application/json"),
        auth: Some("Bearer k"),
        body: body.into(),
        status,
        param,
        says,
    }
}

fn corpus() -> Vec<Case> {
    let huge_prompt = json!({"prompt": "a".repeat(1 << 20)}).to_string();
    let huge_body = format!("{{\"prompt\": \"{}\"}}", "b".repeat(3 << 20));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let g = "/v1/guard";
    let mut cases = vec![
        case(
            "malformed JSON",
            g,
            r#"{"prompt": "hi""#,
            400,
            Some("body"),
            "not valid JSON",
        ),
        case(
            "trailing garbage",
            g,
            r#"{"prompt": "hi"} x"#,
            400,
            Some("body"),
            "not valid JSON",
        ),
        case("empty body", g, "", 400, Some("body"), "empty"),
        case("whitespace body", g, "  \n ", 400, Some("body"), "empty"),
        case(
            "JSON array body",
            g,
            r#"["hi"]"#,
            400,
            Some("body"),
            "JSON object",
        ),
        case(
            "JSON string body",
            g,
            r#""hi""#,
            400,
            Some("body"),
            "JSON object",
        ),
        case(
            "deeply nested JSON",
            g,
            deep,
            400,
            Some("body"),
            "not valid JSON",
        ),
        case(
            "invalid UTF-8",
            g,
            b"{\"prompt\": \"\xff\xfe\"}".to_vec(),
            400,
            Some("body"),
            "UTF-8",
        ),
        case(
            "missing prompt",
            g,
            r#"{"response": "x"}"#,
            400,
            Some("prompt"),
            "required",
        ),
        case(
            "null prompt",
            g,
            r#"{"prompt": null}"#,
            400,
            Some("prompt"),
            "required",
        ),
        case(
            "prompt is a number",
            g,
            r#"{"prompt": 42}"#,
            400,
            Some("prompt"),
            "a string",
        ),
        case(
            "prompt is an array",
            g,
            r#"{"prompt": ["a"]}"#,
            400,
            Some("prompt"),
            "a string",
        ),
        case(
            "empty prompt",
            g,
            r#"{"prompt": ""}"#,
            400,
            Some("prompt"),
            "empty",
        ),
        case(
            "blank prompt",
            g,
            r#"{"prompt": "  \n"}"#,
            400,
            Some("prompt"),
            "empty",
        ),
        case(
            "NUL in prompt",
            g,
            r#"{"prompt": "a\u0000b"}"#,
            400,
            Some("prompt"),
            "NUL",
        ),
        case(
            "NUL in response",
            g,
            r#"{"prompt": "a", "response": "\u0000"}"#,
            400,
            Some("response"),
            "NUL",
        ),
        case(
            "response is an object",
            g,
            r#"{"prompt": "a", "response": {}}"#,
            400,
            Some("response"),
            "a string",
        ),
        case(
            "unknown field",
            g,
            r#"{"prompt": "a", "temperature": 1}"#,
            400,
            Some("temperature"),
            "prompt, response, max_new_tokens",
        ),
        case(
            "max_new_tokens zero",
            g,
            r#"{"prompt": "a", "max_new_tokens": 0}"#,
            400,
            Some("max_new_tokens"),
            "1..=2048",
        ),
        case(
            "max_new_tokens over cap",
            g,
            r#"{"prompt": "a", "max_new_tokens": 5000}"#,
            400,
            Some("max_new_tokens"),
            "--max-new-tokens-cap",
        ),
        case(
            "max_new_tokens negative",
            g,
            r#"{"prompt": "a", "max_new_tokens": -1}"#,
            400,
            Some("max_new_tokens"),
            "non-negative integer",
        ),
        case(
            "max_new_tokens fractional",
            g,
            r#"{"prompt": "a", "max_new_tokens": 1.5}"#,
            400,
            Some("max_new_tokens"),
            "non-negative integer",
        ),
        case(
            "stream not a bool",
            g,
            r#"{"prompt": "a", "stream": "yes"}"#,
            400,
            Some("stream"),
            "true or false",
        ),
        case(
            "bad stream query",
            "/v1/guard?stream=maybe",
            r#"{"prompt": "a"}"#,
            400,
            Some("stream"),
            "not true or false",
        ),
        case(
            "unknown query parameter",
            "/v1/guard?debug=1",
            r#"{"prompt": "a"}"#,
            400,
            Some("debug"),
            "unknown query parameter",
        ),
        case(
            "1 MB prompt",
            g,
            huge_prompt,
            413,
            Some("prompt"),
            "the limit is 32768",
        ),
        case(
            "3 MB body",
            g,
            huge_body,
            413,
            Some("body"),
            "2097152 bytes",
        ),
        case(
            "moderation input missing",
            "/v1/moderations",
            r#"{}"#,
            400,
            Some("input"),
            "required",
        ),
        case(
            "moderation input empty array",
            "/v1/moderations",
            r#"{"input": []}"#,
            400,
            Some("input"),
            "empty",
        ),
        case(
            "moderation mixed array",
            "/v1/moderations",
            r#"{"input": ["a", 1]}"#,
            400,
            Some("input[1]"),
            "a string",
        ),
        case(
            "moderation image part",
            "/v1/moderations",
            r#"{"input": [{"type": "image_url", "image_url": {}}]}"#,
            400,
            Some("input[0].type"),
            "not supported",
        ),
        case(
            "moderation too many inputs",
            "/v1/moderations",
            json!({"input": vec!["a"; 40]}).to_string(),
            400,
            Some("input"),
            "32 items",
        ),
        case(
            "completion prompt missing",
            "/v1/completions",
            r#"{"model": "m"}"#,
            400,
            Some("prompt"),
            "required",
        ),
        case(
            "completion n > 1",
            "/v1/completions",
            r#"{"prompt": "a", "n": 2}"#,
            400,
            Some("n"),
            "limit is 1",
        ),
        case(
            "completion temperature out of range",
            "/v1/completions",
            r#"{"prompt": "a", "temperature": 9}"#,
            400,
            Some("temperature"),
            "0..=2",
        ),
        case(
            "completion stop sequences",
            "/v1/completions",
            r#"{"prompt": "a", "stop": ["\n"]}"#,
            400,
            Some("stop"),
            "not supported",
        ),
        case(
            "completion batched prompts",
            "/v1/completions",
            r#"{"prompt": ["a", "b"]}"#,
            400,
            Some("prompt"),
            "exactly one string",
        ),
        case(
            "chat proxy not configured",
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            404,
            None,
            "--upstream",
        ),
    ];
    cases.push(Case {
        content_type: None,
        ..case(
            "missing content type",
            g,
            r#"{"prompt": "a"}"#,
            415,
            Some("Content-Type"),
            "application/json",
        )
    });
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case(
            "wrong content type",
            g,
            r#"{"prompt": "a"}"#,
            415,
            Some("Content-Type"),
            "text/plain",
        )
    });
    cases.push(Case {
        content_type: Some("application/x-www-form-urlencoded"),
        ..case(
            "form body",
            g,
            "prompt=a",
            415,
            Some("Content-Type"),
            "application/json",
        )
    });
    cases.push(Case {
        auth: None,
        ..case(
            "missing API key",
            g,
            r#"{"prompt": "a"}"#,
            401,
            Some("Authorization"),
            "missing API key",
        )
    });
    cases.push(Case {
        auth: Some("Bearer wrong"),
        ..case(
            "wrong API key",
            g,
            r#"{"prompt": "a"}"#,
            401,
            Some("Authorization"),
            "invalid API key",
        )
    });
    cases.push(Case {
        auth: Some("k"),
        ..case(
            "key without Bearer",
            g,
            r#"{"prompt": "a"}"#,
            401,
            Some("Authorization"),
            "Bearer KEY",
        )
    });
    cases.push(Case {
        method: "GET",
        ..case(
            "GET on a POST route",
            g,
            "",
            405,
            None,
            "GET is not allowed",
        )
    });
    cases.push(Case {
        ..case(
            "unknown route",
            "/v1/nope",
            "{}",
            404,
            None,
            "no route for POST /v1/nope",
        )
    });
    cases
}

#[test]
fn every_bad_request_gets_a_named_4xx_and_the_server_keeps_serving() {
    let config = ServerConfig {
        api_keys: ApiKeys::from_list("k"),
        ..ServerConfig::default()
    };
    let server = TestServer::scripted(config, &[UNHARMFUL]);
    let cases = corpus();
    assert!(cases.len() >= 30);
    let agent = agent();
    for c in &cases {
        let mut headers = Vec::new();
        if let Some(ct) = c.content_type {
            headers.push(("Content-Type", ct));
        }
        if let Some(a) = c.auth {
            headers.push(("Authorization", a));
        }
        let body = (c.method == "POST").then_some(c.body.as_slice());
        let r = if c.body.len() > 2 << 20 {
            // Refused by its Content-Length before the body is read: send the head only.
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n",
                c.path,
                c.body.len()
            );
            head_only(server.addr, &head)
        } else {
            send_with(&agent, &server.url(c.path), c.method, &headers, body)
        };
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.body);
        let v = r.json();
        let error = &v["error"];
        let message = error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no message", c.name));
        assert!(
            message.contains(c.says),
            "{}: {message:?} does not say {:?}",
            c.name,
            c.says
        );
        if let Some(param) = c.param {
            assert_eq!(error["param"], param, "{}: {v}", c.name);
        }
        assert!(error["code"].is_string(), "{}", c.name);
        // The server is still fine after every case.
        let ok = send_with(
            &agent,
            &server.url("/v1/guard"),
            "POST",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer k"),
            ],
            Some(br#"{"prompt": "hi"}"#),
        );
        assert_eq!(ok.status, 200, "after {}: {}", c.name, ok.body);
    }
    assert_eq!(server.get("/readyz").status, 200);
}

#[test]
fn limits_are_reported_as_numbers_too() {
    let server = TestServer::scripted(ServerConfig::default(), &[UNHARMFUL]);
    let r = server.post("/v1/guard", &json!({"prompt": "a".repeat(40_000)}));
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["limit"], 32768);
    assert_eq!(r.json()["error"]["code"], "input_too_long");
}
