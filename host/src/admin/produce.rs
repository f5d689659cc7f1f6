//! `POST /v1/topics/{topic}/records`: HTTP produce.
//!
//! JSON body: `{"records": [{"key": …, "value": …, "headers": {"name": …}, "partition":
//! n, "timestamp": ms}]}` (headers may also be a list of `[name, value]` pairs, each
//! name once) where each key, value and header value is a string (UTF-8), a
//! `{"base64": "…"}` object, or null; with `?encoding=base64` plain strings are base64.
//! Any other content type is one record whose value is the body (`?key=` and
//! `?partition=` optional; with a JSON body they are refused, as each JSON record
//! carries its own `key` and `partition`). `?acks=0` answers 202 once the request is accepted;
//! `acks=1` and `acks=all` (the default) answer with each record's partition and offset.
//! Records without a partition go to the topic's partitioner.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use super::body::RawBody;
use super::{blocking, AdminState, ApiError};
use crate::broker::produce::{self, NewRecord, ProduceError};

/// Most records one request may carry.
const MAX_RECORDS: usize = 100_000;

fn produce_error(e: ProduceError) -> ApiError {
    let (status, code) = match &e {
        ProduceError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
        ProduceError::UnknownPartition { .. } => (StatusCode::BAD_REQUEST, "unknown_partition"),
        ProduceError::Partitioner { .. } => (StatusCode::SERVICE_UNAVAILABLE, "partitioner_failed"),
        ProduceError::NotLeader { .. } => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
        ProduceError::Append { source, .. } => match source {
            crate::partition::AppendError::Storage(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
            }
            crate::partition::AppendError::TooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_record"),
        },
    };
    ApiError::new(status, code, e.to_string())
}

#[derive(Clone, Copy)]
enum Encoding {
    String,
    Base64,
}

fn bytes_field(
    value: Option<&Value>,
    encoding: Encoding,
    what: &str,
) -> Result<Option<bytes::Bytes>, ApiError> {
    let decode = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("{what} is not valid base64: {e}")))
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match encoding {
            Encoding::String => Ok(Some(bytes::Bytes::from(s.clone()))),
            Encoding::Base64 => decode(s).map(Some),
        },
        Some(Value::Object(o)) if o.len() == 1 && o.get("base64").is_some_and(Value::is_string) => {
            decode(o["base64"].as_str().expect("checked")).map(Some)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "{what} must be a string, {{\"base64\": \"…\"}} or null, not {other}"
        ))),
    }
}

