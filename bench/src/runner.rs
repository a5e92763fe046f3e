//! Runs a comparison: every system of it in the same process run, repetitions alternated
//! between systems (A B A B …, so that a machine whose speed drifts affects all of them alike),
//! progress on stderr, and a summary per system: median, min, max, the ratio to the first
//! system, and the share of the system's kernel limit when the comparison has one.

use crate::machine;
use crate::report::{self, si};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C (or SIGTERM): measurements end early and the runner stops between them.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag that Ctrl-C and SIGTERM set.
    pub fn on_ctrl_c() -> Result<Stop, ctrlc::Error> {
        let stop = Stop::default();
        let flag = stop.clone();
        ctrlc::set_handler(move || {
            if flag.requested() {
                eprintln!("\ninterrupted again: exiting now");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the current measurement");
            flag.request();
        })?;
        Ok(stop)
    }

    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The detail every sample gets: seconds of CPU the hypervisor took from this machine while
/// the sample ran ([`machine::stolen_cpu`]).
pub const STOLEN_CPU: &str = "stolen_cpu_s";

/// What a comparison measures.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

/// One measurement of one system.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// The figure the comparison ranks by, in the metric's unit.
    pub value: f64,
    /// Other figures of the same run (offered load, loss, percentiles …).
    pub details: BTreeMap<String, f64>,
    /// Which side held the run back, when the system can tell.
    pub limited_by: Option<String>,
}

/// Something measured: an engine, or a bare kernel path that is the engines' limit.
pub trait System {
    fn name(&self) -> String;
    /// The name of the system of the same comparison that is this one's kernel limit.
    fn limit(&self) -> Option<String> {
        None
    }
    fn measure(&mut self) -> io::Result<Sample>;
}

pub struct Comparison<'a> {
    pub title: String,
    pub metric: Metric,
    pub systems: Vec<Box<dyn System + 'a>>,
}

/// One system's figures over every repetition.
#[derive(Clone, Debug, Serialize)]
pub struct SystemResult {
    pub name: String,
    pub samples: Vec<Sample>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The median of each detail over the samples.
    pub details: BTreeMap<String, f64>,
    /// The most frequent verdict over the samples.
    pub limited_by: Option<String>,
    /// This system's median over the first system's.
    pub ratio_to_first: f64,
    pub limit: Option<String>,
    /// This system's median over its kernel limit's (when it has one).
    pub share_of_limit: Option<f64>,
    /// Why the system could not be measured (its samples stop there).
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComparisonResult {
    pub title: String,
    pub metric: Metric,
    pub repetitions: usize,
    pub systems: Vec<SystemResult>,
}

impl ComparisonResult {
    pub fn system(&self, name: &str) -> Option<&SystemResult> {
        self.systems.iter().find(|s| s.name == name)
    }
}

/// Measures every system `repetitions` times, alternating, then prints and returns the
/// summary. A stop request ends the run between measurements, keeping what was measured; a
/// system whose measurement fails is not measured again, and its row says why.
pub fn run(mut comparison: Comparison<'_>, repetitions: usize, stop: &Stop) -> ComparisonResult {
    let names: Vec<String> = comparison.systems.iter().map(|s| s.name()).collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); names.len()];
    let mut errors: Vec<Option<String>> = vec![None; names.len()];
    'reps: for rep in 1..=repetitions {
        for (i, system) in comparison.systems.iter_mut().enumerate() {
            if stop.requested() {
                break 'reps;
            }
            if errors[i].is_some() {
                continue;
            }
            eprint!(
                "  {} | {} | repetition {rep}/{repetitions} … ",
                comparison.title, names[i]
            );
            let stolen_before = machine::stolen_cpu();
            match system.measure() {
                Ok(_) if stop.requested() => {
                    eprintln!("interrupted (not counted)");
                }
                Ok(mut sample) => {
                    if let (Some(before), Some(after)) = (stolen_before, machine::stolen_cpu()) {
                        let stolen = after.saturating_sub(before).as_secs_f64();
                        sample.details.insert(STOLEN_CPU.into(), stolen);
                    }
                    eprintln!("{}", si(sample.value, comparison.metric.unit));
                    samples[i].push(sample);
                }
                // One system that cannot run here (say, io_uring forbidden) leaves the others.
                Err(e) => {
                    eprintln!("failed: {e}");
                    errors[i] = Some(e.to_string());
                }
            }
        }
    }
    let limits: Vec<Option<String>> = comparison.systems.iter().map(|s| s.limit()).collect();
    let mut result = summarise(
        comparison.title,
        comparison.metric,
        repetitions,
        names,
        samples,
        limits,
    );
    for (system, error) in result.systems.iter_mut().zip(errors) {
        system.error = error;
    }
    report::print_comparison(&result);
    result
}

