//! Publishing end to end against the real binary: single, batch (ordered, all or nothing),
//! binary, the publish token, bad input.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use pubsub::*;
use server::{pos, Server};

#[test]
fn publish_then_short_poll_with_etag_events_and_binary() {
    let srv = Server::start(&["--shards", "2"]);
    let start = current(&srv, "news");
    let (epoch, off) = pos(&start);
    assert_eq!(off, 0, "a new topic starts at offset 0");

    let a = srv.publish("news", b"hello");
    let r = srv.post("/pub/news?event=price", b"{\"p\":1}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json()["id"].as_str().unwrap().to_string();
    // Not UTF-8 → binary; UTF-8 but declared octet-stream → binary too.
    let c = srv.publish("news", &[0xff, 0x00, 0x80]);
    let raw = b"POST /pub/news HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                Content-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nabc";
    let r = srv.request(raw);
    assert_eq!(r.status, 200);
    let d = r.json()["id"].as_str().unwrap().to_string();
    for (i, id) in [&a, &b, &c, &d].iter().enumerate() {
        assert_eq!(pos(id), (epoch.clone(), i as u64 + 1));
    }

    // No since: no messages, next = current, ETag = current.
    let r = srv.get("/poll/news");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["next"], d.as_str());
    assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));

    // since = start: all four, in order, with event names and base64 for binary.
    let r = poll(&srv, "news", &format!("since={start}"));
    let v = r.json();
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(v["next"], d.as_str());
    assert!(v.get("reset").is_none());
    assert_eq!(m[0]["id"], a.as_str());
    assert_eq!(m[0]["data"], "hello");
    assert!(m[0].get("event").is_none() && m[0].get("encoding").is_none());
    assert_eq!(m[1]["event"], "price");
    assert_eq!(m[1]["data"], "{\"p\":1}");
    assert_eq!(m[2]["encoding"], "base64");
    assert_eq!(m[2]["data"], "/wCA");
    assert_eq!(m[3]["encoding"], "base64");
    assert_eq!(m[3]["data"], "YWJj");

    // limit: the first N after since; next = the last one given.
    let v = poll(&srv, "news", &format!("since={a}&limit=2")).json();
    let m = msgs(&v);
    assert_eq!(
        m.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
        [b.clone(), c.clone()]
    );
    assert_eq!(v["next"], c.as_str());
    // Up to date: empty, next = since.
    let v = poll(&srv, "news", &format!("since={d}")).json();
    assert_eq!(msgs(&v).len(), 0);
    assert_eq!(v["next"], d.as_str());

    // If-None-Match equal to the current position → 304; stale → 200.
    let r = srv.request(
        format!("GET /poll/news?since={d} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nIf-None-Match: \"{d}\"\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));
    let r = srv.request(
        format!("GET /poll/news?since={c} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nIf-None-Match: \"{c}\"\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(msgs(&r.json()).len(), 1);
}

#[test]
fn batch_publish_is_ordered_and_all_or_nothing() {
    let srv = Server::start(&["--shards", "2", "--max-message-bytes", "16"]);
    let sa = current(&srv, "ba");
    let sb = current(&srv, "bb");
    let body = br#"[{"topic":"ba","data":"a1"},{"topic":"bb","data":"b1","event":"e"},
                   {"topic":"ba","data":"AAEC","encoding":"base64"},{"topic":"ba","data":"a3"}]"#;
    let r = srv.post("/pub", body);
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);
    let (ea, _) = pos(&sa);
    let (eb, _) = pos(&sb);
    assert_eq!(pos(&ids[0]), (ea.clone(), 1));
    assert_eq!(pos(&ids[1]), (eb.clone(), 1));
    assert_eq!(pos(&ids[2]), (ea.clone(), 2));
    assert_eq!(pos(&ids[3]), (ea.clone(), 3));
    let v = poll(&srv, "ba", &format!("since={sa}")).json();
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[1]["data"], "AAEC");
    assert_eq!(m[1]["encoding"], "base64");
    let v = poll(&srv, "bb", &format!("since={sb}")).json();
    assert_eq!(v["messages"][0]["event"], "e");

    // Each bad batch: 400 (413 for an oversized item) and nothing published anywhere.
    let bad: &[(&[u8], u16)] = &[
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bad topic","data":"y"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"!!","encoding":"base64"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"y","encoding":"hex"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"y","event":"two words"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"y","extra":1}]"#,
            400,
        ),
        (br#"[{"topic":"ba","data":"x"},{"topic":"bb"}]"#, 400),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"0123456789abcdefXYZ"}]"#,
            413,
        ),
        (br#"{"topic":"ba","data":"x"}"#, 400),
        (br#"[]"#, 400),
        (b"[{\"topic\":\"ba\",\"data\":\"x\"},", 400),
    ];
    for (body, status) in bad {
        let r = srv.post("/pub", body);
        assert_eq!(
            r.status,
            *status,
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
    }
    assert_eq!(current(&srv, "ba"), ids[3], "nothing published on ba");
    assert_eq!(current(&srv, "bb"), ids[1], "nothing published on bb");
}

#[test]
fn publish_token_is_required_when_set() {
    let srv = Server::start(&["--publish-token", "s3cret"]);
    let send = |auth: &str| {
        srv.request(
            format!("POST /pub/tok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Length: 1\r\n\r\nx")
                .as_bytes(),
        )
    };
    let r = send("");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(send("Authorization: Bearer wrong\r\n").status, 403);
    assert_eq!(send("Authorization: Basic czNjcmV0\r\n").status, 403);
    let r = send("Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(pos(r.json()["id"].as_str().unwrap()).1, 1);
    // The batch route is guarded the same way.
    let r = srv.post("/pub", br#"[{"topic":"tok","data":"x"}]"#);
    assert_eq!(r.status, 401);
    // Only the authorised message exists.
    let start = format!("{}:0", pos(&current(&srv, "tok")).0);
    assert_eq!(
        msgs(&poll(&srv, "tok", &format!("since={start}")).json()).len(),
        1
    );
}

#[test]
fn bad_input_is_refused() {
    let srv = Server::start(&["--max-message-bytes", "1024", "--max-topic-bytes", "16"]);
    // Oversized message: 413 (Content-Length and chunked).
    assert_eq!(srv.post("/pub/big", &[b'x'; 1025]).status, 413);
    let mut raw = b"POST /pub/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'y'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(srv.request(&raw).status, 413);
    // A body of exactly the limit is fine.
    srv.publish("big", &[b'x'; 1024]);
    // Bad topics: 400 on publish, poll and SSE.
    for path in [
        "/pub/bad%20topic",
        "/pub/a%zz",
        "/pub/%C3%A9",
        "/pub/seventeen-bytes!",
        "/pub/0123456789abcdefg",
        "/poll/bad%20topic",
        "/sse/bad%20topic",
    ] {
        let r = if path.starts_with("/pub") {
            srv.post(path, b"x")
        } else {
            srv.get(path)
        };
        assert_eq!(r.status, 400, "{path}");
    }
    assert_eq!(srv.post("/pub/ok?event=two%20words", b"x").status, 400);
    assert_eq!(
        srv.post(&format!("/pub/ok?event={}", "e".repeat(65)), b"x")
            .status,
        400
    );
    assert_eq!(srv.get("/poll/ok?limit=abc").status, 400);
    assert_eq!(srv.get("/poll/ok?wait=-1").status, 400);
    // Nothing was published on `ok` by the refused requests.
    assert_eq!(pos(&current(&srv, "ok")).1, 0);
    assert_eq!(pos(&current(&srv, "big")).1, 1);
}
