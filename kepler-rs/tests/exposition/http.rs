//! `/metrics` over HTTP through the router: formats, compression, pieces, limits, timing.

use super::*;

pub(crate) fn state(snapshot: Snapshot, process_metrics: bool) -> AppState {
    AppState {
        snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        self_metrics: Arc::new(errors()),
        render: RenderOptions {
            process_metrics,
            ..Default::default()
        },
        build: build_info(),
    }
}

async fn get(
    app: axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, BTreeMap<String, String>, Vec<u8>) {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn metrics_endpoint_serves_text_by_default() {
    let st = state(client_all_zones(), true);
    let expected = render(&client_all_zones(), &errors(), true, Format::Text);
    let (status, headers, body) = get(router(st), "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], CONTENT_TYPE_TEXT);
    assert!(!headers.contains_key("content-encoding"));
    assert_eq!(String::from_utf8(body).unwrap(), expected);
}

#[tokio::test]
async fn metrics_endpoint_negotiates_openmetrics() {
    let st = state(client_all_zones(), false);
    // What Prometheus 2.x sends.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                  version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, headers, body) = get(router(st.clone()), "/metrics", &[("accept", accept)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], CONTENT_TYPE_OPENMETRICS);
    let body = String::from_utf8(body).unwrap();
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE kepler_container_joules counter\n"));

    let (_, headers, _) = get(router(st), "/metrics", &[("accept", "text/plain")]).await;
    assert_eq!(headers["content-type"], CONTENT_TYPE_TEXT);
}

/// The client snapshot with 2,000 more processes: a page of more than 20 pieces.
pub(crate) fn with_2000_processes() -> Snapshot {
    let mut s = client_all_zones();
    let template = s.processes[0].clone();
    for pid in 10_000..12_000 {
        s.processes.push(ProcessEnergy {
            pid,
            comm: format!("worker-{pid}"),
            ..template.clone()
        });
    }
    s
}

/// A node with 2,000 processes: `/metrics` is sent in pieces of about `PIECE_BYTES` (never one
/// buffer the size of the page) that join to exactly the rendered page.
#[tokio::test]
async fn large_pages_are_sent_in_pieces() {
    let s = with_2000_processes();
    let expected = render(&s, &errors(), true, Format::Text);
    assert!(expected.len() > 20 * PIECE_BYTES, "{}", expected.len());
    let response = router(state(s, true))
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut pieces = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            pieces.push(data);
        }
    }
    assert!(pieces.len() > 20, "{} pieces", pieces.len());
    let largest = pieces.iter().map(|p| p.len()).max().unwrap();
    assert!(largest < PIECE_BYTES + 1024, "a piece of {largest} bytes");
    assert_eq!(pieces.concat(), expected.as_bytes());
}

/// `/metrics` renders a page while it is sent: each piece goes out when it is cut, and the
/// render stops as soon as its reader is gone (a client that hangs up mid-page).
#[test]
fn a_render_hands_over_each_piece_and_stops_when_the_reader_is_gone() {
    let s = with_2000_processes();
    let options = RenderOptions {
        process_metrics: true,
        ..Default::default()
    };
    let each = |send: &mut dyn FnMut(String) -> bool| {
        kepler_rs::export::prometheus::render_each_piece(
            &s,
            &errors(),
            &options,
            &build_info(),
            Format::Text,
            send,
        )
    };
    let mut page = String::new();
    let mut pieces = 0;
    assert!(each(&mut |piece| {
        pieces += 1;
        page.push_str(&piece);
        true
    }));
    assert!(pieces > 20, "{pieces} pieces");
    assert_eq!(page, render(&s, &errors(), true, Format::Text));
    let mut taken = 0;
    assert!(!each(&mut |_| {
        taken += 1;
        taken < 3
    }));
    assert_eq!(taken, 3, "the render went on after its reader was gone");
}

