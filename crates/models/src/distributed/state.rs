//! Making the replicas equal: rank 0's model (parameters and buffers), optimizer state, epoch
//! and step broadcast to every process, and a check that the replicas' parameters are still
//! bit-identical (a 64-bit FNV-1a hash of their bits compared across processes).

use super::comm::Comm;
use crate::error::{ModelError, Result};
use crate::module::{Module, TensorKind};
use crate::optim::OptimizerState;
use crate::train::Trainer;
use std::collections::BTreeMap;
use tessera_core::Tensor;

/// Names and shapes of every tensor of `model`, in visiting order, as one string (compared
/// across processes before any values move).
fn signature(model: &dyn Module) -> String {
    let mut s = String::new();
    model.visit("", &mut |name, t, _| {
        s.push_str(&format!("{name}{:?};", t.shape()));
    });
    s
}

/// FNV-1a over bytes.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// Errors on every rank unless every rank's bytes equal rank 0's.
fn agree(comm: &Comm, mine: &[u8], what: &str) -> Result<()> {
    let mut root = mine.to_vec();
    comm.broadcast_bytes(&mut root, 0, what);
    let mut differ = [(root != mine) as u8 as f64];
    comm.all_reduce_sum_f64(&mut differ, what);
    if differ[0] > 0.0 {
        return Err(ModelError::config(format!(
            "distributed: {} process(es) disagree with rank 0 on {what}",
            differ[0]
        )));
    }
    Ok(())
}

/// Rank 0's tensors into every rank's `model`.
pub fn broadcast_model(comm: &Comm, model: &mut dyn Module) -> Result<()> {
    agree(
        comm,
        signature(model).as_bytes(),
        "the model's tensor names and shapes (same architecture and overrides everywhere?)",
    )?;
    let mut flat = Vec::new();
    model.visit("", &mut |_, t, _| flat.extend_from_slice(&t.data()));
    comm.broadcast_f32(&mut flat, 0, "the broadcast of rank 0's weights");
    if comm.rank() == 0 {
        return Ok(());
    }
    let mut at = 0;
    let mut err = None;
    model.visit_mut("", &mut |_, t, _| {
        let n = t.numel();
        let values = &flat[at..at + n];
        at += n;
        if t.update_in_place(|v| v.copy_from_slice(values)) {
            return;
        }
        let grad = t.requires_grad() && t.is_leaf();
        match Tensor::from_vec(values.to_vec(), t.shape()) {
            Ok(new) => *t = new.requires_grad_(grad),
            Err(e) => err = Some(e),
        }
    });
    err.map_or(Ok(()), |e| Err(e.into()))
}

/// Serialises an optimizer state: tensors and scalars by name.
fn encode_state(s: &OptimizerState) -> Vec<u8> {
    let mut out = Vec::new();
    let put_str = |out: &mut Vec<u8>, v: &str| {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    };
    out.extend_from_slice(&(s.tensors.len() as u64).to_le_bytes());
    for (k, v) in &s.tensors {
        put_str(&mut out, k);
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.extend_from_slice(&(s.scalars.len() as u64).to_le_bytes());
    for (k, v) in &s.scalars {
        put_str(&mut out, k);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads [`encode_state`]'s bytes, checking every length against what is left.
fn decode_state(b: &[u8]) -> Option<OptimizerState> {
    let mut cur = Cursor { b, at: 0 };
    let mut s = OptimizerState {
        tensors: BTreeMap::new(),
        scalars: BTreeMap::new(),
    };
    for _ in 0..cur.u64()? {
        let k = cur.string()?;
        let n = cur.u64()? as usize;
        let bytes = cur.take(n.checked_mul(4)?)?;
        let v = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        s.tensors.insert(k, v);
    }
    for _ in 0..cur.u64()? {
        let k = cur.string()?;
        let v = f64::from_le_bytes(cur.take(8)?.try_into().ok()?);
        s.scalars.insert(k, v);
    }
    (cur.at == b.len()).then_some(s)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Rank 0's model, optimizer state, epoch and step into every process.
pub fn broadcast_trainer(comm: &Comm, trainer: &mut Trainer, model: &mut dyn Module) -> Result<()> {
    broadcast_model(comm, model)?;
    let mut bytes = encode_state(&trainer.optimizer_state());
    bytes.extend_from_slice(&(trainer.epoch as u64).to_le_bytes());
    bytes.extend_from_slice(&(trainer.step as u64).to_le_bytes());
    comm.broadcast_bytes(&mut bytes, 0, "the broadcast of rank 0's optimizer state");
    if comm.rank() == 0 {
        return Ok(());
    }
    let bad = || ModelError::config("distributed: rank 0 sent a malformed optimizer state");
    let split = bytes.len().checked_sub(16).ok_or_else(bad)?;
    let (state, pos) = bytes.split_at(split);
    let state = decode_state(state).ok_or_else(bad)?;
    trainer.load_optimizer_state(&state)?;
    trainer.epoch = u64::from_le_bytes(pos[..8].try_into().map_err(|_| bad())?) as usize;
    trainer.step = u64::from_le_bytes(pos[8..].try_into().map_err(|_| bad())?) as usize;
    Ok(())
}

/// Errors on every rank unless the parameters (and, with `buffers`, the buffers) are
/// bit-identical on every rank.
pub fn check_replicas(comm: &Comm, model: &dyn Module, buffers: bool) -> Result<()> {
    let mut h = FNV_OFFSET;
    model.visit("", &mut |_, t, kind| {
        if kind == TensorKind::Parameter || buffers {
            for v in t.data().iter() {
                h = fnv1a(h, &v.to_bits().to_le_bytes());
            }
        }
    });
    agree(
        comm,
        &h.to_le_bytes(),
        "the model's weights (replicas diverged)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_state_round_trips_and_rejects_truncation() {
        let s = OptimizerState {
            tensors: BTreeMap::from([
                ("a.m".to_string(), vec![1.0, -2.5, f32::MIN_POSITIVE]),
                ("b".to_string(), vec![]),
            ]),
            scalars: BTreeMap::from([("step".to_string(), 7.0)]),
        };
        let b = encode_state(&s);
        assert_eq!(decode_state(&b), Some(s));
        for cut in 0..b.len() {
            assert_eq!(decode_state(&b[..cut]), None, "cut at {cut}");
        }
    }
}
