//! The non-Linear operations of a BERT encoder, on feature-major activations `[features, T]`
//! where `T` is the number of tokens of all sequences packed back to back (no padding: sequence
//! `b` owns tokens `offsets[b]..offsets[b + 1]`). Packing means padding can never leak into a
//! result, and a batch costs only its real tokens.

/// `x[h, t] = word[id_t, h] + position[s_t, h] + token_type[0, h]`, with `s_t` the position of
/// token `t` inside its sequence. Ids must be below the vocabulary size (checked by the caller).
pub fn embed(
    word: &[f32],
    position: &[f32],
    token_type: &[f32],
    hidden: usize,
    ids: &[u32],
    offsets: &[usize],
    x: &mut [f32],
) {
    let t_all = ids.len();
    // Blocks of a sequence's tokens: a block's table rows (64 x hidden floats) stay cached while
    // each feature row of `x` is written contiguously; token by token, every write would land
    // `T` floats after the last one.
    const BLOCK: usize = 64;
    for w in offsets.windows(2) {
        for t0 in (w[0]..w[1]).step_by(BLOCK) {
            let t1 = (t0 + BLOCK).min(w[1]);
            for h in 0..hidden {
                let out = &mut x[h * t_all + t0..h * t_all + t1];
                for (t, o) in (t0..t1).zip(out) {
                    let (id, s) = (ids[t] as usize, t - w[0]);
                    *o = word[id * hidden + h] + position[s * hidden + h] + token_type[h];
                }
            }
        }
    }
}

use lopper_kernels::{attention, KernelError};

/// LayerNorm over the features of each token, in place: `x = (x - mean) / sqrt(var + eps) * g + b`
/// (biased variance, as PyTorch). `mean` and `rstd` are scratch of length `T`.
pub fn layer_norm(
    x: &mut [f32],
    ln: &super::LayerNorm,
    eps: f32,
    t_all: usize,
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let (gamma, beta) = (&ln.gamma, &ln.beta);
    let hidden = gamma.len();
    mean[..t_all].fill(0.0);
    rstd[..t_all].fill(0.0);
    // Rows are contiguous over tokens, so each pass vectorises across tokens.
    for row in x.chunks_exact(t_all) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let inv = 1.0 / hidden as f32;
    for m in mean[..t_all].iter_mut() {
        *m *= inv;
    }
    for row in x.chunks_exact(t_all) {
        for ((s, v), m) in rstd.iter_mut().zip(row).zip(mean.iter()) {
            let d = v - m;
            *s += d * d;
        }
    }
    for s in rstd[..t_all].iter_mut() {
        *s = 1.0 / (*s * inv + eps).sqrt();
    }
    for (h, row) in x.chunks_exact_mut(t_all).enumerate() {
        let (g, b) = (gamma[h], beta[h]);
        for ((v, m), r) in row.iter_mut().zip(mean.iter()).zip(rstd.iter()) {
            *v = (*v - m) * r * g + b;
        }
    }
}

/// GELU in its erf form (BERT's `hidden_act = "gelu"`), in place, with the kernels crate's
/// vectorisable `erf` (absolute error below 1e-6).
pub fn gelu(x: &mut [f32]) {
    lopper_kernels::math::gelu_inplace(x);
}

/// `y += x`.
pub fn add_into(y: &mut [f32], x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// Scratch one head of an [`attention_head`] call needs for its longest sequence.
pub fn attention_scratch(max_len: usize) -> usize {
    lopper_kernels::attention::scratch_len(max_len)
}

/// Multi-head self-attention without masks (sequences are packed, so every key of a sequence is
/// a real token): for each sequence and head, `ctx = softmax(Q Kᵀ / sqrt(d)) V`. `q`, `k`, `v`
/// are `[hidden, T]`; heads are consecutive groups of `head_dim` feature rows, and `ctx_head`
/// is head `hd`'s rows `[head_dim, T]` of the output. Each sequence runs through the fused
/// kernel of [`lopper_kernels::attention`] on views of the activations (row stride `T`, no
/// copies).
#[allow(clippy::too_many_arguments)]
pub fn attention_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    hd: usize,
    head_dim: usize,
    offsets: &[usize],
    ctx_head: &mut [f32],
    scores: &mut [f32],
) -> Result<(), KernelError> {
    let t_all = *offsets.last().unwrap_or(&0);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let r0 = hd * head_dim * t_all;
    for w in offsets.windows(2) {
        let (base, len) = (w[0], w[1] - w[0]);
        let at = r0 + base;
        let h = attention::Head {
            q: &q[at..],
            k: &k[at..],
            v: &v[at..],
            ld: t_all,
            head_dim,
            len,
            scale,
        };
        attention::head(&h, &mut ctx_head[base..], scores)?;
    }
    Ok(())
}

