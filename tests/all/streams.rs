//! Event-sourced stream stores through the real binary: appends with expected revisions, the
//! conflict race, idempotent retries, multi-stream appends, deletes, reads and the catch-up
//! subscription.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, call_json, weir};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
max_message_size = "4KiB"

[streams.orders]

[queues.jobs]
"#;

fn append(s: &Server, stream: &str, body: Value) -> (u16, Value) {
    s.post(
        &format!("/v1/streams/orders/streams/{stream}"),
        body.to_string().as_bytes(),
        &[("content-type", "application/json")],
    )
}

fn event(ty: &str, id: &str) -> Value {
    json!({ "type": ty, "id": id, "data": { "n": id } })
}

fn read(s: &Server, stream: &str, query: &str) -> (u16, Value) {
    s.get(&format!("/v1/streams/orders/streams/{stream}?{query}"))
}

fn revisions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect()
}

#[test]
fn expected_revisions_are_checked_and_conflicts_name_the_actual_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG);
    let (status, body) = append(
        &s,
        "order-1",
        json!({ "expected_revision": "no-stream", "events": [event("OrderPlaced", "a"), event("ItemAdded", "b")] }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["first_revision"].as_u64(),
            body["last_revision"].as_u64()
        ),
        (Some(0), Some(1))
    );
    let conflicts = [json!("no-stream"), json!(0), json!(2)];
    for expected in conflicts {
        let (status, body) = append(
            &s,
            "order-1",
            json!({ "expected_revision": expected, "events": [event("X", "c")] }),
        );
        assert_eq!(status, 409, "{expected}: {body}");
        assert_eq!(body["error"]["code"], "wrong_expected_revision");
        assert_eq!(body["error"]["actual_revision"], 1);
    }
    let (status, body) = append(
        &s,
        "order-2",
        json!({ "expected_revision": "stream-exists", "events": [event("X", "d")] }),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["actual_revision"], Value::Null);
    for (i, expected) in [json!(1), json!("stream-exists"), json!("any")]
        .into_iter()
        .enumerate()
    {
        let (status, body) = append(
            &s,
            "order-1",
            json!({ "expected_revision": expected, "events": [event("ItemAdded", &format!("ok{i}"))] }),
        );
        assert_eq!(status, 201, "{expected}: {body}");
    }
    let (status, page) = read(&s, "order-1", "");
    assert_eq!(status, 200, "{page}");
    assert_eq!(revisions(&page), vec![0, 1, 2, 3, 4]);
    assert_eq!(page["events"][0]["data"], json!({ "n": "a" }));
    assert_eq!(page["events"][0]["type"], "OrderPlaced");

    // Bad input is refused with a clear error and stores nothing.
    let bad: Vec<(String, Value, u16, &str)> = vec![
        (
            "/v1/streams/nope/streams/order-1".into(),
            json!({ "events": [event("X", "z1")] }),
            404,
            "unknown_stream_store",
        ),
        (
            "/v1/streams/orders/streams/$bad".into(),
            json!({ "events": [event("X", "z2")] }),
            400,
            "invalid_name",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "expected_revision": "exactly", "events": [event("X", "z3")] }),
            400,
            "invalid_expected_revision",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "events": [{ "type": "X", "payload": "x".repeat(5000) }] }),
            413,
            "payload_too_large",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "events": [{ "type": "X", "headers": [["weir-es-revision", "0"]] }] }),
            400,
            "invalid_request",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "events": [{ "type": "bad type" }] }),
            400,
            "invalid_name",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "events": [] }),
            400,
            "invalid_request",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "events": [event("X", "same"), event("X", "same")] }),
            400,
            "invalid_request",
        ),
        (
            "/v1/streams/orders/streams/order-1".into(),
            json!({ "evnts": [] }),
            400,
            "invalid_json",
        ),
    ];
    for (path, body, status, code) in bad {
        let (got, answer) = s.post(&path, body.to_string().as_bytes(), &[]);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {answer}"
        );
    }
    // Publishing a message to a stream store is refused too.
    let (status, body) = s.post("/v1/destinations/orders/messages", b"hi", &[]);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("stream_store")),
        "{body}"
    );
    let (_, all) = s.get("/v1/streams/orders/events");
    assert_eq!(all["events"].as_array().unwrap().len(), 5, "{all}");
}

