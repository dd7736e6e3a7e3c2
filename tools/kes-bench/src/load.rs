//! The load: worker threads sending one operation over keep-alive or new connections,
//! and the latency report of a run.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::args::{Args, Op};
use crate::conn::{Conn, Target, build_request, error_message, one_shot};

/// What each request of an operation sends; the same for all connections.
pub(crate) struct Work {
    pub(crate) op: Op,
    pub(crate) key_name: String,
    pub(crate) generate_body: Vec<u8>,
    /// Pre-built decrypt bodies, used round-robin.
    pub(crate) decrypt_bodies: Vec<Vec<u8>>,
}

impl Work {
    /// The requests a connection cycles through, `(seq + id) % len`: the one generate, or
    /// the decrypts. (create-delete makes its requests as it goes.)
    pub(crate) fn requests(&self, t: &Target, close: bool) -> Vec<Vec<u8>> {
        match self.op {
            Op::Generate => {
                let path = format!("/v1/key/generate/{}", self.key_name);
                vec![build_request(t, "POST", &path, &self.generate_body, close)]
            }
            Op::Decrypt => {
                let path = format!("/v1/key/decrypt/{}", self.key_name);
                self.decrypt_bodies
                    .iter()
                    .map(|b| build_request(t, "POST", &path, b, close))
                    .collect()
            }
            Op::CreateDelete => Vec::new(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    /// Latency of every request in nanoseconds (successful or not).
    pub(crate) samples: Vec<u64>,
    /// Requests that ended in an I/O or TLS failure: their connection was reopened.
    reconnects: u64,
}

impl Tally {
    pub(crate) fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }
}

pub(crate) fn io_kind(e: &io::Error) -> String {
    let text = e.to_string();
    let short: String = text.chars().take(60).collect();
    format!("io: {short}")
}

pub(crate) struct Stop {
    deadline: Option<Instant>,
    budget: Option<AtomicU64>,
    stop: AtomicBool,
}

impl Stop {
    /// Takes one request from the budget; false when the run is over.
    pub(crate) fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return false;
        }
        if let Some(budget) = &self.budget {
            return budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        }
        true
    }
}

