//! A producer with its open loan, and a consumer with its current frame, kept together across
//! Python calls.
//!
//! [`SlotMut`] and [`Frame`] borrow their producer or consumer mutably for as long as they
//! live, which is what makes the Rust API safe: nothing else touches the channel end while a
//! slot is being written or a frame is held. A Python object cannot hold a borrow, so each cell
//! here owns its channel end on the heap (through a raw pointer, so that owning it asserts no
//! uniqueness while the borrow lives) together with at most one borrow of it, and enforces the
//! borrow rule at run time: while the loan (or frame) exists, the channel end is reached only
//! through it.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::time::Duration;

use labhub::client::{ConsumeError, ShmConsumer, ShmProducer};
use labhub::shm::{Consumer, Dynamic, Frame, Producer, PublishError, ReadError, SlotMut};

/// A producer, brokerless or registered with a Hub.
pub enum AnyProducer {
    /// Brokerless.
    Local(Producer<Dynamic>),
    /// Registered with the broker.
    Hub(ShmProducer<Dynamic>),
}

impl AnyProducer {
    /// The shared-memory producer inside.
    pub fn shm(&mut self) -> &mut Producer<Dynamic> {
        match self {
            Self::Local(p) => p,
            Self::Hub(p) => p.producer(),
        }
    }

    fn loan(&mut self, shape: Option<&[u64]>) -> Result<SlotMut<'_, Dynamic>, PublishError> {
        match (self, shape) {
            (Self::Local(p), None) => p.loan(),
            (Self::Local(p), Some(s)) => p.loan_shape(s),
            (Self::Hub(p), None) => p.loan(),
            (Self::Hub(p), Some(s)) => p.loan_shape(s),
        }
    }
}

/// A consumer, brokerless or attached through a Hub (boxed once, in [`FrameCell`]).
#[allow(clippy::large_enum_variant)]
pub enum AnyConsumer {
    /// Brokerless.
    Local(Consumer<Dynamic>),
    /// Attached at the broker (resumes by itself).
    Hub(ShmConsumer<Dynamic>),
}

/// Why a read through [`FrameCell::next`] failed.
pub enum NextError {
    /// A brokerless read.
    Read(ReadError),
    /// A read through the Hub.
    Consume(ConsumeError),
}

impl AnyConsumer {
    /// The shared-memory consumer inside.
    pub fn shm(&mut self) -> &mut Consumer<Dynamic> {
        match self {
            Self::Local(c) => c,
            Self::Hub(c) => c.consumer(),
        }
    }

    fn next(&mut self, timeout: Duration) -> Result<Frame<'_, Dynamic>, NextError> {
        match self {
            Self::Local(c) => c.next(Some(timeout)).map_err(NextError::Read),
            Self::Hub(c) => c.next(Some(timeout)).map_err(NextError::Consume),
        }
    }

    fn latest(&mut self) -> Result<Option<Frame<'_, Dynamic>>, NextError> {
        self.shm().latest().map_err(NextError::Read)
    }
}

/// A producer and its open loan, if any.
pub struct LoanCell {
    /// Owned: made by `Box::into_raw` in [`LoanCell::new`], freed in `Drop`.
    producer: NonNull<AnyProducer>,
    /// Borrows `*producer` mutably. Declared `'static`; really it lives until it is taken out
    /// of this field, which happens before the producer is freed (see `Drop`).
    loan: Option<SlotMut<'static, Dynamic>>,
}

// SAFETY: the cell owns the producer and the loan borrowing it, and moves them between threads
// together; `Producer` and `ShmProducer` are `Send`, and so is a `SlotMut` (a `&mut` to a
// `Send + Sync` producer with plain data).
unsafe impl Send for LoanCell {}

impl LoanCell {
    /// A cell owning `producer`, with no loan.
    pub fn new(producer: AnyProducer) -> Self {
        Self {
            producer: NonNull::from(Box::leak(Box::new(producer))),
            loan: None,
        }
    }

    /// The producer, if no loan is open (an open loan has it borrowed).
    pub fn producer(&mut self) -> Option<&mut AnyProducer> {
        if self.loan.is_some() {
            return None;
        }
        // SAFETY: the pointer came from a live `Box` that only `Drop` frees; no loan exists, so
        // no other reference to the producer does; the returned borrow is tied to `&mut self`,
        // so no loan can be made while it lives.
        Some(unsafe { self.producer.as_mut() })
    }

    /// The shared-memory producer, whether or not a loan is open: for reading its settings
    /// and counters.
    pub fn shm(&mut self) -> &Producer<Dynamic> {
        match &self.loan {
            Some(slot) => slot.producer(),
            // SAFETY: as in `producer`: no loan exists, and the borrow is tied to `&mut self`.
            None => unsafe { self.producer.as_mut() }.shm(),
        }
    }

    /// Whether a loan is open.
    pub fn is_loaned(&self) -> bool {
        self.loan.is_some()
    }

