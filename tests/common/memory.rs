//! What a process holds in memory: which file backs an address, a child's peak anonymous memory.

use std::process::{Command, Stdio};
use std::time::Duration;

/// The file mapped at `addr` in this process, from `/proc/self/maps`.
pub fn mapped_file(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        let path = f.nth(4).map(str::to_string);
        (lo <= addr && addr < hi).then_some(path).flatten()
    })
}

/// Peak `RssAnon` of `cmd`, polled every millisecond until it exits.
pub fn peak_anon(mut cmd: Command) -> (u64, std::process::ExitStatus) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s.lines().find_map(|l| {
                l.strip_prefix("RssAnon:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            }) {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(st) = child.try_wait().expect("wait") {
            return (peak, st);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