pub(crate) fn worker(
    t: &Target,
    work: &Work,
    stop: &Stop,
    id: usize,
    new_connection: bool,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut seq: u64 = 0;
    let requests = work.requests(t, new_connection);
    while stop.next() {
        let owned;
        let request: &[u8] = match work.op {
            Op::Generate | Op::Decrypt => &requests[(seq as usize + id) % requests.len()],
            Op::CreateDelete => {
                let name = format!("{}-{id}-{}", work.key_name, seq / 2);
                owned = if seq % 2 == 0 {
                    build_request(
                        t,
                        "POST",
                        &format!("/v1/key/create/{name}"),
                        b"",
                        new_connection,
                    )
                } else {
                    build_request(
                        t,
                        "DELETE",
                        &format!("/v1/key/delete/{name}"),
                        b"",
                        new_connection,
                    )
                };
                &owned
            }
        };
        seq += 1;
        let start = Instant::now();
        let c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(t) {
                Ok(c) => c,
                Err(e) => {
                    tally.samples.push(start.elapsed().as_nanos() as u64);
                    tally.error(io_kind(&e));
                    tally.reconnects += 1;
                    // Do not spin on a server that refuses connections.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let mut c = c;
        match c.request(request) {
            Ok(resp) => {
                tally.samples.push(start.elapsed().as_nanos() as u64);
                if resp.status == 200 {
                    tally.ok += 1;
                } else {
                    tally.error(format!("HTTP {}", resp.status));
                }
                if !resp.close && !new_connection {
                    conn = Some(c);
                }
            }
            Err(e) => {
                tally.samples.push(start.elapsed().as_nanos() as u64);
                tally.error(io_kind(&e));
                tally.reconnects += 1;
            }
        }
    }
    tally
}

pub(crate) struct Report {
    pub(crate) elapsed: Duration,
    pub(crate) ok: u64,
    pub(crate) total: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    /// Sorted.
    pub(crate) samples: Vec<u64>,
}

impl Report {
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.samples.len()) - 1;
        self.samples[i] as f64 / 1e6
    }
    pub(crate) fn mean_ms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|&n| n as f64).sum::<f64>() / self.samples.len() as f64 / 1e6
    }
    pub(crate) fn throughput(&self) -> f64 {
        self.total as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
    pub(crate) fn latency_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mean": self.mean_ms(),
            "p50": self.percentile(50.0),
            "p90": self.percentile(90.0),
            "p99": self.percentile(99.0),
            "p99.9": self.percentile(99.9),
            "max": self.percentile(100.0),
        })
    }
    pub(crate) fn errors_json(&self) -> serde_json::Value {
        self.errors
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

pub(crate) fn run_load(
    t: &Arc<Target>,
    work: &Arc<Work>,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    new_connection: bool,
) -> Report {
    let stop = Arc::new(Stop {
        deadline: if requests.is_some() {
            None
        } else {
            Some(Instant::now() + duration)
        },
        budget: requests.map(AtomicU64::new),
        stop: AtomicBool::new(false),
    });
    run_workers(t, work, connections, &stop, new_connection)
}

/// A load that runs in the background until `stop` is called: the storm, or the
/// reconnect churn of a flood.
pub(crate) struct Background {
    stop: Arc<Stop>,
    thread: thread::JoinHandle<Report>,
}

impl Background {
    pub(crate) fn start(
        t: &Arc<Target>,
        work: &Arc<Work>,
        connections: usize,
        new_connection: bool,
    ) -> Background {
        let stop = Arc::new(Stop {
            deadline: None,
            budget: None,
            stop: AtomicBool::new(false),
        });
        let (t, work, s) = (t.clone(), work.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("background".into())
            .spawn(move || run_workers(&t, &work, connections, &s, new_connection))
            .expect("cannot start a thread");
        Background { stop, thread }
    }

    /// Stops the load once each connection has finished its request.
    pub(crate) fn stop(self) -> Report {
        self.stop.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the background load panicked")
    }
}

fn run_workers(
    t: &Arc<Target>,
    work: &Arc<Work>,
    connections: usize,
    stop: &Arc<Stop>,
    new_connection: bool,
) -> Report {
    let start = Instant::now();
    let handles: Vec<_> = (0..connections)
        .map(|id| {
            let (t, work, stop) = (t.clone(), work.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("conn-{id}"))
                .spawn(move || worker(&t, &work, &stop, id, new_connection))
                .expect("cannot start a thread")
        })
        .collect();
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut samples = Vec::new();
    for h in handles {
        let tally = h.join().expect("a connection thread panicked");
        ok += tally.ok;
        for (k, v) in tally.errors {
            *errors.entry(k).or_insert(0) += v;
        }
        samples.extend(tally.samples);
    }
    let elapsed = start.elapsed();
    samples.sort_unstable();
    Report {
        elapsed,
        ok,
        total: samples.len() as u64,
        errors,
        samples,
    }
}

pub(crate) fn prepare(t: &Target, a: &Args) -> Result<Work, String> {
    let context = a.context.as_ref().map(|c| B64.encode(c.as_bytes()));
    let generate_body = match &context {
        Some(c) => serde_json::json!({ "context": c }).to_string().into_bytes(),
        None => b"{}".to_vec(),
    };
    let mut work = Work {
        op: a.op,
        key_name: a.key_name.clone(),
        generate_body,
        decrypt_bodies: Vec::new(),
    };
    if a.op == Op::CreateDelete {
        return Ok(work);
    }
    // Create the key unless it exists. Servers answer an existing key with 400 (Go
    // KES: "key already exists") or 409; either is fine.
    if !a.existing_key {
        let path = format!("/v1/key/create/{}", a.key_name);
        let resp = one_shot(t, "POST", &path, b"")?;
        let exists = matches!(resp.status, 400 | 409) && error_message(&resp).contains("exist");
        if resp.status != 200 && !exists {
            return Err(format!(
                "cannot create key '{}': HTTP {}: {}",
                a.key_name,
                resp.status,
                error_message(&resp)
            ));
        }
    }
    // Check that generate works, and for decrypt collect ciphertexts to replay.
    let wanted = if a.op == Op::Decrypt { 64 } else { 1 };
    let mut conn = Conn::open(t).map_err(|e| format!("cannot connect to {}: {e}", t.addr))?;
    let gen_path = format!("/v1/key/generate/{}", a.key_name);
    for _ in 0..wanted {
        let resp = conn
            .request(&build_request(
                t,
                "POST",
                &gen_path,
                &work.generate_body,
                false,
            ))
            .map_err(|e| format!("POST {gen_path}: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "generate with key '{}' failed: HTTP {}: {}",
                a.key_name,
                resp.status,
                error_message(&resp)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("generate: response is not JSON: {e}"))?;
        let ciphertext = v
            .get("ciphertext")
            .and_then(|c| c.as_str())
            .ok_or("generate: response has no ciphertext")?;
        if a.op == Op::Decrypt {
            let mut body = serde_json::json!({ "ciphertext": ciphertext });
            if let Some(c) = &context {
                body["context"] = serde_json::Value::String(c.clone());
            }
            work.decrypt_bodies.push(body.to_string().into_bytes());
        }
    }
    if a.op == Op::Decrypt {
        let resp = conn
            .request(&build_request(
                t,
                "POST",
                &format!("/v1/key/decrypt/{}", a.key_name),
                &work.decrypt_bodies[0],
                true,
            ))
            .map_err(|e| format!("decrypt: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "decrypt with key '{}' failed: HTTP {}: {}",
                a.key_name,
                resp.status,
                error_message(&resp)
            ));
        }
    }
    Ok(work)
}
