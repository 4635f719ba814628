//! The datapath's clock (bpf/lib/clock.h): jiffies mapped to CLOCK_MONOTONIC ns.
//!
//! The verdict path reads `bpf_jiffies64()`, which the verifier inlines, instead
//! of calling `bpf_ktime_get_coarse_ns()`: both have the tick's resolution. The
//! loader measures how jiffies relate to the coarse clock ([`calibrate`]) and
//! writes it to `plinth_clock` before any program is attached, so conntrack
//! expiry times and event rate limits keep the time base of the coarse clock
//! (CLOCK_MONOTONIC, within a tick): the agent's collector compares them with
//! CLOCK_MONOTONIC, and entries written by earlier versions stay valid.

use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{Array, MapData};
use aya::programs::SchedClassifier;

use super::LoadError;
use crate::abi::{Clock, ClockSample};
use crate::testrun;

/// The program that samples both clocks (never attached).
pub const PROBE: &str = "plinth_clock_probe";
/// The clock the programs read.
pub const CLOCK: &str = "plinth_clock";
/// Where [`PROBE`] writes its sample.
pub const SAMPLE: &str = "plinth_clock_sample";

const NS_PER_SEC: u64 = 1_000_000_000;

/// The clock from two samples each taken right after a jiffy began, at least
/// a few jiffies apart (pure): the tick length is the kernel's `TICK_NSEC` of
/// the nearest whole HZ, the offset puts `b` on its coarse time. `None` when
/// the samples do not advance or give an implausible HZ.
pub fn from_edges(a: ClockSample, b: ClockSample) -> Option<Clock> {
    let dj = b.jiffies.checked_sub(a.jiffies).filter(|d| *d > 0)?;
    let dns = b.coarse_ns.checked_sub(a.coarse_ns).filter(|d| *d > 0)?;
    let hz = (u128::from(NS_PER_SEC) * u128::from(dj) + u128::from(dns) / 2) / u128::from(dns);
    let hz = u64::try_from(hz).ok().filter(|hz| (10..=10_000).contains(hz))?;
    let tick_ns = (NS_PER_SEC + hz / 2) / hz;
    Some(Clock {
        tick_ns,
        offset_ns: b.coarse_ns.wrapping_sub(b.jiffies.wrapping_mul(tick_ns)),
    })
}

fn clock_err(name: &'static str) -> impl Fn(String) -> LoadError {
    move |reason| LoadError::Map { name, reason }
}

/// One sample of both clocks, taken by [`PROBE`] in the kernel.
fn sample(ebpf: &Ebpf, packet: &[u8]) -> Result<ClockSample, LoadError> {
    let prog: &SchedClassifier = ebpf
        .program(PROBE)
        .ok_or_else(|| LoadError::Program {
            name: PROBE,
            reason: "not in the object".into(),
        })?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| LoadError::Program {
            name: PROBE,
            reason: e.to_string(),
        })?;
    testrun::run(prog, 1, packet, 1).map_err(|e| LoadError::Program {
        name: PROBE,
        reason: format!("test run: {e}"),
    })?;
    let map = ebpf
        .map(SAMPLE)
        .ok_or_else(|| clock_err(SAMPLE)("not in the object".into()))?;
    let a: Array<&MapData, ClockSample> = Array::try_from(map).map_err(|e| clock_err(SAMPLE)(e.to_string()))?;
    a.get(&0, 0).map_err(|e| clock_err(SAMPLE)(e.to_string()))
}

/// The first sample of a new jiffy.
fn edge(ebpf: &Ebpf, packet: &[u8]) -> Result<ClockSample, LoadError> {
    let start = Instant::now();
    let first = sample(ebpf, packet)?;
    loop {
        let s = sample(ebpf, packet)?;
        if s.jiffies != first.jiffies {
            return Ok(s);
        }
        if start.elapsed() > Duration::from_secs(1) {
            return Err(clock_err(SAMPLE)("jiffies did not advance in 1 s".into()));
        }
    }
}

/// Measures the clock: two jiffy edges about 50 ms apart (at least 5 ticks
/// at 100 Hz). Needs [`PROBE`] loaded.
pub fn calibrate(ebpf: &Ebpf) -> Result<Clock, LoadError> {
    let packet = testrun::ipv4_packet([127, 0, 0, 1].into(), [127, 0, 0, 1].into(), 17, 1, 1);
    let a = edge(ebpf, &packet)?;
    std::thread::sleep(Duration::from_millis(45));
    let b = edge(ebpf, &packet)?;
    from_edges(a, b).ok_or_else(|| clock_err(CLOCK)(format!("implausible samples {a:?} and {b:?}")))
}

