//! The AdamW update as one pass over memory for parameters held in contiguous float32 CPU tensors.
//!
//! Written as separate tensor operations, one AdamW step reads and writes each parameter-sized buffer about ten
//! times (decay, moment updates, square root, scaling, temporaries, the final add) — on a CPU that is a
//! memory-bound sweep per operation, a noticeable share of a step for a ViT-B's 10⁸ parameters. Here every element
//! is read once (parameter, gradient, both moments) and written once (parameter, moments), in the same order of
//! floating-point operations as PyTorch's per-parameter AdamW, split into chunks shared by the intra-op threads.
//!
//! The buffers are written through their data pointers, not through tensor operations: autograd's version counters
//! of the parameters are not bumped (the step runs between backward and the next forward, when no graph holds the
//! parameters).

use std::sync::atomic::{AtomicUsize, Ordering};

use tch::{Device, Kind, Tensor};

/// Elements per unit of work handed to a thread.
const CHUNK: usize = 1 << 16;

/// Below this many elements in all, the update runs on the calling thread only.
const PARALLEL_MIN: usize = 1 << 18;

/// The scalars of one parameter's update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coefficients {
    /// `1 − lr·weight_decay` (exactly 1 without decay).
    pub decay: f32,
    /// `1 − β1`, the weight of the gradient in the first moment.
    pub one_minus_b1: f32,
    /// `β2`.
    pub b2: f32,
    /// `1 − β2`.
    pub one_minus_b2: f32,
    /// `√(1 − β2ᵗ)`.
    pub bias2_sqrt: f32,
    /// `ε`.
    pub eps: f32,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f32,
}

/// One parameter's buffers, borrowed for the duration of a step.
pub(crate) struct Buffers {
    param: *mut f32,
    grad: *const f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
    c: Coefficients,
}

// SAFETY: the pointers are into tensors the optimiser owns for the whole step; `Buffers::of` admits only four
// distinct, non-overlapping contiguous buffers per parameter, parameters do not share memory (their gradients are
// given separate buffers by `AdamW::backward`), and `run` hands each element range to exactly one thread.
unsafe impl Send for Buffers {}
unsafe impl Sync for Buffers {}

impl Buffers {
    /// The buffers of one parameter when all four are contiguous float32 tensors on the CPU of equal length and
    /// distinct memory; `None` otherwise (the caller then uses tensor operations).
    pub(crate) fn of(
        param: &Tensor,
        grad: &Tensor,
        exp_avg: &Tensor,
        exp_avg_sq: &Tensor,
        c: Coefficients,
    ) -> Option<Self> {
        let ts = [param, grad, exp_avg, exp_avg_sq];
        let len = param.numel();
        let fits = |t: &Tensor| {
            t.device() == Device::Cpu
                && t.kind() == Kind::Float
                && t.is_contiguous()
                && t.numel() == len
        };
        if !ts.iter().all(|t| fits(t)) {
            return None;
        }
        let ptrs = ts.map(|t| t.data_ptr() as usize);
        let bytes = len * std::mem::size_of::<f32>();
        for i in 0..4 {
            for j in i + 1..4 {
                let (a, b) = (ptrs[i], ptrs[j]);
                if len > 0 && a < b + bytes && b < a + bytes {
                    return None;
                }
            }
        }
        Some(Self {
            param: ptrs[0] as *mut f32,
            grad: ptrs[1] as *const f32,
            exp_avg: ptrs[2] as *mut f32,
            exp_avg_sq: ptrs[3] as *mut f32,
            len,
            c,
        })
    }

    /// Update elements `start..end`.
    ///
    /// # Safety
    /// No other thread may touch this range of these buffers meanwhile.
    unsafe fn update(&self, start: usize, end: usize) {
        let n = end - start;
        let p = std::slice::from_raw_parts_mut(self.param.add(start), n);
        let g = std::slice::from_raw_parts(self.grad.add(start), n);
        let m = std::slice::from_raw_parts_mut(self.exp_avg.add(start), n);
        let v = std::slice::from_raw_parts_mut(self.exp_avg_sq.add(start), n);
        update(p, g, m, v, &self.c);
    }
}

/// The AdamW update of one range, in PyTorch's order of operations: `p ← p·decay`, `m ← m + (1−β1)(g − m)`
/// (`lerp`), `v ← v·β2 + g·(g·(1−β2))`, `p ← p − m / ((√v / √(1−β2ᵗ) + ε) / step_size)`.
pub(crate) fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Coefficients) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let pd = *p * c.decay;
        let m1 = *m + c.one_minus_b1 * (g - *m);
        let v1 = *v * c.b2 + g * (g * c.one_minus_b2);
        let denom = v1.sqrt() / c.bias2_sqrt + c.eps;
        *p = pd - m1 / (denom / c.step_size);
        *m = m1;
        *v = v1;
    }
}