#[test]
fn racing_exact_appends_have_one_winner_per_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(dir.path(), CONFIG));
    const RACERS: usize = 8;
    const ROUNDS: u64 = 25;
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|t| {
            let s = Arc::clone(&s);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let expected = if round == 0 { json!("no-stream") } else { json!(round - 1) };
                    let (status, body) = append(
                        &s,
                        "race-1",
                        json!({ "expected_revision": expected, "events": [event("Tick", &format!("t{t}-r{round}"))] }),
                    );
                    outcomes.push((round, status, body));
                    barrier.wait();
                }
                outcomes
            })
        })
        .collect();
    let mut winners = vec![0; ROUNDS as usize];
    for h in handles {
        for (round, status, body) in h.join().unwrap() {
            match status {
                201 => {
                    assert_eq!(body["last_revision"], round, "{body}");
                    winners[round as usize] += 1;
                }
                409 => assert_eq!(body["error"]["actual_revision"], round, "{body}"),
                other => panic!("round {round}: HTTP {other}: {body}"),
            }
        }
    }
    assert!(
        winners.iter().all(|w| *w == 1),
        "winners per round: {winners:?}"
    );
    let (_, page) = read(&s, "race-1", "limit=1000");
    assert_eq!(revisions(&page), (0..ROUNDS).collect::<Vec<_>>());
}

#[test]
fn retried_appends_are_idempotent_by_event_id_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG);
    let body = json!({ "expected_revision": "no-stream", "events": [event("A", "id-1"), event("B", "id-2")] });
    let (status, first) = append(&s, "order-7", body.clone());
    assert_eq!(status, 201, "{first}");
    let (status, again) = append(&s, "order-7", body.clone());
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        (
            &again["first_revision"],
            &again["last_revision"],
            &again["last_position"]
        ),
        (
            &first["first_revision"],
            &first["last_revision"],
            &first["last_position"]
        )
    );
    // Some ids stored and some not, or an id of another stream: refused, nothing stored.
    let (status, partial) = append(
        &s,
        "order-7",
        json!({ "events": [event("A", "id-2"), event("C", "id-3")] }),
    );
    assert_eq!(
        (status, partial["error"]["code"].as_str()),
        (409, Some("event_id_conflict")),
        "{partial}"
    );
    let (status, other) = append(&s, "order-8", json!({ "events": [event("A", "id-1")] }));
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (409, Some("event_id_conflict")),
        "{other}"
    );
    drop(s);
    let s = Server::start_existing(dir.path());
    let (status, again) = append(&s, "order-7", body);
    assert_eq!(
        (status, again["duplicate"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    let (_, page) = read(&s, "order-7", "");
    assert_eq!(revisions(&page), vec![0, 1]);
    let (status, _) = read(&s, "order-8", "");
    assert_eq!(status, 404);
}

#[test]
fn a_multi_stream_append_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG);
    let (status, _) = append(
        &s,
        "account-2",
        json!({ "events": [event("Opened", "o2")] }),
    );
    assert_eq!(status, 201);
    let transfer = |expect_a: Value, expect_b: Value, id: &str| {
        let body = json!({ "appends": [
            { "stream": "account-1", "expected_revision": expect_a, "events": [event("Debited", &format!("{id}-a"))] },
            { "stream": "account-2", "expected_revision": expect_b, "events": [event("Credited", &format!("{id}-b"))] },
        ]});
        s.post(
            "/v1/streams/orders/append",
            body.to_string().as_bytes(),
            &[],
        )
    };
    // account-2 is at 0, not 5: neither stream gets anything.
    let (status, body) = transfer(json!("no-stream"), json!(5), "t1");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["stream"], "account-2");
    assert_eq!(read(&s, "account-1", "").0, 404);
    assert_eq!(revisions(&read(&s, "account-2", "").1), vec![0]);
    let (status, body) = transfer(json!("no-stream"), json!(0), "t2");
    assert_eq!(status, 201, "{body}");
    let appends = body["appends"].as_array().unwrap();
    assert_eq!(appends[0]["last_revision"], 0);
    assert_eq!(appends[1]["last_revision"], 1);
    // One commit: consecutive positions.
    assert_eq!(
        appends[1]["first_position"].as_u64().unwrap(),
        appends[0]["last_position"].as_u64().unwrap() + 1
    );
    // The same stream twice in one append is refused.
    let body = json!({ "appends": [
        { "stream": "account-1", "events": [event("X", "x1")] },
        { "stream": "account-1", "events": [event("X", "x2")] },
    ]});
    let (status, _) = s.post(
        "/v1/streams/orders/append",
        body.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 400);
}

