//! A small-request load client for the benchmark (`tests/bench/run`): many
//! concurrent P2P-over-HTTP `checkpresent` requests against one repository
//! UUID, each client on its own keep-alive connection.
//!
//!     cargo build --release --locked --examples
//!     target/release/examples/loadgen --base http://127.0.0.1:9417 --uuid UUID \
//!         --keys keys.txt [--clients 16] [--count 500] [--max-seconds 60]
//!
//! Every client sends `--count` requests (cycling through the keys in the
//! file, one key a line), or stops early at `--max-seconds`. Prints one JSON
//! object: requests, errors, seconds, rate (requests/s), p50_ms, p99_ms.

use std::time::{Duration, Instant};

const CLIENT_UUID: &str = "5d7e0c1a-7b4e-4f0e-9a57-3c1f0f6b2d10";

struct Args {
    base: String,
    uuid: String,
    keys: String,
    clients: usize,
    count: usize,
    max_seconds: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        base: String::new(),
        uuid: String::new(),
        keys: String::new(),
        clients: 16,
        count: 500,
        max_seconds: 60.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--base" => a.base = val().trim_end_matches('/').to_string(),
            "--uuid" => a.uuid = val(),
            "--keys" => a.keys = val(),
            "--clients" => a.clients = val().parse().unwrap_or_else(|_| usage("bad --clients")),
            "--count" => a.count = val().parse().unwrap_or_else(|_| usage("bad --count")),
            "--max-seconds" => {
                a.max_seconds = val().parse().unwrap_or_else(|_| usage("bad --max-seconds"))
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.base.is_empty() || a.uuid.is_empty() || a.keys.is_empty() || a.clients == 0 {
        usage("--base, --uuid and --keys are required");
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!(
        "usage: loadgen --base URL --uuid UUID --keys FILE [--clients N] [--count N] [--max-seconds S]"
    );
    std::process::exit(2);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = parse_args();
    let keys: Vec<String> = std::fs::read_to_string(&args.keys)
        .unwrap_or_else(|e| usage(&format!("cannot read {}: {e}", args.keys)))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if keys.is_empty() {
        usage("the key file is empty");
    }
    let urls: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{}/git-annex/{}/v4/checkpresent?key={k}&clientuuid={CLIENT_UUID}",
                args.base, args.uuid
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let started = Instant::now();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let urls = &urls;
                s.spawn(move || {
                    // One agent per client: one keep-alive connection each.
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    let mut lat = Vec::with_capacity(args.count);
                    let mut errors = 0;
                    for i in 0..args.count {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let url = &urls[(c * 7919 + i) % urls.len()];
                        let t = Instant::now();
                        let ok = match agent.post(url).send_empty() {
                            Ok(mut r) => {
                                let status = r.status().as_u16();
                                let body = r.body_mut().read_to_string().unwrap_or_default();
                                status == 200 && body.contains("\"present\"")
                            }
                            Err(_) => false,
                        };
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        if !ok {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let errors: usize = results.iter().map(|(_, e)| e).sum();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let requests = all.len();
    println!(
        "{{\"requests\": {requests}, \"errors\": {errors}, \"seconds\": {seconds:.3}, \"rate\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"clients\": {}}}",
        requests as f64 / seconds,
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        args.clients
    );
}
