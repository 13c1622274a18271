//! The choice of an instance for one attempt, and the record of how the attempt went.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mercato_resilience::ResilienceError;
use mercato_resilience::circuit_breaker::Permit;

use super::{Group, Instance, Upstream, Upstreams, balancer};

/// The instance an attempt goes to, with its breaker's leave; dropping it without
/// [`finish`](Self::finish) (the caller gave up) records nothing against the instance.
#[derive(Debug)]
pub struct Pick {
    pub instance: Arc<Instance>,
    upstream: Arc<Upstream>,
    group: Group,
    permit: Option<Permit>,
    started: Instant,
    outcome: Option<bool>,
}

impl Pick {
    /// Reports the attempt: `failure` counts against the instance (breaker, estimate, stats).
    pub fn finish(mut self, failure: bool) {
        if let Some(permit) = self.permit.take() {
            permit.record(failure);
        }
        self.outcome = Some(failure);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.instance
            .finish(self.outcome.map(|failure| (elapsed, failure)));
        if let Some(failure) = self.outcome {
            let outcomes = &self.upstream.outcomes[self.group.index()];
            if failure {
                outcomes.failure.inc();
            } else {
                outcomes.success.inc();
            }
        }
    }
}

impl Upstreams {
    /// The instance for one attempt at `name`; see the module docs.
    ///
    /// # Errors
    /// [`ResilienceError::CircuitOpen`] when every candidate's breaker refuses, with the soonest
    /// time one may admit again; `Ok(None)` for an unknown upstream.
    pub fn pick<E>(&self, name: &str) -> Result<Option<Pick>, ResilienceError<E>> {
        self.pick_avoiding(name, &[])
    }

    /// As [`Upstreams::pick`], passing over the instances in `failed` (those that already failed
    /// this request) while another candidate is left: a retry goes elsewhere, not back to an
    /// instance that has just died but whose health check has not noticed yet.
    ///
    /// # Errors
    /// As [`Upstreams::pick`].
    pub fn pick_avoiding<E>(
        &self,
        name: &str,
        failed: &[Arc<Instance>],
    ) -> Result<Option<Pick>, ResilienceError<E>> {
        let Some(upstream) = self.map.get(name) else {
            return Ok(None);
        };
        let mut rng = rand::thread_rng();
        let green_percent = upstream.green_percent.load(Ordering::Relaxed);
        let wanted = if green_percent > 0 && rand::Rng::gen_range(&mut rng, 0..100u8) < green_percent {
            Group::Green
        } else {
            Group::Blue
        };
        let mut group = wanted;
        let mut instances = upstream.instances(group);
        if instances.is_empty() {
            group = group.other();
            instances = upstream.instances(group);
        }
        let untried = |i: &&Arc<Instance>| !failed.iter().any(|f| Arc::ptr_eq(f, i));
        if !failed.is_empty() && instances.iter().any(|i| untried(&i)) {
            instances = Arc::new(instances.iter().filter(untried).cloned().collect());
        }
        let candidates: Vec<&Arc<Instance>> = if instances.iter().all(|i| i.is_healthy()) {
            instances.iter().collect()
        } else {
            let healthy: Vec<_> = instances.iter().filter(|i| i.is_healthy()).collect();
            if healthy.is_empty() {
                instances.iter().collect()
            } else {
                healthy
            }
        };
        let order = if candidates.len() == 1 {
            vec![0]
        } else {
            let turn = upstream.turn.fetch_add(1, Ordering::Relaxed);
            balancer::preference(
                self.policy,
                candidates.len(),
                turn,
                |i| candidates[i].load_score(),
                &mut rng,
            )
        };
        let mut refusal = None;
        for i in order {
            let instance = candidates[i];
            match instance.breaker.try_acquire::<E>() {
                Ok(permit) => {
                    instance.start();
                    return Ok(Some(Pick {
                        instance: Arc::clone(instance),
                        upstream: Arc::clone(upstream),
                        group,
                        permit: Some(permit),
                        started: Instant::now(),
                        outcome: None,
                    }));
                }
                Err(ResilienceError::CircuitOpen { retry_after, .. }) => {
                    let soonest = refusal.map_or(retry_after, |r: Duration| r.min(retry_after));
                    refusal = Some(soonest);
                }
                Err(other) => return Err(other),
            }
        }
        Err(ResilienceError::CircuitOpen {
            name: upstream.name.as_str().into(),
            retry_after: refusal.unwrap_or(Duration::from_secs(1)),
        })
    }
}
