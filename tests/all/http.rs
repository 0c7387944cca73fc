//! Bad input over HTTP gets a 4xx with a stable error code and changes nothing.

use crate::support::{Server, plugin_toml};

/// (method, path, body, headers, expected status, expected error code)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [u8],
    &'a [(&'a str, &'a str)],
    u16,
    &'a str,
);

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_message_size = \"1KiB\"\n[queues.orders]\n{}",
        plugin_toml("counter", "")
    );
    let server = Server::start(dir.path(), &config);
    let big = vec![b'x'; 1025];
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/destinations/orders/messages",
            &big,
            &[],
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/destinations/nowhere/messages",
            b"x",
            &[],
            404,
            "unknown_destination",
        ),
        (
            "POST",
            "/v1/destinations/bad%20name/messages",
            b"x",
            &[],
            400,
            "invalid_name",
        ),
        (
            "POST",
            "/v1/destinations/orders/messages",
            b"x",
            &[("weir-header-", "v")],
            400,
            "invalid_message",
        ),
        (
            "POST",
            "/v1/destinations/orders/messages",
            b"x",
            &[("weir-id", "")],
            400,
            "invalid_message",
        ),
        (
            "GET",
            "/v1/destinations/orders/messages?from=minus-one",
            b"",
            &[],
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/v1/plugins/nobody/kv",
            b"",
            &[],
            404,
            "unknown_plugin",
        ),
        ("GET", "/v2/anything", b"", &[], 404, "not_found"),
        (
            "POST",
            "/v1/destinations/%FF/messages",
            b"x",
            &[],
            400,
            "invalid_path",
        ),
        ("DELETE", "/v1/stats", b"", &[], 405, "method_not_allowed"),
    ];
    for (method, path, body, headers, status, code) in cases {
        let (got, answer) = match method {
            "POST" => server.post(path, body, headers),
            "GET" => server.get(path),
            _ => {
                let resp = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent()
                    .delete(format!("{}{path}", server.url))
                    .call()
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.into_body().read_to_string().unwrap();
                (status, serde_json::from_str(&text).unwrap())
            }
        };
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        server.stats()["destinations"]["orders"]["messages"],
        0,
        "nothing was stored"
    );

    // The limit is inclusive: exactly max_message_size is accepted.
    server.publish("orders", &"x".repeat(1024), &[]);
    assert_eq!(server.stats()["destinations"]["orders"]["messages"], 1);
}
