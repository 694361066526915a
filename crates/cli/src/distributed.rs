//! Data-parallel `tessera train` under `mpirun` (the `distributed` feature): options, MPI
//! start-up and the per-process view the training command uses (rank 0 logs, evaluates and
//! saves; every process trains its part of each batch). Without the feature, [`Dist`] has no
//! values and [`start`] always answers `None`, so the training command runs one process.

use clap::Args;

/// Options of data-parallel training.
#[derive(Args, Debug, Clone)]
pub struct DistArgs {
    /// Batch norm statistics over the global batch (all-reduced in every training forward)
    /// instead of each process's part (distributed runs only).
    #[cfg(feature = "distributed")]
    #[arg(long)]
    pub sync_bn: bool,
    /// Seconds any collective may take before the job ends with an error (a dead or hung
    /// rank); covers rank 0's evaluation and checkpoint writing between epochs.
    #[cfg(feature = "distributed")]
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub dist_timeout: f64,
    /// Gradient bucket size in MiB (one all-reduce per bucket).
    #[cfg(feature = "distributed")]
    #[arg(long, default_value_t = 25.0, value_name = "MIB")]
    pub bucket_mb: f64,
    /// Reduce gradients after backward instead of overlapping with it.
    #[cfg(feature = "distributed")]
    #[arg(long)]
    pub no_overlap: bool,
    /// Run data-parallel even if no MPI launcher is detected (a one-process MPI job).
    #[cfg(feature = "distributed")]
    #[arg(long)]
    pub distributed: bool,
}

#[cfg(feature = "distributed")]
pub use imp::{start, Dist};

#[cfg(not(feature = "distributed"))]
pub use stub::{start, Dist};

#[cfg(not(feature = "distributed"))]
mod stub {
    use super::DistArgs;
    use tessera::models::train::{BatchParallel, Trainer};
    use tessera::models::Model;

    /// No distributed runs without the feature: this type has no values.
    pub enum Dist {}

    impl Dist {
        pub fn is_root(&self) -> bool {
            match *self {}
        }
        pub fn size(&self) -> usize {
            match *self {}
        }
        pub fn local_threads(&self) -> usize {
            match *self {}
        }
        pub fn parallel(&mut self) -> &mut dyn BatchParallel {
            match *self {}
        }
        pub fn prepare(
            &mut self,
            _: &mut Trainer,
            _: &mut dyn Model,
            _: usize,
        ) -> Result<(), String> {
            match *self {}
        }
        pub fn after_epoch(&mut self, _: &dyn Model) -> Result<(), String> {
            match *self {}
        }
        pub fn summary(&self) -> serde_json::Value {
            match *self {}
        }
        pub fn abort(&self, _: &str) -> ! {
            match *self {}
        }
        pub fn shard(&self, _: usize) -> std::ops::Range<usize> {
            match *self {}
        }
        pub fn backward(
            &mut self,
            _: &mut dyn Model,
            _: &tessera::core::Tensor,
            _: usize,
            _: usize,
        ) -> Result<(), String> {
            match *self {}
        }
        pub fn comm_seconds(&self) -> (f64, f64) {
            match *self {}
        }
        pub fn mean(&self, _: f64) -> f64 {
            match *self {}
        }
    }

    /// Always `None`.
    pub fn start(_: &DistArgs) -> Result<Option<Dist>, String> {
        Ok(None)
    }
}

#[cfg(feature = "distributed")]
mod imp {
    use super::DistArgs;
    use std::time::Duration;
    use tessera::models::distributed::{mpi, DataParallel, DataParallelOptions};
    use tessera::models::train::{BatchParallel, Trainer};
    use tessera::models::Model;

    /// Environment variables MPI launchers set in every process they start (Open MPI,
    /// MPICH / Intel MPI through PMI, PMIx, MVAPICH).
    const LAUNCHER_VARS: [&str; 5] = [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MV2_COMM_WORLD_SIZE",
        "PMI_RANK",
    ];

    /// This process in a data-parallel job.
    pub struct Dist {
        // Dropped before the universe (which finalises MPI).
        dp: DataParallel,
        _universe: mpi::environment::Universe,
    }

