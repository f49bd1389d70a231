//! Builders shared by the integration tests.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use swarm_p2p::{PeerId, RolloutMessage, SharedCompletion, SharedGroup};
use swarm_tasks::{Difficulty, families};

/// A message every node accepts for `round` when its group size is `group_size`: real generated
/// questions, so their verifiers accept their own answers.
pub fn valid_message(
    sender: PeerId,
    round: u64,
    groups: usize,
    group_size: usize,
) -> RolloutMessage {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(round);
    let groups = (0..groups)
        .map(|index| {
            let family = families::ALL[index % families::ALL.len()];
            let question = swarm_tasks::generate(family, Difficulty::default(), &mut rng);
            let completions = (0..group_size)
                .map(|completion| SharedCompletion {
                    text: format!(
                        "Thinking {completion}… <answer>{}</answer>",
                        question.answer
                    ),
                    ended: completion % 2 == 0,
                    logprobs: Vec::new(),
                })
                .collect();
            SharedGroup {
                question,
                completions,
            }
        })
        .collect();
    RolloutMessage {
        round,
        sender,
        groups,
    }
}
