//! The CipherTrust stand-in as a helper server for the resident-key benchmark
//! (tools/bench_resident.py, docs/BENCHMARKS.md). Test-only, like the stand-in itself:
//! it is never part of the shipped binary. Ignored, so the test suite never runs it.
//!
//! `CTM_SIM_INFO=FILE` (required): the helper writes `endpoint`, CA file and refresh
//! token there, one a line, and runs until the file is removed. `CTM_SIM_LATENCY=FILE`:
//! milliseconds of latency per request, read again every 100 ms (so one helper serves
//! several latencies). `CTM_SIM_JITTER=P`: each answer's latency varies uniformly by up
//! to P % either way.

#[path = "common/ctm_sim.rs"]
mod ctm_sim;

use std::path::PathBuf;
use std::time::Duration;

use ctm_sim::{CtmSim, REFRESH_TOKEN};

#[test]
#[ignore = "a helper server for tools/bench_resident.py, not a test"]
fn ctm_sim_server() {
    let info = PathBuf::from(std::env::var_os("CTM_SIM_INFO").expect("CTM_SIM_INFO=FILE"));
    let latency_file = std::env::var_os("CTM_SIM_LATENCY").map(PathBuf::from);
    let sim = CtmSim::start();
    if let Some(percent) = std::env::var("CTM_SIM_JITTER")
        .ok()
        .and_then(|j| j.parse().ok())
    {
        sim.set_latency_jitter(percent);
    }
    let text = format!(
        "{}\n{}\n{REFRESH_TOKEN}\n",
        sim.endpoint(),
        sim.ca_file().display()
    );
    let partial = info.with_extension("partial");
    std::fs::write(&partial, text).unwrap();
    std::fs::rename(&partial, &info).unwrap();
    let mut latency = Duration::ZERO;
    while info.exists() {
        if let Some(file) = &latency_file {
            let wanted = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map_or(Duration::ZERO, Duration::from_millis);
            if wanted != latency {
                latency = wanted;
                sim.set_latency(latency);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