/// Run the updates of `params`, split into chunks over up to `threads` threads (the calling one included).
pub(crate) fn run(params: &[Buffers], threads: usize) {
    let total: usize = params.iter().map(|b| b.len).sum();
    // (parameter, start, end) of every chunk, in order.
    let chunks: Vec<(usize, usize, usize)> = params
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            (0..b.len)
                .step_by(CHUNK)
                .map(move |s| (i, s, (s + CHUNK).min(b.len)))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(&(i, s, e)) = chunks.get(k) else {
            break;
        };
        // SAFETY: chunk k is taken by exactly one thread (the atomic counter), chunks do not overlap.
        unsafe { params[i].update(s, e) };
    };
    let threads = if total < PARALLEL_MIN {
        1
    } else {
        threads.clamp(1, chunks.len().max(1))
    };
    if threads == 1 {
        work();
        return;
    }
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coefficients() -> Coefficients {
        Coefficients {
            decay: 1.0 - 0.01 * 0.05,
            one_minus_b1: 0.1,
            b2: 0.95,
            one_minus_b2: 0.05,
            bias2_sqrt: (1.0f32 - 0.95f32.powi(3)).sqrt(),
            eps: 1e-8,
            step_size: 0.01 / (1.0 - 0.9f32.powi(3)),
        }
    }

    #[test]
    fn refuses_what_it_cannot_address_as_one_slice() {
        let c = coefficients();
        let t = || Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        let (p, g, m, v) = (t(), t(), t(), t());
        assert!(Buffers::of(&p, &g, &m, &v, c).is_some());
        assert!(
            Buffers::of(&p, &g.tr().contiguous().tr(), &m, &v, c).is_none(),
            "strided"
        );
        assert!(
            Buffers::of(&p, &g.to_kind(Kind::Double), &m, &v, c).is_none(),
            "double"
        );
        assert!(
            Buffers::of(&p, &p, &m, &v, c).is_none(),
            "gradient aliasing the parameter"
        );
        let big = Tensor::ones([24], (Kind::Float, Device::Cpu));
        let halves = (big.narrow(0, 0, 12), big.narrow(0, 6, 12));
        assert!(
            Buffers::of(&p, &g, &halves.0, &halves.1, c).is_none(),
            "overlapping moments"
        );
        assert!(Buffers::of(
            &p,
            &g,
            &m,
            &Tensor::ones([12], (Kind::Float, Device::Cpu)),
            c
        )
        .is_some());
    }

    #[test]
    fn threaded_chunks_match_the_single_pass() {
        // Several parameters of sizes around the chunk size, and one large enough to be split over threads.
        let sizes = [1usize, CHUNK - 1, CHUNK + 3, 5 * CHUNK + 17, 7];
        let c = coefficients();
        // Deterministic values without the global generator (other tests run beside this one).
        let make = |seed: i64, n: usize| {
            (Tensor::arange(n as i64, (Kind::Float, Device::Cpu)) * 0.37 + seed as f64).sin()
        };
        let state = |k: i64| -> Vec<[Tensor; 4]> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let s = 10 * i as i64 + k;
                    [
                        make(s, n),
                        make(s + 1, n),
                        make(s + 2, n),
                        make(s + 3, n).abs(),
                    ]
                })
                .collect()
        };
        let (a, b) = (state(0), state(0));
        let bufs = |st: &[[Tensor; 4]]| -> Vec<Buffers> {
            st.iter()
                .map(|[p, g, m, v]| Buffers::of(p, g, m, v, c).unwrap())
                .collect()
        };
        run(&bufs(&a), 3);
        for [p, g, m, v] in &b {
            let mut vals: [Vec<f32>; 4] = [p, g, m, v].map(|t| Vec::<f32>::try_from(t).unwrap());
            let [vp, vg, vm, vv] = &mut vals;
            update(vp, vg, vm, vv, &c);
            for (t, want) in [(p, &vals[0]), (m, &vals[2]), (v, &vals[3])] {
                t.shallow_clone().copy_(&Tensor::from_slice(want));
            }
        }
        for (x, y) in a.iter().zip(&b) {
            for k in 0..4 {
                assert!(x[k].equal(&y[k]), "tensor {k} differs");
            }
        }
    }
}