/// At most `MAX_PARALLEL_SCRAPES` scrapes render at once: with that many unread (each render
/// waits with two pieces queued) one more is answered 503, and once one of them is dropped its
/// render stops and a scrape is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_scrapes_beyond_the_limit_are_answered_503() {
    let app = router(state(with_2000_processes(), true));
    let get = || {
        app.clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
    };
    let mut unread = Vec::new();
    for _ in 0..MAX_PARALLEL_SCRAPES {
        let response = get().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        unread.push(response);
    }
    let refused = get().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(unread.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = get().await.unwrap();
        if response.status() == StatusCode::OK {
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            // The whole page (its last series), and the refusals counted (one, or more while the
            // dropped render was still stopping).
            assert!(body.contains("kepler_process_uncore_joules_total{pid=\"11999\""));
            assert!(body.contains(
                "kepler_exporter_errors_total{component=\"server\",reason=\"too_many_scrapes\"} "
            ));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place freed by the dropped scrape"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_endpoint_gzips_when_asked() {
    let st = state(server_two_sockets(), true);
    let expected = render(&server_two_sockets(), &errors(), true, Format::Text);
    let (status, headers, body) = get(router(st), "/metrics", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], CONTENT_TYPE_TEXT);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, expected);
    assert!(
        body.len() < plain.len() / 4,
        "{} vs {}",
        body.len(),
        plain.len()
    );
}

#[tokio::test]
async fn scrapes_read_the_latest_published_snapshot() {
    let st = state(server_two_sockets(), false);
    let (_, _, before) = get(router(st.clone()), "/metrics", &[]).await;
    assert!(String::from_utf8(before)
        .unwrap()
        .contains("kepler_exporter_snapshot_sequence 4242\n"));
    let mut next = server_two_sockets();
    next.sequence = 4243;
    next.taken_at += Duration::from_secs(3);
    st.snapshot.store(Arc::new(next));
    let (_, _, after) = get(router(st.clone()), "/metrics", &[]).await;
    let after = String::from_utf8(after).unwrap();
    assert!(after.contains("kepler_exporter_snapshot_sequence 4243\n"));
    assert!(after.contains("kepler_exporter_snapshot_timestamp_seconds 1750000126.456\n"));
    // Scraping twice does not change anything: nothing is measured on a scrape.
    let (_, _, again) = get(router(st), "/metrics", &[]).await;
    assert_eq!(String::from_utf8(again).unwrap(), after);
}

#[tokio::test]
async fn healthz_index_and_unknown_paths() {
    let st = state(
        Snapshot::empty(NodeInfo::default(), "estimator", "procfs"),
        false,
    );
    let (status, _, body) = get(router(st.clone()), "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok");
    for query in ["", "?verbose=0", "?x=1"] {
        let (_, _, body) = get(router(st.clone()), &format!("/healthz{query}"), &[]).await;
        assert_eq!(body, b"ok", "Kepler's exact answer for {query:?}");
    }
    let (status, _, body) = get(router(st.clone()), "/healthz?verbose=1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "ok\ncpu_time_source procfs\ncpu_time_exact false\npower_source estimator\nsnapshot_sequence 0\n"
    );
    let (status, headers, body) = get(router(st.clone()), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("href=\"metrics\""));
    for path in ["/nope", "/metrics/extra", "/metricsx"] {
        let (status, _, _) = get(router(st.clone()), path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let response = router(st)
        .oneshot(
            Request::post("/metrics")
                .header(header::CONTENT_LENGTH, "0")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn serve_answers_on_a_socket_and_shuts_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let st = state(server_two_sockets(), false);
    let server = tokio::spawn(serve(listener, st, Default::default(), async {
        let _ = stopped.await;
    }));
    // A hand-written HTTP/1.1 request over a plain blocking socket (no client crate needed).
    let response = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn render_time_is_reasonable_for_a_large_node() {
    // Not a benchmark (that comes with benches/); a guard against accidental quadratic work.
    let mut s = client_all_zones();
    let template = s.workloads[0].clone();
    let ptemplate = s.processes[0].clone();
    s.workloads = (0..100)
        .map(|i| {
            let mut w = template.clone();
            w.key = WorkloadKey::Container(format!("{i:064x}"));
            w.pod_name = format!("pod-{i}");
            w
        })
        .collect();
    s.processes = (0..1000)
        .map(|i| {
            let mut p = ptemplate.clone();
            p.pid = 1000 + i;
            p.workload = s.workloads[(i % 100) as usize].key.clone();
            p
        })
        .collect();
    let start = std::time::Instant::now();
    let out = render(&s, &SelfMetrics::new(), true, Format::Text);
    let elapsed = start.elapsed();
    assert!(out.lines().count() > 14_000);
    println!("rendered {} bytes in {elapsed:?}", out.len());
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}
