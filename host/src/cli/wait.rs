//! `--wait` of `transform deploy` and `mirror create`: poll the admin API until the new
//! transform or mirror has caught up with its input, with a progress bar on a terminal.
//!
//! Catching up is judged from the same JSON `describe` prints, so what `--wait` waits
//! for is what an operator would check by hand. A state that will not get better by
//! waiting (a failed transform, a mirror that runs on another broker) ends the wait
//! with an error instead of running into the timeout.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::call;
use super::output::Steps;
use super::Admin;

/// What one look at the thing being waited for says.
#[derive(Debug, PartialEq)]
pub(crate) enum Look {
    /// Caught up.
    Done,
    /// Still going: records done so far and records left.
    Behind { done: u64, left: u64 },
    /// Waiting will not help: why, and what to do.
    Stuck { why: String, hint: String },
}

/// How often the admin API is asked.
const POLL: Duration = Duration::from_millis(500);

/// How long a new mirror or transform may show nothing running on the broker asked
/// before the wait concludes it runs elsewhere: right after it is made, the broker that
/// will run it may not have started it yet.
const ELSEWHERE_GRACE: Duration = Duration::from_secs(10);

/// Polls `path` until `look` says done; returns the last answer.
pub(crate) async fn wait_for(
    admin: &Admin,
    path: &str,
    what: &str,
    timeout: Duration,
    look: impl Fn(&Value, Duration) -> Look,
) -> anyhow::Result<Value> {
    let bar = admin
        .out
        .progress(Steps::Count(0), &format!("waiting for {what}"));
    let start = Instant::now();
    let result = loop {
        let v = call(&admin.admin, "GET", path, None).await?;
        match look(&v, start.elapsed()) {
            Look::Done => break Ok(v),
            Look::Behind { done, left } => {
                bar.set_length(done + left);
                bar.set_position(done);
            }
            Look::Stuck { why, hint } => break Err(super::hinted(why, hint)),
        }
        if start.elapsed() >= timeout {
            break Err(super::hinted(
                format!("{what} has not caught up after {} s", timeout.as_secs()),
                "it keeps running: follow it with `describe`, or wait longer with --wait-timeout",
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    result
}

/// A transform's `describe`: caught up when every partition runs with no lag.
pub(crate) fn transform_look(v: &Value, waited: Duration) -> Look {
    let name = v["name"].as_str().unwrap_or("?");
    match v["status"].as_str() {
        Some(status @ ("failed" | "stopped")) => {
            let reason = v["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|p| p["reason"].as_str().or(p["last_error"].as_str()))
                .unwrap_or("no reason given");
            return Look::Stuck {
                why: format!("transform '{name}' is {status}: {reason}"),
                hint: format!(
                    "`quiver transform describe {name}` shows each partition; fix the cause, then `quiver transform resume {name}`"
                ),
            };
        }
        Some("paused") => {
            return Look::Stuck {
                why: format!("transform '{name}' is paused"),
                hint: format!("`quiver transform resume {name}` starts it again"),
            }
        }
        _ => {}
    }
    let partitions = v["partitions"].as_array().map_or(0, Vec::len);
    if partitions == 0 && waited >= ELSEWHERE_GRACE {
        // A broker reports the partitions it leads; this one leads none of the input's.
        return Look::Stuck {
            why: format!(
                "broker {} runs none of transform '{name}''s partitions",
                super::output::cell(&v["broker"])
            ),
            hint: format!(
                "ask the brokers that lead its input's partitions: `quiver transform describe {name} --admin HOST:PORT`"
            ),
        };
    }
    let lag = v["lag"].as_i64().unwrap_or(0).max(0) as u64;
    let done = v["records_in"].as_u64().unwrap_or(0);
    if partitions > 0 && lag == 0 && v["status"] == "running" {
        Look::Done
    } else {
        Look::Behind { done, left: lag }
    }
}

/// A mirror's `describe`: caught up when it copies at least one topic and nothing is
/// behind.
pub(crate) fn mirror_look(v: &Value, waited: Duration) -> Look {
    let name = v["name"].as_str().unwrap_or("?");
    match v["status"].as_str() {
        Some("elsewhere") if waited >= ELSEWHERE_GRACE => {
            return Look::Stuck {
                why: format!(
                    "mirror '{name}' runs on broker {}, not the one asked",
                    super::output::cell(&v["runs_on"])
                ),
                hint: "ask that broker's admin API with --admin HOST:PORT".into(),
            }
        }
        Some("paused") => {
            return Look::Stuck {
                why: format!("mirror '{name}' is paused"),
                hint: format!("`quiver mirror resume {name}` starts it again"),
            }
        }
        _ => {}
    }
    let report = &v["report"];
    let topics = report["topics"].as_object().map_or(0, |t| t.len());
    let behind = v["behind"].as_i64().unwrap_or(0).max(0) as u64;
    let done = report["records"].as_u64().unwrap_or(0);
    if v["status"] == "running" && topics > 0 && behind == 0 {
        Look::Done
    } else {
        Look::Behind { done, left: behind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transform_is_done_when_running_without_lag() {
        let mut v = json!({"name": "t", "status": "running", "lag": 5, "records_in": 10,
                           "partitions": [{"partition": 0}]});
        assert_eq!(
            transform_look(&v, Duration::ZERO),
            Look::Behind { done: 10, left: 5 }
        );
        v["lag"] = json!(0);
        assert_eq!(transform_look(&v, Duration::ZERO), Look::Done);
        v["partitions"] = json!([]);
        assert_eq!(
            transform_look(&v, Duration::ZERO),
            Look::Behind { done: 10, left: 0 }
        );
        assert!(matches!(
            transform_look(&v, ELSEWHERE_GRACE),
            Look::Stuck { .. }
        ));
        v["status"] = json!("failed");
        v["partitions"] = json!([{"partition": 0, "reason": "trap at offset 3"}]);
        let Look::Stuck { why, hint } = transform_look(&v, Duration::ZERO) else {
            panic!("a failed transform is stuck")
        };
        assert_eq!(why, "transform 't' is failed: trap at offset 3");
        assert!(hint.contains("quiver transform resume t"), "{hint}");
    }

    #[test]
    fn a_mirror_is_done_when_nothing_is_behind() {
        let mut v = json!({"name": "m", "status": "starting", "behind": 0, "report": null});
        let look = |v: &Value| mirror_look(v, Duration::ZERO);
        assert_eq!(look(&v), Look::Behind { done: 0, left: 0 });
        v["status"] = json!("running");
        v["report"] = json!({"records": 40, "topics": {"orders": {}}});
        v["behind"] = json!(2);
        assert_eq!(look(&v), Look::Behind { done: 40, left: 2 });
        v["behind"] = json!(0);
        assert_eq!(look(&v), Look::Done);
        // Not yet started where it was asked: keep waiting, for a while.
        v["status"] = json!("elsewhere");
        v["runs_on"] = json!(3);
        v["report"] = Value::Null;
        assert_eq!(look(&v), Look::Behind { done: 0, left: 0 });
        let Look::Stuck { why, .. } = mirror_look(&v, ELSEWHERE_GRACE) else {
            panic!("a mirror elsewhere cannot be waited for here")
        };
        assert_eq!(why, "mirror 'm' runs on broker 3, not the one asked");
    }
}
