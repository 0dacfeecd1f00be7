//! How one call passes a built stack: its head goes down through the layers to the stack's
//! [`End`], the call itself runs below, and its response head comes back up, while the messages
//! stay with the call.
//!
//! The call below is driven by [`run`], in the call's own task, not by the stack's end: the end only
//! hands over the head as the layers left it and waits for the answer. So the call's continuation is
//! neither boxed nor moved into shared memory, and a layer that finishes a call early (a timeout)
//! drops the call with it.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tower::{Service, ServiceExt};

use super::CallService;
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// Where one call's head meets the call below the stack.
#[derive(Default)]
struct Slot(Mutex<Meeting>);

#[derive(Default)]
struct Meeting {
    /// The head as the layers left it, until [`run`] takes it to start the call.
    head: Option<Request<()>>,
    /// Whether the end was reached; a call runs once.
    reached: bool,
    /// The call's response head, until the end's future takes it.
    answer: Option<Result<Response<()>, Status>>,
    /// [`run`], waiting for the head (a layer may call the end from another task).
    driver: Option<Waker>,
    /// The end's future, waiting for the answer.
    waiting: Option<Waker>,
    /// [`run`] is gone: the call will never answer.
    closed: bool,
}

impl Slot {
    fn meeting(&self) -> MutexGuard<'_, Meeting> {
        // Nothing panics while holding the lock, so it cannot be poisoned.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A call's slot in the request's extensions (extensions must be `Clone`, hence the `Arc`).
#[derive(Clone)]
struct Continuation(Arc<Slot>);

/// The innermost service of every stack: hands the head, as the layers left it, to the call below
/// and answers with that call's response head.
#[derive(Clone, Copy)]
pub(super) struct End;

impl Service<Request<()>> for End {
    type Response = Response<()>;
    type Error = Status;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<()>) -> Answer {
        let Some(Continuation(slot)) = req.extensions_mut().remove::<Continuation>() else {
            return Answer(Awaited::Failed(Some(Status::internal(
                "a middleware layer replaced the request's extensions and lost the call it was to run; \
                 add to the extensions rather than replacing them",
            ))));
        };
        let mut meeting = slot.meeting();
        if meeting.reached {
            return Answer(Awaited::Failed(Some(Status::internal(
                "a middleware layer ran the rest of a call twice; a call runs once (retry the whole call instead)",
            ))));
        }
        meeting.reached = true;
        meeting.head = Some(req);
        if let Some(driver) = meeting.driver.take() {
            driver.wake();
        }
        drop(meeting);
        Answer(Awaited::Call(slot))
    }
}

/// The future the stack's [`End`] returns: the call's response head, once the call below answered.
pub(super) struct Answer(Awaited);

enum Awaited {
    Call(Arc<Slot>),
    Failed(Option<Status>),
}

impl Future for Answer {
    type Output = Result<Response<()>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Awaited::Failed(status) => {
                Poll::Ready(Err(status.take().unwrap_or_else(|| Status::internal("an answer was polled twice"))))
            }
            Awaited::Call(slot) => {
                let mut meeting = slot.meeting();
                if let Some(answer) = meeting.answer.take() {
                    return Poll::Ready(answer);
                }
                if meeting.closed {
                    return Poll::Ready(Err(Status::cancelled("the call ended before its middleware did")));
                }
                match &mut meeting.waiting {
                    Some(waker) => waker.clone_from(cx.waker()),
                    none => *none = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// Closes the slot when [`run`] ends or is dropped, so an end still waiting (on another task) is
/// not left waiting for ever.
struct Closing(Arc<Slot>);

impl Drop for Closing {
    fn drop(&mut self) {
        let mut meeting = self.0.meeting();
        meeting.closed = true;
        if let Some(waiting) = meeting.waiting.take() {
            waiting.wake();
        }
    }
}

/// Runs one call's head through `stack`, down to `next`, which runs the call itself with the head as
/// the layers left it and returns the response head and body; the body passes the layers aside.
pub(crate) async fn run<F, Fut, T>(
    stack: CallService,
    mut head: Request<()>,
    next: F,
) -> Result<(Response<()>, T), Status>
where
    F: FnOnce(Request<()>) -> Fut,
    Fut: Future<Output = Result<(Response<()>, T), Status>>,
{
    let slot = Closing(Arc::new(Slot::default()));
    head.extensions_mut().insert(Continuation(slot.0.clone()));
    let mut through = pin!(stack.oneshot(head));
    let mut below = pin!(None::<Fut>);
    let (mut next, mut body, mut answered) = (Some(next), None, false);
    let head = poll_fn(|cx| {
        loop {
            if let Poll::Ready(head) = through.as_mut().poll(cx) {
                return Poll::Ready(head);
            }
            if answered {
                return Poll::Pending;
            }
            if below.is_none() {
                let mut meeting = slot.0.meeting();
                let Some(head) = meeting.head.take() else {
                    match &mut meeting.driver {
                        Some(waker) => waker.clone_from(cx.waker()),
                        none => *none = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                };
                drop(meeting);
                let next = next.take().expect("the end takes a call's head once");
                below.set(Some(next(head)));
            }
            let Some(call) = below.as_mut().as_pin_mut() else { unreachable!("the call was just started") };
            let Poll::Ready(outcome) = call.poll(cx) else { return Poll::Pending };
            below.set(None);
            answered = true;
            let answer = outcome.map(|(head, rest)| {
                body = Some(rest);
                head
            });
            let mut meeting = slot.0.meeting();
            meeting.answer = Some(answer);
            // The end's future is usually polled in this very task, by `through` below: polling it
            // again here spares the task a wake-up.
            let elsewhere = meeting.waiting.take().filter(|waker| !waker.will_wake(cx.waker()));
            drop(meeting);
            if let Some(waker) = elsewhere {
                waker.wake();
            }
        }
    })
    .await?;
    let body = body.ok_or_else(|| {
        Status::internal(
            "a middleware layer answered a call without running it; a layer may refuse a call with a \
             Status, not invent its response",
        )
    })?;
    Ok((head, body))
}