    /// Starts MPI when launched by an MPI launcher (or with `--distributed`).
    pub fn start(args: &DistArgs) -> Result<Option<Dist>, String> {
        let launched = LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some());
        if !launched && !args.distributed {
            return Ok(None);
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(args.dist_timeout) || !positive(args.bucket_mb) {
            return Err(format!(
                "train: --dist-timeout {} and --bucket-mb {} must be positive",
                args.dist_timeout, args.bucket_mb
            ));
        }
        let universe =
            mpi::initialize().ok_or("train: MPI was already initialised in this process")?;
        let opts = DataParallelOptions {
            bucket_bytes: ((args.bucket_mb * (1 << 20) as f64) as usize).max(4),
            overlap: !args.no_overlap,
            sync_batch_norm: args.sync_bn,
            timeout: Duration::from_secs_f64(args.dist_timeout),
        };
        let dp = DataParallel::new(&universe.world(), opts).map_err(|e| format!("train: {e}"))?;
        Ok(Some(Dist {
            dp,
            _universe: universe,
        }))
    }

    impl Dist {
        /// Whether this is rank 0 (it logs, evaluates and saves).
        pub fn is_root(&self) -> bool {
            self.dp.rank() == 0
        }

        /// Number of processes.
        pub fn size(&self) -> usize {
            self.dp.size()
        }

        /// Worker threads for this process when none are asked for: the cores shared among
        /// the processes on this machine.
        pub fn local_threads(&self) -> usize {
            let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
                .or_else(|_| std::env::var("MPI_LOCALNRANKS"))
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / local).max(1)
        }

        /// The training loop's hook.
        pub fn parallel(&mut self) -> &mut dyn BatchParallel {
            &mut self.dp
        }

        /// Checks the batch size and makes every process start from rank 0's state (fresh
        /// weights or the checkpoint rank 0 resumed).
        pub fn prepare(
            &mut self,
            trainer: &mut Trainer,
            model: &mut dyn Model,
            train_len: usize,
        ) -> Result<(), String> {
            self.dp
                .check_batch(train_len, trainer.cfg.batch)
                .map_err(|e| format!("train: {e}"))?;
            self.dp
                .broadcast_trainer(trainer, model)
                .map_err(|e| format!("train: {e}"))
        }

        /// Checks that every replica still holds the same weights.
        pub fn after_epoch(&mut self, model: &dyn Model) -> Result<(), String> {
            self.dp
                .check_replicas(model)
                .map_err(|e| format!("train: {e}"))
        }

        /// Processes and communication time, for the final JSON object.
        pub fn summary(&self) -> serde_json::Value {
            let s = self.dp.stats();
            let o = self.dp.options();
            serde_json::json!({
                "processes": self.dp.size(),
                "sync_bn": o.sync_batch_norm,
                "overlap": o.overlap,
                "buckets": self.dp.layout().map_or(0, |l| l.buckets.len()),
                "allreduce_values_per_step": s.values_per_step,
                "comm_exposed_ms_per_step": s.exposed.as_secs_f64() * 1e3 / s.steps.max(1) as f64,
                "comm_copy_ms_per_step": s.copy.as_secs_f64() * 1e3 / s.steps.max(1) as f64,
            })
        }

        /// This process's images of a global batch of `batch`.
        pub fn shard(&self, batch: usize) -> std::ops::Range<usize> {
            tessera::models::distributed::shard_range(batch, self.dp.rank(), self.dp.size())
        }

        /// Backward of `loss` (the mean over `local` of `global` images) with the gradients
        /// averaged over the processes.
        pub fn backward(
            &mut self,
            model: &mut dyn Model,
            loss: &tessera::core::Tensor,
            local: usize,
            global: usize,
        ) -> Result<(), String> {
            self.dp
                .backward(model, loss, local, global)
                .map_err(|e| e.to_string())
        }

        /// Gradient communication so far: (seconds exposed after backward, seconds copying
        /// into and out of the buckets).
        pub fn comm_seconds(&self) -> (f64, f64) {
            let s = self.dp.stats();
            (s.exposed.as_secs_f64(), s.copy.as_secs_f64())
        }

        /// The mean of `v` over the processes (the same on every process).
        pub fn mean(&self, v: f64) -> f64 {
            let mut x = [v];
            self.dp
                .comm()
                .all_reduce_sum_f64(&mut x, "the all-reduce of a benchmark's timing");
            x[0] / self.dp.size() as f64
        }

        /// Ends every process of the job after an error on this one (the others would
        /// otherwise wait for it until the timeout).
        pub fn abort(&self, msg: &str) -> ! {
            self.dp
                .comm()
                .abort(&format!("error: {msg}; ending the job"), 1)
        }
    }
}
