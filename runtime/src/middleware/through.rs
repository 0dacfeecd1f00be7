//! How one call passes its middleware: its head goes through the interceptors that run ahead of
//! the tower stack, then down through the layers to the stack's [`End`]; the call itself runs below,
//! and its response head comes back up, while the messages stay with the call.
//!
//! The call below is driven by [`run`], in the call's own task, not by the stack's end: the end only
//! hands over the head as the layers left it and waits for the answer. So the rest of the call is
//! neither boxed nor moved into shared memory per call, and a layer that gives up on the end (a
//! timeout) stops the call with it.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tower::Service;

use super::CallService;
use super::interceptor::{Check, check};
use tonic::Request;
use tonic::Response;
use tonic::Status;

/// Where one call's head meets the call below the stack.
#[derive(Default)]
struct Slot {
    meeting: Mutex<Meeting>,
    /// The end's future was dropped before it took the answer: no layer waits for the call below.
    abandoned: AtomicBool,
}

#[derive(Default)]
struct Meeting {
    /// The head as the layers left it, until [`run`] takes it to start the call.
    head: Option<Request<()>>,
    /// Whether the end was reached; a call runs once.
    reached: bool,
    /// The call's response head, until the end's future takes it.
    answer: Option<Result<Response<()>, Status>>,
    /// [`run`], waiting for the head or for the end to be given up (a layer may call the end, and
    /// poll or drop its future, on another task).
    driver: Option<Waker>,
    /// The end's future, waiting for the answer.
    waiting: Option<Waker>,
    /// [`run`] is gone: the call will never answer.
    closed: bool,
}

impl Slot {
    fn meeting(&self) -> MutexGuard<'_, Meeting> {
        // Wakers are woken after the guard is dropped and nothing else here can panic, so the lock
        // is never poisoned; if it were, the state it guards is still whole.
        self.meeting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps `waker` in `slot`, cloning only if it would wake a different task.
fn remember(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) => kept.clone_from(waker),
        none => *none = Some(waker.clone()),
    }
}

/// A call's slot in the request's extensions (extensions must be `Clone`, hence the `Arc`).
#[derive(Clone)]
struct SlotRef(Arc<Slot>);

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
        let Some(SlotRef(slot)) = req.extensions_mut().remove::<SlotRef>() else {
            return Answer(Awaited::Failed(Some(Status::internal(
                "a middleware layer replaced the request's extensions and lost the call it was to run; \
                 add to the extensions rather than replacing them",
            ))));
        };
        let mut meeting = slot.meeting();
        if meeting.reached {
            return Answer(Awaited::Failed(Some(Status::internal(
                "a middleware layer ran the rest of a call twice; a call runs once (a client retries whole calls)",
            ))));
        }
        meeting.reached = true;
        meeting.head = Some(req);
        let driver = meeting.driver.take();
        drop(meeting);
        if let Some(driver) = driver {
            driver.wake();
        }
        Answer(Awaited::Call(slot))
    }
}

/// The future the stack's [`End`] returns: the call's response head, once the call below answered.
pub(super) struct Answer(Awaited);

enum Awaited {
    Call(Arc<Slot>),
    Failed(Option<Status>),
    Taken,
}