    /// Opens a loan for a frame of `shape` (the largest shape if `None`).
    ///
    /// # Panics
    /// If a loan is open (the callers check [`LoanCell::is_loaned`] first).
    pub fn begin(&mut self, shape: Option<&[u64]>) -> Result<(), PublishError> {
        assert!(self.loan.is_none(), "one loan at a time");
        // SAFETY: no loan exists, so this is the only reference to the producer; the loan made
        // from it is stored in `self.loan` and is, from now on, the only way this cell reaches
        // the producer (`producer` returns `None` while it exists). `Drop` ends the loan before
        // freeing the producer, so the borrow never outlives it; the heap allocation never
        // moves.
        let producer: &'static mut AnyProducer = unsafe { &mut *self.producer.as_ptr() };
        self.loan = Some(producer.loan(shape)?);
        Ok(())
    }

    /// The open loan.
    pub fn loan(&mut self) -> Option<&mut SlotMut<'static, Dynamic>> {
        self.loan.as_mut()
    }

    /// Commits the open loan; returns its frame id.
    pub fn commit(&mut self) -> Option<u64> {
        self.loan.take().map(SlotMut::commit)
    }

    /// Abandons the open loan (no frame id is used).
    pub fn abandon(&mut self) {
        self.loan = None;
    }

    /// Leaks the producer without running its `Drop` (a forked child must not give up its
    /// parent's channel).
    pub fn leak(mut self) {
        if let Some(slot) = self.loan.take() {
            std::mem::forget(slot);
        }
        std::mem::forget(self);
    }
}

impl Drop for LoanCell {
    fn drop(&mut self) {
        self.loan = None;
        // SAFETY: the pointer came from `Box::leak` in `new` and is freed only here; the loan
        // borrowing it ended on the line above.
        drop(unsafe { Box::from_raw(self.producer.as_ptr()) });
    }
}

/// A consumer and the frame it currently hands out, if any.
pub struct FrameCell {
    /// Owned: made by `Box::leak` in [`FrameCell::new`], freed in `Drop`.
    consumer: NonNull<AnyConsumer>,
    /// Borrows `*consumer` mutably; `'static` as for `LoanCell::loan`.
    frame: Option<Frame<'static, Dynamic>>,
}

// SAFETY: as for `LoanCell`: the consumer and the frame borrowing it move together; both are
// `Send`.
unsafe impl Send for FrameCell {}

impl FrameCell {
    /// A cell owning `consumer`, with no frame.
    pub fn new(consumer: AnyConsumer) -> Self {
        Self {
            consumer: NonNull::from(Box::leak(Box::new(consumer))),
            frame: None,
        }
    }

    /// The consumer, if no frame is current (a frame has it borrowed).
    pub fn consumer(&mut self) -> Option<&mut AnyConsumer> {
        if self.frame.is_some() {
            return None;
        }
        // SAFETY: as in `LoanCell::producer`: no frame exists, and the borrow is tied to
        // `&mut self`.
        Some(unsafe { self.consumer.as_mut() })
    }

    /// The shared-memory consumer, whether or not a frame is current: for reading its
    /// settings, counters and state.
    pub fn shm(&mut self) -> &Consumer<Dynamic> {
        match &self.frame {
            Some(frame) => frame.consumer(),
            // SAFETY: as in `consumer`.
            None => unsafe { self.consumer.as_mut() }.shm(),
        }
    }

    /// The current frame.
    pub fn frame(&self) -> Option<&Frame<'static, Dynamic>> {
        self.frame.as_ref()
    }

    /// Releases the current frame, if any.
    pub fn release(&mut self) {
        self.frame = None;
    }

    /// Waits up to `timeout` for the next frame and makes it current (releasing the current
    /// one first).
    pub fn next(&mut self, timeout: Duration) -> Result<(), NextError> {
        self.frame = None;
        // SAFETY: no frame exists now, so this is the only reference to the consumer; the frame
        // made from it is stored in `self.frame` and is then the only way this cell reaches the
        // consumer (`consumer` returns `None` meanwhile, `shm` goes through the frame). `Drop`
        // releases the frame before freeing the consumer; the allocation never moves.
        let consumer: &'static mut AnyConsumer = unsafe { &mut *self.consumer.as_ptr() };
        self.frame = Some(consumer.next(timeout)?);
        Ok(())
    }

    /// Makes the newest frame current, if there is one (releasing the current one first).
    pub fn latest(&mut self) -> Result<bool, NextError> {
        self.frame = None;
        // SAFETY: as in `next`.
        let consumer: &'static mut AnyConsumer = unsafe { &mut *self.consumer.as_ptr() };
        self.frame = consumer.latest()?;
        Ok(self.frame.is_some())
    }

    /// Leaks the consumer without running its `Drop` (a forked child must not free its
    /// parent's consumer-table entry).
    pub fn leak(mut self) {
        if let Some(frame) = self.frame.take() {
            std::mem::forget(frame);
        }
        std::mem::forget(self);
    }
}

impl Drop for FrameCell {
    fn drop(&mut self) {
        self.frame = None;
        // SAFETY: the pointer came from `Box::leak` in `new` and is freed only here; the frame
        // borrowing it was released on the line above.
        drop(unsafe { Box::from_raw(self.consumer.as_ptr()) });
    }
}
