//! An aggregate's state folded from its stream: a service writes how one event changes the
//! state, and replaying a stream or taking one more event follows from it.

/// A state that a stream of `Self::Event` builds, starting from nothing.
pub trait Aggregate: Clone {
    type Event;

    /// The state after `event`; `None` while nothing in the stream has created it, and for an
    /// event that does not apply to the state.
    fn apply(state: Option<Self>, event: Self::Event) -> Option<Self>;

    /// The state after `events` in stream order; `None` for a stream that does not create it.
    fn replay(events: impl IntoIterator<Item = Self::Event>) -> Option<Self> {
        events.into_iter().fold(None, Self::apply)
    }

    /// The state after one more event; one that does not apply leaves the state as it was.
    #[must_use]
    fn with(self, event: Self::Event) -> Self {
        let fallback = self.clone();
        Self::apply(Some(self), event).unwrap_or(fallback)
    }
}
