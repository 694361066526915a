//! Data-parallel training across processes and machines over MPI (the `distributed` feature;
//! rsmpi bindings to the system's MPI, e.g. Open MPI).
//!
//! - [`DataParallel`]: gradient averaging in buckets whose all-reduces start during backward,
//!   each process's part of every global batch, rank 0's weights and optimizer state broadcast
//!   to all, a replica check, optional synchronised batch norm ([`sync_bn`]). It implements
//!   [`BatchParallel`](crate::train::BatchParallel), the training loop's hook.
//! - [`Comm`]: the private communicator underneath, with a deadline on every collective: a rank
//!   that dies or hangs ends the job with a message instead of a hang.
//!
//! ```no_run
//! use std::time::Duration;
//! use tessera_models::distributed::{DataParallel, DataParallelOptions};
//! use tessera_models::train::{TrainConfig, Trainer};
//! # fn main() -> tessera_models::Result<()> {
//! let universe = mpi::initialize().expect("MPI initialises once");
//! let world = universe.world();
//! let opts = DataParallelOptions { timeout: Duration::from_secs(60), ..Default::default() };
//! let mut dp = DataParallel::new(&world, opts)?;
//! let (train, test) = tessera_models::data::digits_split()?;
//! let mut model = tessera_models::create("vit_digits", &Default::default(), 0)?;
//! let cfg = TrainConfig { epochs: 1, ..Default::default() };
//! dp.check_batch(train.len(), cfg.batch)?;
//! let mut trainer = Trainer::new(cfg, model.as_mut(), train.len())?;
//! dp.broadcast_trainer(&mut trainer, model.as_mut())?; // rank 0's initial weights everywhere
//! let stats = trainer.run_epoch_parallel(model.as_mut(), &train, &test, Some(&mut dp), &mut |_| {})?;
//! if dp.rank() == 0 {
//!     println!("test accuracy {}", stats.test_acc);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/distributed.md` for launching, what is synchronised and measured scaling.

pub mod buckets;
mod comm;
mod data_parallel;
pub mod shard;
mod state;
pub mod sync_bn;

pub use comm::{Comm, TIMEOUT_EXIT_CODE};
pub use data_parallel::{CommStats, DataParallel, DataParallelOptions};
pub use mpi;
pub use shard::{shard_batch, shard_range};
