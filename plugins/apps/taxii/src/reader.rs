//! Reads of the store for the TAXII server: connections of their own beside the store's writer,
//! used on blocking threads, kept for the next request, and at most [`CONCURRENT`] at a time so
//! that a crowd of clients queues instead of opening a connection each.

use std::sync::{Arc, Mutex, PoisonError};

use threatbus_store::{Engine, Location, StoreError};
use tokio::sync::Semaphore;

/// Store reads running at once.
pub const CONCURRENT: usize = 4;

/// Opened readers, shared by the requests.
#[derive(Clone)]
pub struct Readers {
    location: Location,
    idle: Arc<Idle>,
    permits: Arc<Semaphore>,
}

/// The readers not in use. They are closed off the runtime when the pool goes (see
/// [`threatbus_store::close_off_runtime`]).
#[derive(Default)]
struct Idle(Mutex<Vec<Box<dyn Engine>>>);

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn Engine>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        threatbus_store::close_off_runtime(std::mem::take(&mut *self.lock()));
    }
}

/// Why a read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the store read was cut short (the bus is stopping)")]
    Stopped,
}

impl Readers {
    pub fn new(location: Location) -> Self {
        Self {
            location,
            idle: Arc::default(),
            permits: Arc::new(Semaphore::new(CONCURRENT)),
        }
    }

    /// Runs `read` on a reader, on a blocking thread. A reader whose read failed is dropped
    /// rather than kept (its connection may be broken).
    pub async fn read<T, F>(&self, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Engine) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ReadError::Stopped)?;
        let idle = self.idle.clone();
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || {
            let taken = idle.lock().pop();
            let mut reader = match taken {
                Some(reader) => reader,
                None => location.open_reader()?,
            };
            let result = read(reader.as_mut());
            if result.is_ok() {
                idle.lock().push(reader);
            }
            Ok(result?)
        })
        .await
        .map_err(|_| ReadError::Stopped)?
    }
}
