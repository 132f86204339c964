//! One rayon pool per thread count, shared by every executor and the planner in the process.
//!
//! A pool per executor would leave several sets of workers spinning on the same cores (a
//! benchmark alternating a dense and a sparse executor measured 6x slower batch-1 runs with 2
//! threads); sharing keeps one set awake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::ModelError;

/// The shared pool with `threads` workers.
pub fn shared_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, ModelError> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while inserting; the map is intact.
    let mut map = pools.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(&threads) {
        return Ok(p.clone());
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("lopper-{threads}t-{i}"))
            .build()
            .map_err(|e| ModelError::Plan(format!("thread pool: {e}")))?,
    );
    map.insert(threads, pool.clone());
    Ok(pool)
}