impl Future for Answer {
    type Output = Result<Response<()>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = match &mut this.0 {
            Awaited::Taken => Err(Status::internal("a middleware layer polled the end of its stack after it answered")),
            Awaited::Failed(status) => Err(status.take().expect("a failed end answers once")),
            Awaited::Call(slot) => {
                let mut meeting = slot.meeting();
                match meeting.answer.take() {
                    Some(answer) => answer,
                    None if meeting.closed => Err(Status::cancelled("the call ended before its middleware did")),
                    None => {
                        remember(&mut meeting.waiting, cx.waker());
                        return Poll::Pending;
                    }
                }
            }
        };
        this.0 = Awaited::Taken;
        Poll::Ready(answer)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let Awaited::Call(slot) = &self.0 else { return };
        slot.abandoned.store(true, Ordering::Release);
        let driver = slot.meeting().driver.take();
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

/// Closes the slot when [`run`] ends or is dropped, so an end still waiting (on another task) is
/// not left waiting for ever.
struct Closing(Arc<Slot>);

impl Drop for Closing {
    fn drop(&mut self) {
        let waiting = {
            let mut meeting = self.0.meeting();
            meeting.closed = true;
            meeting.waiting.take()
        };
        if let Some(waiting) = waiting {
            waiting.wake();
        }
    }
}

/// What became of the call below the stack.
enum Below {
    /// Not started: the head has not reached the end.
    Waiting,
    Running,
    /// It answered with its response head (the body kept aside), or with this status.
    Answered(Result<(), tonic::Code>),
    /// The end's future was dropped before the call answered, and the call with it.
    Abandoned,
}

/// Runs one call's head through `checks`, then through `stack` down to `next`, which runs the call
/// itself with the head as the layers left it and returns the response head and body; the body
/// passes the layers aside.
pub(crate) async fn run<F, Fut, T>(
    checks: &[Check],
    stack: CallService,
    head: Request<()>,
    next: F,
) -> Result<(Response<()>, T), Status>
where
    F: FnOnce(Request<()>) -> Fut,
    Fut: Future<Output = Result<(Response<()>, T), Status>>,
{
    let mut head = check(checks, head).await?;
    let slot = Closing(Arc::new(Slot::default()));
    head.extensions_mut().insert(SlotRef(slot.0.clone()));
    let (mut stack, mut head) = (stack, Some(head));
    // The stack's future is boxed (so `Unpin`): held here rather than in a `oneshot`, it costs no
    // state machine of its own.
    let mut through = None;
    let mut call = pin!(None::<Fut>);
    let (mut next, mut body, mut below) = (Some(next), None, Below::Waiting);
    let head = poll_fn(|cx| {
        loop {
            let stacked = match &mut through {
                Some(stacked) => stacked,
                None => {
                    if let Err(status) = std::task::ready!(stack.poll_ready(cx)) {
                        return Poll::Ready(Err(status));
                    }
                    through.insert(stack.call(head.take().expect("the stack is called once")))
                }
            };
            if let Poll::Ready(head) = Pin::new(stacked).poll(cx) {
                return Poll::Ready(head);
            }
            match below {
                Below::Waiting => {
                    let mut meeting = slot.0.meeting();
                    let Some(head) = meeting.head.take() else {
                        remember(&mut meeting.driver, cx.waker());
                        return Poll::Pending;
                    };
                    remember(&mut meeting.driver, cx.waker());
                    drop(meeting);
                    let next = next.take().expect("the end takes a call's head once");
                    call.set(Some(next(head)));
                    below = Below::Running;
                }
                Below::Running => {}
                Below::Answered(_) => {
                    // The end's future may be polled beside this one in the same task, not by the
                    // stack: then nothing took the answer, and it must be woken after all.
                    let unclaimed = {
                        let mut meeting = slot.0.meeting();
                        if meeting.answer.is_some() { meeting.waiting.take() } else { None }
                    };
                    if let Some(waker) = unclaimed {
                        waker.wake();
                    }
                    return Poll::Pending;
                }
                Below::Abandoned => return Poll::Pending,
            }
            if slot.0.abandoned.load(Ordering::Acquire) {
                call.set(None);
                below = Below::Abandoned;
                continue;
            }
            let Some(running) = call.as_mut().as_pin_mut() else { unreachable!("the call was just started") };
            let Poll::Ready(outcome) = running.poll(cx) else { return Poll::Pending };
            call.set(None);
            let answer = outcome.map(|(head, rest)| {
                body = Some(rest);
                head
            });
            below = Below::Answered(answer.as_ref().map(|_| ()).map_err(Status::code));
            let mut meeting = slot.0.meeting();
            meeting.answer = Some(answer);
            // The end's future is usually polled by the stack, in this very task, on the loop's
            // next turn: waking this task for it would cost a needless poll of the whole call.
            let elsewhere = match &meeting.waiting {
                Some(waker) if !waker.will_wake(cx.waker()) => meeting.waiting.take(),
                _ => None,
            };
            drop(meeting);
            if let Some(waker) = elsewhere {
                waker.wake();
            }
        }
    })
    .await?;
    match (below, body) {
        // An end dropped before it took the answer: the layer answered without it.
        (Below::Answered(Ok(())), Some(body)) if !slot.0.abandoned.load(Ordering::Acquire) => Ok((head, body)),
        (Below::Answered(Err(code)), _) => Err(Status::internal(format!(
            "a middleware layer answered a call that failed below it ({code:?}) with a response; a layer \
             may change a failed call's status, not turn it into a response"
        ))),
        (Below::Waiting, _) => Err(Status::internal(
            "a middleware layer answered a call without running it; a layer may refuse a call with a \
             Status, not invent its response",
        )),
        _ => Err(Status::internal(
            "a middleware layer answered a call before the call below it did; a layer may end a call \
             with a Status, not invent its response",
        )),
    }
}
