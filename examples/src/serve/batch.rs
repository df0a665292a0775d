//! The streaming engine's multi-sequence [`BatchEngine`] behind the step loop.

use crate::engine::{BatchEngine, FinishReason, SeqEvent, SeqId, SeqRequest};

use super::scheduler::{Finish, Job, StepEngine, StepEvent};

impl StepEngine for BatchEngine {
    fn add(&mut self, job: Job) -> Result<u64, String> {
        BatchEngine::add(
            self,
            SeqRequest {
                prompt: job.prompt,
                sampler: job.sampler,
                max_new_tokens: job.max_new_tokens,
                stop_tokens: job.stop_tokens,
            },
        )
        .map(|id| id.0)
        .map_err(|e| e.to_string())
    }

    fn cancel(&mut self, seq: u64) {
        BatchEngine::cancel(self, SeqId(seq));
    }

    fn step(&mut self) -> Result<Vec<StepEvent>, String> {
        let events = BatchEngine::step(self).map_err(|e| e.to_string())?;
        Ok(events
            .into_iter()
            .filter_map(|e| match e {
                SeqEvent::Token { id, token } => Some(StepEvent::Token { seq: id.0, token }),
                SeqEvent::Finished { id, reason, .. } => {
                    let finish = match reason {
                        FinishReason::Stop => Finish::Stop,
                        FinishReason::Length => Finish::Length,
                        // The scheduler asked for it and already let the request go.
                        FinishReason::Cancelled => return None,
                    };
                    Some(StepEvent::Finished { seq: id.0, finish })
                }
            })
            .collect())
    }

    fn active(&self) -> usize {
        BatchEngine::active(self)
    }

    fn max_seqs(&self) -> usize {
        BatchEngine::max_seqs(self)
    }

    fn kv_usage(&self) -> (usize, usize, u64) {
        BatchEngine::kv_usage(self)
    }

    fn tier_bytes(&self) -> [u64; 3] {
        let s = self.stats();
        s.bytes_per_pass.map(|b| b * s.passes)
    }
}
