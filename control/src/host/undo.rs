//! The undo stack of a change to the host: every step that changes the
//! host pushes its undo; if a later step fails, the stack runs in reverse,
//! so a failed start or plug leaves nothing behind.

use crate::host::netlink::Netlink;

/// One undo action: given the netlink handle, a future that reverts one change.
type UndoStep = Box<dyn FnOnce(&Netlink) -> futures::future::BoxFuture<'_, ()>>;

/// Undo actions for a partly applied change, run in reverse on failure.
#[derive(Default)]
pub struct Undo {
    steps: Vec<UndoStep>,
}

impl Undo {
    pub fn push<F>(&mut self, f: F)
    where
        F: FnOnce(&Netlink) -> futures::future::BoxFuture<'_, ()> + 'static,
    {
        self.steps.push(Box::new(f));
    }
    pub async fn run(self, nl: &Netlink) {
        for step in self.steps.into_iter().rev() {
            step(nl).await;
        }
    }
}