#[test]
fn soft_and_hard_deletes_over_the_cli_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG);
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &s.url]);
        weir(&all, dir.path())
    };
    let (code, out, err) = cli(&[
        "stream",
        "append",
        "orders",
        "cart-1",
        "-t",
        "Opened",
        "{}",
        "-e",
        "no-stream",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("appended to cart-1 revision 0"), "{out}");
    let (code, out, err) = cli(&[
        "stream",
        "append",
        "orders",
        "cart-1",
        "-t",
        "Opened",
        "{}",
        "-e",
        "no-stream",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("is at revision 0") && err.contains("HTTP 409"),
        "{err}"
    );
    cli(&["stream", "append", "orders", "cart-2", "-t", "Opened", "{}"]);

    let (code, out, err) = cli(&["stream", "delete", "orders", "cart-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(read(&s, "cart-1", "").0, 404);
    // The name is free again; revisions go on.
    let (code, out, err) = cli(&[
        "stream",
        "append",
        "orders",
        "cart-1",
        "-t",
        "Opened",
        "again",
        "-e",
        "no-stream",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revision 1"), "{out}");

    let (code, _, err) = cli(&["stream", "delete", "orders", "cart-2", "--hard"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["stream", "append", "orders", "cart-2", "-t", "X", "{}"]);
    assert_eq!(code, 1);
    assert!(err.contains("stream_deleted"), "{err}");
    drop(s);

    let s = Server::start_existing(dir.path());
    let (status, page) = read(&s, "cart-1", "");
    assert_eq!(status, 200, "{page}");
    assert_eq!(revisions(&page), vec![1]);
    let (status, body) = read(&s, "cart-2", "");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("stream_deleted"))
    );
    let (status, _) = append(&s, "cart-2", json!({ "events": [event("X", "late")] }));
    assert_eq!(status, 410);
    let (status, body) = call_json(
        "DELETE",
        &format!(
            "{}/v1/streams/orders/streams/cart-1?expected_revision=0",
            s.url
        ),
        &[],
        b"",
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["actual_revision"], 1);
}

#[test]
fn reads_by_stream_category_type_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG);
    for i in 0..30 {
        let stream = if i % 3 == 0 {
            format!("user-{}", i % 2)
        } else {
            format!("order-{}", i % 4)
        };
        let ty = if i % 2 == 0 { "Even" } else { "Odd" };
        let (status, body) = append(
            &s,
            &stream,
            json!({ "events": [event(ty, &format!("ev{i}"))] }),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (_, page) = read(&s, "order-1", "limit=2");
    assert_eq!(revisions(&page), vec![0, 1]);
    assert_eq!(page["next"], 2);
    let (_, page) = read(&s, "order-1", "from=2&limit=100");
    let forward = revisions(&page);
    assert_eq!(page["next"], Value::Null);
    let (_, back) = read(&s, "order-1", "direction=backward&limit=3");
    let last = *forward.last().unwrap();
    assert_eq!(revisions(&back), vec![last, last - 1, last - 2]);

    let (_, all) = s.get("/v1/streams/orders/events?limit=1000");
    let positions: Vec<u64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (0..30).collect::<Vec<_>>());
    assert_eq!(
        (all["next"].as_u64(), all["end"].as_u64()),
        (Some(30), Some(30))
    );

    let (_, users) = s.get("/v1/streams/orders/events?category=user");
    let users = users["events"].as_array().unwrap().clone();
    assert_eq!(users.len(), 10);
    assert!(
        users
            .iter()
            .all(|e| e["stream"].as_str().unwrap().starts_with("user-"))
    );
    assert!(
        users
            .windows(2)
            .all(|w| w[0]["position"].as_u64() < w[1]["position"].as_u64())
    );

    let (_, odd) = s.get("/v1/streams/orders/events?type=Odd&from=10&limit=3");
    let odd = odd["events"].as_array().unwrap().clone();
    assert_eq!(
        odd.iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![11, 13, 15]
    );

    let (status, _) = s.get("/v1/streams/orders/events?type=Odd&category=user");
    assert_eq!(status, 400);
    let (code, out, err) = weir(
        &[
            "stream",
            "read",
            "orders",
            "--category",
            "user",
            "--limit",
            "2",
            "--server",
            &s.url,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("user-0@0 (position 0) Even"), "{out}");
}

/// Follows an SSE route in a thread: every event as (name, data) on the returned channel.
fn sse(url: &str, last_event: Option<&str>) -> std::sync::mpsc::Receiver<(String, String)> {
    let mut req = ureq::get(url);
    if let Some(id) = last_event {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.call().expect("follow");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let (mut name, mut data) = (String::new(), String::new());
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if let Some(v) = l.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data = v.to_owned();
            } else if l.is_empty() && !name.is_empty() {
                let event = (std::mem::take(&mut name), std::mem::take(&mut data));
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Receives events until `done` says so, failing after 30 s.
fn collect(
    rx: &std::sync::mpsc::Receiver<(String, String)>,
    events: &mut Vec<(String, String)>,
    done: impl Fn(&[(String, String)]) -> bool,
) {
    while !done(events) {
        let e = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("timed out following; got {events:?}"));
        events.push(e);
    }
}

fn revisions_of(events: &[(String, String)]) -> Vec<u64> {
    events
        .iter()
        .filter(|(n, _)| n == "event")
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn the_catch_up_subscription_says_when_it_caught_up_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG);
    for i in 0..5 {
        append(
            &s,
            "order-1",
            json!({ "events": [event("E", &format!("c{i}"))] }),
        );
    }
    let url = format!("{}/v1/streams/orders/events/follow?category=order", s.url);
    let rx = sse(&url, None);
    let mut events = Vec::new();
    collect(&rx, &mut events, |evs| {
        evs.iter().any(|(n, _)| n == "caught-up")
    });
    assert_eq!(revisions_of(&events), (0..5).collect::<Vec<_>>());
    for i in 5..10 {
        append(
            &s,
            "order-1",
            json!({ "events": [event("E", &format!("c{i}"))] }),
        );
        append(
            &s,
            "user-1",
            json!({ "events": [event("U", &format!("u{i}"))] }),
        );
    }
    collect(&rx, &mut events, |evs| revisions_of(evs).len() >= 10);
    assert_eq!(
        revisions_of(&events),
        (0..10).collect::<Vec<_>>(),
        "only the category, in order"
    );
    assert_eq!(events.iter().filter(|(n, _)| n == "caught-up").count(), 1);
    // Resuming after the 3rd event's position gives the rest, then says it caught up.
    let third: Value = serde_json::from_str(&events[2].1).unwrap();
    let rx = sse(&url, Some(&third["position"].to_string()));
    let mut rest = Vec::new();
    collect(&rx, &mut rest, |evs| {
        evs.iter().any(|(n, _)| n == "caught-up")
    });
    assert_eq!(revisions_of(&rest), (3..10).collect::<Vec<_>>());
}
