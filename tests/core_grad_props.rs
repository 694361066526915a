//! Property tests: for every differentiable op, autograd agrees with central finite
//! differences on random shapes (size-1 and broadcast dims) and non-contiguous views.
//! Kinks are excluded by the value strategies (see `core_common`), never by tolerances.

mod core_common;

use core_common::*;
use proptest::prelude::*;
use tessera::core::Tensor;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn unary_arg(vals: Vals) -> BoxedStrategy<Arg> {
    shape(0, 3)
        .prop_flat_map(move |s| arg(s, vals.clone()))
        .boxed()
}

fn binary_args(va: Vals, vb: Vals) -> BoxedStrategy<(Arg, Arg)> {
    broadcast_pair()
        .prop_flat_map(move |(sa, sb)| (arg(sa, va.clone()), arg(sb, vb.clone())))
        .boxed()
}

macro_rules! unary_props {
    ($($name:ident: $vals:expr => |$x:ident| $body:expr;)*) => {
        proptest! {
            #![proptest_config(cfg())]
            $(
                #[test]
                fn $name(a in unary_arg($vals)) {
                    check(&[a], |t| { let $x = &t[0]; Ok($body) });
                }
            )*
        }
    };
}

unary_props! {
    neg: Vals::smooth() => |x| x.neg();
    add_scalar: Vals::smooth() => |x| x.add_scalar(1.5);
    sub_scalar: Vals::smooth() => |x| x.sub_scalar(0.5);
    mul_scalar: Vals::smooth() => |x| x.mul_scalar(-2.5);
    div_scalar: Vals::smooth() => |x| x.div_scalar(4.0);
    powf: Vals::positive() => |x| x.powf(2.5);
    exp: Vals::smooth() => |x| x.exp();
    log: Vals::positive() => |x| x.log();
    sqrt: Vals::positive() => |x| x.sqrt();
    rsqrt: Vals::positive() => |x| x.rsqrt();
    abs: Vals::kinks(-2.0, 2.0, &[0.0]) => |x| x.abs();
    clamp: Vals::kinks(-2.0, 2.0, &[-1.0, 0.5]) => |x| x.clamp(-1.0, 0.5)?;
    relu: Vals::kinks(-2.0, 2.0, &[0.0]) => |x| x.relu();
    relu6: Vals::kinks(-2.0, 8.0, &[0.0, 6.0]) => |x| x.relu6();
    leaky_relu: Vals::kinks(-2.0, 2.0, &[0.0]) => |x| x.leaky_relu(0.1);
    sigmoid: Vals::kinks(-4.0, 4.0, &[]) => |x| x.sigmoid();
    tanh: Vals::smooth() => |x| x.tanh();
    silu: Vals::kinks(-4.0, 4.0, &[]) => |x| x.silu();
    hardsigmoid: Vals::kinks(-5.0, 5.0, &[-3.0, 3.0]) => |x| x.hardsigmoid();
    hardswish: Vals::kinks(-5.0, 5.0, &[-3.0, 3.0]) => |x| x.hardswish();
    gelu: Vals::kinks(-4.0, 4.0, &[]) => |x| x.gelu();
    gelu_tanh: Vals::kinks(-4.0, 4.0, &[]) => |x| x.gelu_tanh();
    contiguous: Vals::smooth() => |x| x.contiguous();
}

macro_rules! binary_props {
    ($($name:ident: $va:expr, $vb:expr => |$a:ident, $b:ident| $body:expr;)*) => {
        proptest! {
            #![proptest_config(cfg())]
            $(
                #[test]
                fn $name((a, b) in binary_args($va, $vb)) {
                    check(&[a, b], |t| { let ($a, $b) = (&t[0], &t[1]); $body });
                }
            )*
        }
    };
}

binary_props! {
    add: Vals::smooth(), Vals::smooth() => |a, b| a.add(b);
    sub: Vals::smooth(), Vals::smooth() => |a, b| a.sub(b);
    mul: Vals::smooth(), Vals::smooth() => |a, b| a.mul(b);
    div: Vals::smooth(), Vals::positive() => |a, b| a.div(b);
    pow: Vals::positive(), Vals::smooth() => |a, b| a.pow(b);
    maximum: Vals::Grid(0.0), Vals::Grid(0.05) => |a, b| a.maximum(b);
    minimum: Vals::Grid(0.0), Vals::Grid(0.05) => |a, b| a.minimum(b);
}