/// `clock` with its offset moved to put `s` (a jiffy's first sample) on its coarse time; the tick stays (pure).
pub fn at_edge(clock: Clock, s: ClockSample) -> Clock {
    Clock {
        tick_ns: clock.tick_ns,
        offset_ns: s.coarse_ns.wrapping_sub(s.jiffies.wrapping_mul(clock.tick_ns)),
    }
}

/// Re-measures the offset of `clock` at a jiffy edge and writes it when it
/// moved. CLOCK_MONOTONIC is slewed by NTP and jiffies are not, so the
/// mapping drifts (by at most 500 ppm, typically a few ppm: a fraction of a
/// second a day); the agent re-measures it on every conntrack collection,
/// which keeps the datapath's clock within a tick of the collector's.
pub fn resync(ebpf: &mut Ebpf, clock: Clock) -> Result<Clock, LoadError> {
    let packet = testrun::ipv4_packet([127, 0, 0, 1].into(), [127, 0, 0, 1].into(), 17, 1, 1);
    let next = at_edge(clock, edge(ebpf, &packet)?);
    if next != clock {
        set(ebpf, next)?;
    }
    Ok(next)
}

/// Writes `clock` for the programs of `ebpf`.
pub fn set(ebpf: &mut Ebpf, clock: Clock) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(CLOCK)
        .ok_or_else(|| clock_err(CLOCK)("not in the object".into()))?;
    let mut a: Array<&mut MapData, Clock> = Array::try_from(map).map_err(|e| clock_err(CLOCK)(e.to_string()))?;
    a.set(0, clock, 0).map_err(|e| clock_err(CLOCK)(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(jiffies: u64, coarse_ns: u64) -> ClockSample {
        ClockSample { jiffies, coarse_ns }
    }

    #[test]
    fn the_tick_is_that_of_the_nearest_hz_and_the_offset_puts_the_last_sample_on_its_time() {
        let j0 = 4_294_892_296; // INITIAL_JIFFIES at 250 Hz
        // 250 Hz, 12 ticks, 30 us of jitter between the two edges.
        let c = from_edges(s(j0 + 1000, 5_000_000_000), s(j0 + 1012, 5_048_030_000)).expect("clock");
        assert_eq!(c.tick_ns, 4_000_000);
        assert_eq!(
            (j0 + 1012).wrapping_mul(c.tick_ns).wrapping_add(c.offset_ns),
            5_048_030_000
        );
        // 300 Hz: TICK_NSEC rounds.
        let c = from_edges(s(10, 1_000_000_000), s(25, 1_050_000_010)).expect("clock");
        assert_eq!(c.tick_ns, 3_333_333);
        // 1000 Hz and 100 Hz.
        assert_eq!(
            from_edges(s(1, 7), s(46, 45_000_007)).expect("clock").tick_ns,
            1_000_000
        );
        assert_eq!(
            from_edges(s(1, 7), s(6, 50_000_107)).expect("clock").tick_ns,
            10_000_000
        );
        // Offsets wrap like the datapath's arithmetic: a boot's large jiffies.
        let c = from_edges(s(u64::MAX / 2, 0), s(u64::MAX / 2 + 5, 20_000_000)).expect("clock");
        assert_eq!(
            (u64::MAX / 2 + 5).wrapping_mul(c.tick_ns).wrapping_add(c.offset_ns),
            20_000_000
        );
    }

    #[test]
    fn a_resync_moves_the_offset_and_keeps_the_tick() {
        let c = Clock {
            tick_ns: 4_000_000,
            offset_ns: 1_000,
        };
        // CLOCK_MONOTONIC ran 2 ms ahead of jiffies (NTP slew): the sample's time is what the clock now gives.
        let s = s(500, 500 * 4_000_000 + 1_000 + 2_000_000);
        let r = at_edge(c, s);
        assert_eq!(r.tick_ns, c.tick_ns);
        assert_eq!(500u64.wrapping_mul(r.tick_ns).wrapping_add(r.offset_ns), s.coarse_ns);
    }

    #[test]
    fn samples_that_do_not_advance_give_no_clock() {
        assert_eq!(from_edges(s(5, 100), s(5, 200)), None);
        assert_eq!(from_edges(s(5, 100), s(6, 100)), None);
        assert_eq!(from_edges(s(6, 100), s(5, 200)), None);
        // 1 jiffy a second: not a kernel's HZ.
        assert_eq!(from_edges(s(5, 0), s(6, 1_000_000_000)), None);
    }
}
