//! A stream of answer events that meters itself exactly once: on normal completion, when
//! the upstream breaks, or when the client goes away and the stream is dropped. When the
//! upstream reported no (or not final) usage, tokens are estimated from what was actually
//! generated, so an interrupted or usage-less stream is never recorded as free.

use crate::error::GatewayError;
use crate::to_i64;
use crate::upstream::EventRx;
use berth_core::TenantScope;
use berth_llm::tokens::estimate_text;
use berth_llm::{StreamEvent, Usage};
use berth_meter::{Price, UsageRecorder};
use berth_store::UsageEvent;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub struct MeteredStream {
    rx: EventRx,
    recorder: UsageRecorder,
    scope: TenantScope,
    event: Option<UsageEvent>,
    price: Option<Price>,
    input_estimate: u64,
    started: Instant,
    reported: Option<Usage>,
    generated_chars: String,
    finished: bool,
    /// Called once with the cost when the stream is charged (budget settlement).
    on_charged: Option<Box<dyn FnOnce(berth_core::NanoUsd) + Send>>,
}

impl MeteredStream {
    pub(crate) fn new(
        rx: EventRx,
        recorder: UsageRecorder,
        scope: TenantScope,
        event: UsageEvent,
        price: Option<Price>,
        input_estimate: u64,
        started: Instant,
    ) -> Self {
        MeteredStream {
            rx,
            recorder,
            scope,
            event: Some(event),
            price,
            input_estimate,
            started,
            reported: None,
            generated_chars: String::new(),
            finished: false,
            on_charged: None,
        }
    }

    /// Calls `f` with the cost once the stream is charged.
    pub(crate) fn on_charged(mut self, f: Box<dyn FnOnce(berth_core::NanoUsd) + Send>) -> Self {
        self.on_charged = Some(f);
        self
    }

    /// The usage charged so far (final once the stream has ended).
    pub fn usage(&self) -> (Usage, bool) {
        let estimated_output = estimate_text(&self.generated_chars);
        match self.reported {
            // A finished stream with a report: the report is the truth.
            Some(u) if self.finished && u.output_tokens > 0 => (u, false),
            // Otherwise take the larger of what was reported and what was seen.
            Some(u) => (
                Usage {
                    output_tokens: u.output_tokens.max(estimated_output),
                    ..u
                },
                estimated_output > u.output_tokens,
            ),
            None => (
                Usage {
                    input_tokens: self.input_estimate,
                    output_tokens: estimated_output,
                    cached_input_tokens: 0,
                },
                true,
            ),
        }
    }

    /// The cost of [`MeteredStream::usage`].
    pub fn cost(&self) -> berth_core::NanoUsd {
        let (u, _) = self.usage();
        self.price.map_or(berth_core::NanoUsd(0), |p| {
            p.cost(u.input_tokens, u.output_tokens, u.cached_input_tokens)
        })
    }

    fn record(&mut self, status: &str) {
        let Some(mut ev) = self.event.take() else {
            return;
        };
        let (usage, estimated) = self.usage();
        ev.input_tokens = to_i64(usage.input_tokens);
        ev.output_tokens = to_i64(usage.output_tokens);
        ev.cached_input_tokens = to_i64(usage.cached_input_tokens);
        ev.cost_nano = self.cost().0;
        ev.latency_ms = to_i64(self.started.elapsed().as_millis() as u64);
        ev.status = status.to_owned();
        ev.streamed = true;
        ev.estimated = estimated;
        let cost = berth_core::NanoUsd(ev.cost_nano);
        self.recorder.record_detached(&self.scope, ev);
        if let Some(f) = self.on_charged.take() {
            f(cost);
        }
    }

    fn observe(&mut self, e: &StreamEvent) {
        match e {
            StreamEvent::TextDelta { text } => self.generated_chars.push_str(text),
            StreamEvent::ToolCallStart { name, .. } => self.generated_chars.push_str(name),
            StreamEvent::ToolCallDelta { arguments, .. } => {
                self.generated_chars.push_str(arguments)
            }
            StreamEvent::Usage { usage } => self.reported = Some(*usage),
            _ => {}
        }
    }
}

impl futures_util::Stream for MeteredStream {
    type Item = Result<StreamEvent, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.event.is_none() {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(e))) => {
                self.observe(&e);
                Poll::Ready(Some(Ok(e)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.record("upstream_broken");
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.finished = true;
                self.record("ok");
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        // Still unrecorded: the consumer stopped reading before the end.
        self.record("client_disconnected");
    }
}