/// Pools `[hidden, T]` into `[B, hidden]` (example-major, as users read it).
pub fn pool(x: &[f32], hidden: usize, offsets: &[usize], cls: bool, out: &mut [f32]) {
    let t_all = *offsets.last().unwrap_or(&0);
    for (b, w) in offsets.windows(2).enumerate() {
        let o = &mut out[b * hidden..(b + 1) * hidden];
        for (h, slot) in o.iter_mut().enumerate() {
            let row = &x[h * t_all..(h + 1) * t_all];
            *slot = if cls {
                row[w[0]]
            } else {
                let len = (w[1] - w[0]).max(1);
                row[w[0]..w[1]].iter().sum::<f32>() / len as f32
            };
        }
    }
}

/// L2-normalises each row of `[B, hidden]` (sentence-transformers' `Normalize`, eps 1e-12).
pub fn l2_normalize(out: &mut [f32], hidden: usize) {
    for row in out.chunks_exact_mut(hidden) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        for v in row.iter_mut() {
            *v /= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_matches_definition() {
        // 3 features, 2 tokens, feature-major.
        let mut x = vec![1.0, 4.0, 2.0, 4.0, 3.0, 10.0];
        let (mut m, mut r) = (vec![0.0; 2], vec![0.0; 2]);
        let ln = crate::bert::LayerNorm {
            gamma: vec![1.0, 1.0, 2.0],
            beta: vec![0.0, 0.0, 1.0],
        };
        layer_norm(&mut x, &ln, 0.0, 2, &mut m, &mut r);
        let s = (2.0f32 / 3.0).sqrt();
        assert!((x[0] + 1.0 / s).abs() < 1e-5 && (x[2]).abs() < 1e-5);
        assert!((x[4] - (2.0 / s + 1.0)).abs() < 1e-5);
        // Token 1: [4, 4, 10], mean 6, var 8.
        assert!((x[1] + 2.0 / 8f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn gelu_values() {
        let mut x = vec![0.0, 1.0, -1.0, 3.0];
        gelu(&mut x);
        for (g, want) in x.iter().zip([0.0, 0.841_344_8, -0.158_655_26, 2.995_950_3]) {
            assert!((g - want).abs() < 2e-6, "{g} vs {want}");
        }
    }

    #[test]
    fn attention_of_identical_keys_averages_values() {
        // One head of dim 1, one sequence of 3 tokens with equal keys: uniform weights.
        let q = vec![1.0, 2.0, 3.0];
        let k = vec![0.5, 0.5, 0.5];
        let v = vec![1.0, 2.0, 6.0];
        let mut ctx = vec![0.0; 3];
        let mut s = vec![0.0; attention_scratch(3)];
        attention_head(&q, &k, &v, 0, 1, &[0, 3], &mut ctx, &mut s).unwrap();
        for c in ctx {
            assert!((c - 3.0).abs() < 1e-6);
        }
    }

    #[test]
    fn attention_matches_a_plain_loop() {
        // 2 heads of dim 3, two packed sequences of 4 and 2 tokens.
        let (heads, dh, offsets) = (2, 3, [0usize, 4, 6]);
        let t = 6;
        let gen = |s: usize| -> Vec<f32> {
            (0..heads * dh * t)
                .map(|i| (((i * 31 + s * 7) % 17) as f32 - 8.0) / 5.0)
                .collect()
        };
        let (q, k, v) = (gen(1), gen(2), gen(3));
        let mut ctx = vec![0.0; heads * dh * t];
        let mut s = vec![0.0; attention_scratch(4)];
        for (hd, c) in ctx.chunks_mut(dh * t).enumerate() {
            attention_head(&q, &k, &v, hd, dh, &offsets, c, &mut s).unwrap();
        }
        for hd in 0..heads {
            for w in offsets.windows(2) {
                for i in w[0]..w[1] {
                    let sc: Vec<f64> = (w[0]..w[1])
                        .map(|j| {
                            (0..dh)
                                .map(|d| {
                                    let r = (hd * dh + d) * t;
                                    q[r + i] as f64 * k[r + j] as f64
                                })
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for d in 0..dh {
                        let r = (hd * dh + d) * t;
                        let want: f64 = (w[0]..w[1])
                            .zip(&sc)
                            .map(|(j, x)| (x - m).exp() / z * v[r + j] as f64)
                            .sum();
                        assert!((ctx[r + i] as f64 - want).abs() < 1e-5);
                    }
                }
            }
        }
    }
}