fn summarise(
    title: String,
    metric: Metric,
    repetitions: usize,
    names: Vec<String>,
    samples: Vec<Vec<Sample>>,
    limits: Vec<Option<String>>,
) -> ComparisonResult {
    let medians: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().map(|x| x.value).collect()))
        .collect();
    let first = medians.first().copied().unwrap_or(f64::NAN);
    let systems = names
        .iter()
        .zip(samples)
        .zip(limits)
        .enumerate()
        .map(|(i, ((name, samples), limit))| {
            let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
            let share_of_limit = limit
                .as_ref()
                .and_then(|l| names.iter().position(|n| n == l))
                .map(|j| medians[i] / medians[j]);
            SystemResult {
                name: name.clone(),
                median: medians[i],
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                details: detail_medians(&samples),
                limited_by: most_frequent(samples.iter().filter_map(|s| s.limited_by.clone())),
                ratio_to_first: medians[i] / first,
                limit,
                share_of_limit,
                error: None,
                samples,
            }
        })
        .collect();
    ComparisonResult {
        title,
        metric,
        repetitions,
        systems,
    }
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn detail_medians(samples: &[Sample]) -> BTreeMap<String, f64> {
    let keys: std::collections::BTreeSet<&String> =
        samples.iter().flat_map(|s| s.details.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let values = samples.iter().filter_map(|s| s.details.get(k).copied());
            (k.clone(), median(values.collect()))
        })
        .collect()
}

fn most_frequent(items: impl Iterator<Item = String>) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        name: &'static str,
        values: Vec<f64>,
        limit: Option<&'static str>,
    }

    impl System for Fixed {
        fn name(&self) -> String {
            self.name.to_string()
        }
        fn limit(&self) -> Option<String> {
            self.limit.map(str::to_string)
        }
        fn measure(&mut self) -> io::Result<Sample> {
            Ok(Sample {
                value: self.values.remove(0),
                ..Sample::default()
            })
        }
    }

    const RATE: Metric = Metric {
        name: "throughput",
        unit: "pkt/s",
        higher_is_better: true,
    };

    #[test]
    fn medians_ratios_and_shares_of_the_limit() {
        let comparison = Comparison {
            title: "t".into(),
            metric: RATE,
            systems: vec![
                Box::new(Fixed {
                    name: "engine",
                    values: vec![10.0, 30.0, 20.0],
                    limit: Some("kernel"),
                }),
                Box::new(Fixed {
                    name: "kernel",
                    values: vec![80.0, 100.0, 90.0],
                    limit: None,
                }),
            ],
        };
        let r = run(comparison, 3, &Stop::default());
        let engine = r.system("engine").unwrap();
        assert_eq!((engine.median, engine.min, engine.max), (20.0, 10.0, 30.0));
        assert_eq!(engine.share_of_limit, Some(20.0 / 90.0));
        assert_eq!(r.system("kernel").unwrap().ratio_to_first, 4.5);
    }

    #[test]
    fn a_stop_request_keeps_what_was_measured() {
        let stop = Stop::default();
        stop.request();
        let comparison = Comparison {
            title: "t".into(),
            metric: RATE,
            systems: vec![Box::new(Fixed {
                name: "engine",
                values: vec![1.0],
                limit: None,
            })],
        };
        let r = run(comparison, 1, &stop);
        assert!(r.systems[0].samples.is_empty());
        assert!(r.systems[0].median.is_nan());
    }

    struct Broken;

    impl System for Broken {
        fn name(&self) -> String {
            "broken".into()
        }
        fn measure(&mut self) -> io::Result<Sample> {
            Err(io::Error::other("not here"))
        }
    }

    #[test]
    fn a_failing_system_leaves_the_others_measured() {
        let comparison = Comparison {
            title: "t".into(),
            metric: RATE,
            systems: vec![
                Box::new(Broken),
                Box::new(Fixed {
                    name: "engine",
                    values: vec![1.0, 2.0],
                    limit: None,
                }),
            ],
        };
        let r = run(comparison, 2, &Stop::default());
        assert_eq!(r.systems[0].error.as_deref(), Some("not here"));
        assert_eq!(r.systems[1].samples.len(), 2);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