/// A shape of rank 1..=4 and a subset of its dims (as a bit mask) with a keepdim flag.
fn reduce_case(vals: Vals) -> BoxedStrategy<(Arg, Vec<usize>, bool)> {
    shape(1, 4)
        .prop_flat_map(move |s| {
            let r = s.len();
            (arg(s, vals.clone()), 1u32..(1 << r), any::<bool>())
        })
        .prop_map(|(a, mask, keep)| {
            let dims = (0..a.shape().len())
                .filter(|d| mask >> d & 1 == 1)
                .collect();
            (a, dims, keep)
        })
        .boxed()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn sum((a, dims, keep) in reduce_case(Vals::smooth())) {
        check(&[a], |t| t[0].sum(&dims, keep));
    }

    #[test]
    fn mean((a, dims, keep) in reduce_case(Vals::smooth())) {
        check(&[a], |t| t[0].mean(&dims, keep));
    }

    #[test]
    fn max((a, dims, keep) in reduce_case(Vals::Distinct)) {
        check(&[a], |t| t[0].max(&dims, keep));
    }

    #[test]
    fn var((a, dims, keep) in reduce_case(Vals::Distinct), corr in 0usize..2) {
        let n: usize = dims.iter().map(|&d| a.shape()[d]).product();
        prop_assume!(n > corr);
        check(&[a], |t| t[0].var(&dims, keep, corr));
    }

    #[test]
    fn std((a, dims, keep) in reduce_case(Vals::Distinct), corr in 0usize..2) {
        let n: usize = dims.iter().map(|&d| a.shape()[d]).product();
        // std at zero variance is sqrt's kink: distinct values and n >= 2 keep away from it.
        prop_assume!(n > corr.max(1));
        check(&[a], |t| t[0].std(&dims, keep, corr));
    }

    #[test]
    fn matmul_2d(m in 1usize..6, k in 1usize..6, n in 1usize..6, seed in any::<u64>()) {
        let (a, b) = matmul_args(vec![m, k], vec![k, n], seed);
        check(&[a, b], |t| t[0].matmul(&t[1]));
    }

    #[test]
    fn matmul_batched(
        bs in prop::sample::select(vec![
            (vec![2], vec![2]), (vec![3], vec![]), (vec![], vec![2]),
            (vec![2, 1], vec![1, 3]), (vec![1, 2], vec![2]),
        ]),
        m in 1usize..4, k in 1usize..4, n in 1usize..4, seed in any::<u64>(),
    ) {
        let mut sa = bs.0.clone();
        sa.extend([m, k]);
        let mut sb = bs.1.clone();
        sb.extend([k, n]);
        let (a, b) = matmul_args(sa, sb, seed);
        check(&[a, b], |t| t[0].matmul(&t[1]));
    }

    #[test]
    fn linear(rows in 1usize..4, i in 1usize..5, o in 1usize..5, bias in any::<bool>(), seed in any::<u64>()) {
        let x = Tensor::randn(&[rows, i], seed);
        let w = Tensor::randn(&[o, i], seed ^ 1);
        let b = Tensor::randn(&[o], seed ^ 2);
        let mk = |t: &Tensor| Arg { base: t.shape().to_vec(), data: t.to_vec(), view: View::Contig };
        let mut args = vec![mk(&x), mk(&w)];
        if bias { args.push(mk(&b)); }
        check(&args, |t| t[0].linear(&t[1], t.get(2)));
    }

    #[test]
    fn reshape_permute(s in shape(2, 4), seed in any::<u64>()) {
        let a = Arg { base: s.clone(), data: Tensor::randn(&s, seed).to_vec(), view: View::Transposed };
        let r = s.len();
        let n: usize = s.iter().product();
        check(&[a], move |t| {
            let mut p: Vec<usize> = (0..r).collect();
            p.rotate_left(1);
            t[0].permute(&p)?.reshape(&[n])?.reshape(&[1, n])?.unsqueeze(0)?.squeeze(0)
        });
    }

    #[test]
    fn narrow_select_expand(s in shape(2, 3), seed in any::<u64>()) {
        let a = arg_from(&s, seed, View::Narrowed);
        check(&[a], |t| {
            let x = &t[0];
            let last = x.rank() - 1;
            let y = x.narrow(last, 0, x.shape()[last].min(2))?;
            let z = y.select(0, 0)?.unsqueeze(0)?;
            let mut big = z.shape().to_vec();
            big[0] = 3;
            z.expand(&big)?.mul(&z.expand(&big)?)
        });
    }

    #[test]
    fn slices_of_one_intermediate_accumulate_in_place(
        s in shape(2, 3),
        dim_seed in any::<usize>(),
        seed in any::<u64>(),
    ) {
        // Attention's q, k, v: several narrows (disjoint, overlapping, whole) of one non-leaf
        // tensor; backward adds them into one buffer (the in-place path), a leaf's slices go
        // through the padded path.
        let dim = dim_seed % s.len();
        let a = arg_from(&s, seed, View::Contig);
        check(&[a], |t| {
            let y = t[0].mul_scalar(1.5); // an intermediate node, not a leaf
            let size = y.shape()[dim];
            let first = y.narrow(dim, 0, size.div_ceil(2))?;
            let last = y.narrow(dim, size / 2, size - size / 2)?;
            let whole = y.narrow(dim, 0, size)?;
            let leaf_slice = t[0].narrow(dim, size - 1, 1)?;
            first
                .mul(&first)?
                .sum_all()
                .add(&last.mul_scalar(3.0).sum_all())?
                .add(&whole.mul(&whole)?.mul_scalar(0.5).sum_all())?
                .add(&leaf_slice.mul(&leaf_slice)?.sum_all())
        });
    }

    #[test]
    fn cat_stack(s in shape(1, 3), dim_seed in any::<usize>(), seed in any::<u64>()) {
        let dim = dim_seed % s.len();
        let a = arg_from(&s, seed, View::Contig);
        let b = arg_from(&s, seed ^ 7, if s.len() >= 2 { View::Transposed } else { View::Narrowed });
        check(&[a, b], |t| {
            let c = Tensor::cat(&[t[0].clone(), t[1].clone()], dim)?;
            let st = Tensor::stack(&[t[0].clone(), t[1].clone()], dim)?;
            c.sum_all().mul(&st.sum(&[dim], false)?.sum_all())
        });
    }

    #[test]
    fn index_select_gather(rows in 1usize..5, cols in 1usize..5, seed in any::<u64>()) {
        let a = arg_from(&[rows, cols], seed, View::Transposed);
        let idx: Vec<usize> = (0..rows + 2).map(|i| (i * 7 + seed as usize) % rows).collect();
        let gidx: Vec<usize> = (0..rows).map(|i| (i + seed as usize) % cols).collect();
        check(&[a], move |t| {
            let s = t[0].index_select(0, &idx)?;
            let g = t[0].gather(1, &gidx, &[rows, 1])?;
            s.sum_all().add(&g.mul(&g)?.sum_all())
        });
    }
}

fn arg_from(s: &[usize], seed: u64, view: View) -> Arg {
    let mut base = s.to_vec();
    match view {
        View::Transposed => {
            let r = base.len();
            base.swap(r - 2, r - 1);
        }
        View::Narrowed => base[0] += 2,
        _ => {}
    }
    Arg {
        data: Tensor::randn(&base, seed).to_vec(),
        base,
        view,
    }
}

/// Two matmul operands; the second is a transposed view when `seed` is odd, the first when
/// `seed / 2` is odd.
fn matmul_args(sa: Vec<usize>, sb: Vec<usize>, seed: u64) -> (Arg, Arg) {
    let va = if seed / 2 % 2 == 1 {
        View::Transposed
    } else {
        View::Contig
    };
    let vb = if seed % 2 == 1 {
        View::Transposed
    } else {
        View::Narrowed
    };
    (arg_from(&sa, seed, va), arg_from(&sb, seed ^ 99, vb))
}