fn parse_records(body: &[u8], encoding: Encoding) -> Result<Vec<NewRecord>, ApiError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let list = doc
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::bad_request("the body must be an object with a \"records\" array")
        })?;
    if list.is_empty() {
        return Err(ApiError::bad_request("\"records\" is empty"));
    }
    if list.len() > MAX_RECORDS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_RECORDS} records per request, not {}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let obj = r
                .as_object()
                .ok_or_else(|| ApiError::bad_request(format!("records[{i}] is not an object")))?;
            for field in obj.keys() {
                if !["key", "value", "headers", "partition", "timestamp"].contains(&field.as_str())
                {
                    return Err(ApiError::bad_request(format!(
                        "records[{i}] has an unknown field \"{field}\""
                    )));
                }
            }
            let headers = match obj.get("headers") {
                None | Some(Value::Null) => Vec::new(),
                // An object keeps its order (serde_json's preserve_order); a list of
                // [name, value] pairs is accepted too.
                Some(Value::Object(h)) => h
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            bytes_field(Some(v), encoding, &format!("records[{i}].headers.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, ApiError>>()?,
                Some(Value::Array(pairs)) => pairs
                    .iter()
                    .enumerate()
                    .map(|(j, pair)| match pair.as_array().map(Vec::as_slice) {
                        Some([Value::String(k), v]) => Ok((
                            k.clone(),
                            bytes_field(Some(v), encoding, &format!("records[{i}].headers[{j}]"))?,
                        )),
                        _ => Err(ApiError::bad_request(format!(
                            "records[{i}].headers[{j}] must be a [name, value] pair"
                        ))),
                    })
                    .collect::<Result<_, ApiError>>()?,
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "records[{i}].headers must be an object or a list of [name, value] pairs"
                    )))
                }
            };
            let headers: Vec<(String, Option<bytes::Bytes>)> = headers;
            if let Some(dup) = headers
                .iter()
                .enumerate()
                .find(|(j, (k, _))| headers[..*j].iter().any(|(earlier, _)| earlier == k))
            {
                // The record encoder keeps one value per header name; refusing is better
                // than silently dropping one.
                return Err(ApiError::bad_request(format!(
                    "records[{i}] has header \"{}\" more than once; give each name once",
                    (dup.1).0
                )));
            }
            let int = |name: &str| -> Result<Option<i64>, ApiError> {
                match obj.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                        ApiError::bad_request(format!("records[{i}].{name} must be an integer"))
                    }),
                }
            };
            let partition = int("partition")?
                .map(|p| {
                    i32::try_from(p).map_err(|_| {
                        ApiError::bad_request(format!("records[{i}].partition is out of range"))
                    })
                })
                .transpose()?;
            Ok(NewRecord {
                key: bytes_field(obj.get("key"), encoding, &format!("records[{i}].key"))?,
                value: bytes_field(obj.get("value"), encoding, &format!("records[{i}].value"))?,
                headers,
                partition,
                timestamp: int("timestamp")?,
            })
        })
        .collect()
}

/// `POST /v1/topics/{topic}/records`
pub(super) async fn produce(
    State(state): State<AdminState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut acks = -1i8;
    let mut encoding = Encoding::String;
    let mut key = None;
    let mut partition = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "acks" => {
                acks = match v.as_ref() {
                    "0" => 0,
                    "1" => 1,
                    "all" | "-1" => -1,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "acks must be 0, 1 or all, not '{other}'"
                        )))
                    }
                }
            }
            "encoding" => {
                encoding = match v.as_ref() {
                    "string" => Encoding::String,
                    "base64" => Encoding::Base64,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "encoding must be string or base64, not '{other}'"
                        )))
                    }
                }
            }
            "key" => key = Some(bytes::Bytes::from(v.into_owned())),
            "partition" => {
                partition = Some(v.parse::<i32>().map_err(|_| {
                    ApiError::bad_request(format!("partition must be an integer, not '{v}'"))
                })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{other}'"
                )))
            }
        }
    }
    let json_body = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let records = if json_body {
        // Ignoring them would put the records somewhere other than asked.
        let raw_only: Vec<&str> = [("key", key.is_some()), ("partition", partition.is_some())]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect();
        if !raw_only.is_empty() {
            let verb = if raw_only.len() == 1 {
                "applies"
            } else {
                "apply"
            };
            return Err(ApiError::bad_request(format!(
                "?{} {verb} only to a raw body (one record; any content type but \
                 application/json); in a JSON body each record carries its own \"key\" and \
                 \"partition\"",
                raw_only.join(" and ?")
            )));
        }
        parse_records(&body, encoding)?
    } else {
        vec![NewRecord {
            key,
            value: Some(bytes::Bytes::from(body.to_vec())),
            partition,
            ..NewRecord::default()
        }]
    };
    let count = records.len();
    let broker = state.broker.clone();
    let plugins = state.plugins.clone();
    let work = move || produce::produce(&broker, &plugins, &topic, records);
    if acks == 0 {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = work() {
                tracing::warn!(error = %e, "HTTP produce with acks=0 failed");
            }
        });
        return Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": count }))));
    }
    let placements = blocking(work).await?.map_err(produce_error)?;
    Ok((StatusCode::OK, Json(json!({ "offsets": placements }))))
}
