//! Picking the family of the next procedural question by the configured weights.

use rand::Rng;

use crate::families::{self, ALL};
use crate::{Difficulty, Question, TaskError, TaskFamily, TaskWeight};

/// Draws families in proportion to their [`TaskWeight`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilySampler {
    /// Families with a positive total weight and the running sum of the weights up to each.
    cumulative: Vec<(TaskFamily, u64)>,
}

impl FamilySampler {
    /// Every family equally when `weights` is empty, as the node configuration documents; a family listed
    /// twice gets the sum of its weights. Weights that are all zero leave nothing to draw, an error.
    pub fn new(weights: &[TaskWeight]) -> Result<Self, TaskError> {
        let totals: Vec<(TaskFamily, u64)> = if weights.is_empty() {
            ALL.iter().map(|family| (*family, 1)).collect()
        } else {
            ALL.iter()
                .map(|family| {
                    let total = weights
                        .iter()
                        .filter(|w| w.family == *family)
                        .map(|w| u64::from(w.weight))
                        .sum();
                    (*family, total)
                })
                .collect()
        };
        let mut sum = 0;
        let cumulative: Vec<(TaskFamily, u64)> = totals
            .into_iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(family, weight)| {
                sum += weight;
                (family, sum)
            })
            .collect();
        if cumulative.is_empty() {
            return Err(TaskError::NoTaskFamilies);
        }
        Ok(Self { cumulative })
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> TaskFamily {
        let total = self.cumulative.last().map_or(1, |(_, sum)| *sum);
        let draw = rand::RngExt::random_range(rng, 0..total);
        self.cumulative
            .iter()
            .find(|(_, sum)| draw < *sum)
            .map_or(ALL[0], |(family, _)| *family)
    }

    /// A question of a sampled family.
    pub fn question<R: Rng + ?Sized>(&self, difficulty: Difficulty, rng: &mut R) -> Question {
        let family = self.sample(rng);
        families::generate(family, difficulty, rng)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    fn counts(sampler: &FamilySampler) -> HashMap<TaskFamily, u32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut counts = HashMap::new();
        for _ in 0..6000 {
            *counts.entry(sampler.sample(&mut rng)).or_default() += 1;
        }
        counts
    }

    #[test]
    fn empty_weights_mean_every_family_equally() {
        let counts = counts(&FamilySampler::new(&[]).unwrap());
        assert_eq!(counts.len(), ALL.len());
        assert!(
            counts.values().all(|n| (800..1200).contains(n)),
            "{counts:?}"
        );
    }

    #[test]
    fn weights_are_proportions() {
        let weights = [
            TaskWeight {
                family: TaskFamily::BaseConversion,
                weight: 3,
            },
            TaskWeight {
                family: TaskFamily::PropositionalLogic,
                weight: 1,
            },
            TaskWeight {
                family: TaskFamily::CalendarArithmetic,
                weight: 0,
            },
        ];
        let counts = counts(&FamilySampler::new(&weights).unwrap());
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(
            (4200..4800).contains(&counts[&TaskFamily::BaseConversion]),
            "{counts:?}"
        );
    }

    #[test]
    fn all_zero_weights_are_refused() {
        let weights = [TaskWeight {
            family: TaskFamily::BaseConversion,
            weight: 0,
        }];
        assert!(FamilySampler::new(&weights).is_err());
    }

    #[test]
    fn questions_come_from_sampled_families() {
        let sampler = FamilySampler::new(&[TaskWeight {
            family: TaskFamily::FractionSimplification,
            weight: 1,
        }])
        .unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let q = sampler.question(Difficulty::default(), &mut rng);
        assert_eq!(q.family(), Some(TaskFamily::FractionSimplification));
    }
}
