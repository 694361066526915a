//! Every [`Simd`] implementation the host supports against the lane-by-lane definition of
//! each method (computed here on plain arrays).

use super::*;
use crate::isa::Isa;

/// Stores a vector into a 16-float array (lanes past `L` stay NaN).
#[inline(always)]
unsafe fn arr<S: Simd>(v: S::V) -> [f32; 16] {
    let mut a = [f32::NAN; 16];
    // SAFETY: a holds 16 >= L floats.
    unsafe { S::store(a.as_mut_ptr(), v) };
    a
}

#[inline(always)]
unsafe fn check<S: Simd>() {
    let l = S::L;
    let src: Vec<f32> = (0..512).map(|i| i as f32 * 0.75 - 100.0).collect();
    // SAFETY (whole body): every pointer below covers the floats the method reads or writes.
    unsafe {
        let a = S::load(src.as_ptr());
        let b = S::load(src.as_ptr().add(l));
        let (aa, ba) = (arr::<S>(a), arr::<S>(b));
        // Transpose.
        let mut r: Vec<S::V> = (0..l).map(|i| S::load(src.as_ptr().add(i * l))).collect();
        S::transpose(&mut r);
        for (i, v) in r.iter().enumerate() {
            let got = arr::<S>(*v);
            for j in 0..l {
                assert_eq!(got[j], src[j * l + i], "transpose L={l} ({i}, {j})");
            }
        }
        // Interleave / deinterleave.
        let (e, o) = S::deinterleave(a, b);
        let (ea, oa) = (arr::<S>(e), arr::<S>(o));
        for i in 0..l {
            assert_eq!(ea[i], src[2 * i]);
            assert_eq!(oa[i], src[2 * i + 1]);
        }
        let (x, y) = S::interleave(e, o);
        assert_eq!(arr::<S>(x)[..l], aa[..l]);
        assert_eq!(arr::<S>(y)[..l], ba[..l]);
        // Tails, masks and reductions.
        for n in 0..l {
            let v = arr::<S>(S::load_first_or(src.as_ptr(), n, -7.0));
            let z = arr::<S>(S::load_first(src.as_ptr(), n));
            let mut out = [1.5f32; 17];
            S::store_first(out.as_mut_ptr(), a, n);
            for i in 0..l {
                assert_eq!(v[i], if i < n { src[i] } else { -7.0 });
                assert_eq!(z[i], if i < n { src[i] } else { 0.0 });
                assert_eq!(out[i], if i < n { src[i] } else { 1.5 });
            }
            for hi in n..=l {
                // Lanes n..hi of the vector at src + 100 (its other lanes never read).
                let p = src.as_ptr().add(100);
                let g = arr::<S>(S::load_masked(p, S::lane_range(n, hi)));
                for i in 0..l {
                    let want = if i >= n && i < hi { src[100 + i] } else { 0.0 };
                    assert_eq!(
                        g[i].to_bits(),
                        want.to_bits(),
                        "load_masked({n}, {hi}) lane {i}"
                    );
                }
                let m = arr::<S>(S::and(a, S::mask(n, hi)));
                for i in 0..l {
                    let want = if i >= n && i < hi { aa[i] } else { 0.0 };
                    assert_eq!(m[i].to_bits(), want.to_bits(), "mask({n}, {hi}) lane {i}");
                }
            }
        }
        let sum: f32 = aa[..l].iter().sum();
        assert!((S::reduce(a) - sum).abs() <= 1e-3 * sum.abs().max(1.0));
        assert_eq!(
            S::reduce_max(a),
            aa[..l].iter().copied().fold(f32::MIN, f32::max)
        );
        // Lane arithmetic, compares and selects on special values.
        let sp = [
            -0.0f32,
            0.0,
            f32::NAN,
            -3.5,
            2.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1e-40,
        ];
        let mut xs = [0.0f32; 16];
        for (i, v) in xs.iter_mut().enumerate() {
            *v = sp[i % 8];
        }
        let v = S::load(xs.as_ptr());
        let one = S::splat(1.0);
        let two = S::splat(2.0);
        let mx = arr::<S>(S::max(one, v));
        let mn = arr::<S>(S::min(one, v));
        let sel = arr::<S>(S::select(S::gt(v, S::zero()), one, two));
        let sgn = arr::<S>(S::select_sign(v, one, two));
        let kp = arr::<S>(S::keep(S::lt(v, S::zero()), one));
        let cl = arr::<S>(S::clear(S::lt(v, S::zero()), one));
        let ab = arr::<S>(S::abs(v));
        let fm = arr::<S>(S::fnma(two, S::splat(3.0), v));
        let bc = arr::<S>(S::broadcast(xs.as_ptr().add(4)));
        for i in 0..l {
            let x = xs[i];
            let m = |w: f32, g: f32| {
                if x.is_nan() {
                    assert!(g.is_nan(), "lane {i}: {g}");
                } else {
                    assert_eq!(g.to_bits(), w.to_bits(), "lane {i} x = {x}");
                }
            };
            m(if 1.0 > x { 1.0 } else { x }, mx[i]);
            m(if 1.0 < x { 1.0 } else { x }, mn[i]);
            assert_eq!(sel[i], if x > 0.0 { 1.0 } else { 2.0 });
            assert_eq!(sgn[i], if x.is_sign_negative() { 1.0 } else { 2.0 });
            assert_eq!(kp[i], if x < 0.0 { 1.0 } else { 0.0 });
            assert_eq!(cl[i], if x < 0.0 { 0.0 } else { 1.0 });
            assert_eq!(ab[i].to_bits(), x.abs().to_bits());
            m(x - 6.0, fm[i]);
            assert_eq!(bc[i], 2.25);
        }
        // Integer views and the table lookup.
        let ints: [f32; 16] =
            std::array::from_fn(|i| f32::from_bits((i as u32 * 37) ^ 0x8000_0005));
        let iv = S::load(ints.as_ptr());
        let sh = arr::<S>(S::shl::<23>(iv));
        let sr = arr::<S>(S::sra::<1>(iv));
        let ad = arr::<S>(S::iadd(iv, iv));
        let sb = arr::<S>(S::isub(iv, S::splat(f32::from_bits(3))));
        let table: [f32; 16] = std::array::from_fn(|i| (i % 8) as f32 * 10.0);
        let lu = arr::<S>(S::lut8(&table, iv));
        for i in 0..l {
            let b = ints[i].to_bits();
            assert_eq!(sh[i].to_bits(), b << 23);
            assert_eq!(sr[i].to_bits(), ((b as i32) >> 1) as u32);
            assert_eq!(ad[i].to_bits(), b.wrapping_add(b));
            assert_eq!(sb[i].to_bits(), b.wrapping_sub(3));
            assert_eq!(lu[i], (b & 7) as f32 * 10.0);
        }
    }
}

on_isa!(check_on, check, ());

#[test]
fn every_impl_matches_the_lane_definitions() {
    for isa in Isa::available() {
        check_on(isa);
    }
}
