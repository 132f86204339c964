//! The nodes that become lopper layers: convolution, BatchNorm, pooling, reshapes, Gemm and
//! MatMul with a constant weight (ONNX's `[in, out]` transposed to lopper's `[out, in]`), and
//! Add (residual, or a bias folded into the layer before it).

use super::attrs::Attrs;
use super::fold::{self, BATCH};
use super::{pads, Importer, Val, R, VALUE};
use crate::graph::Op;
use crate::onnx::proto::NodeProto;
use crate::onnx::Tensor;

impl Importer<'_> {
    pub(super) fn conv(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        if let Some(u) = a.unknown(&[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ]) {
            return Err(format!("attribute '{u}' is not supported"));
        }
        let x = self.act(n, 0)?;
        let s = self.shape(&x);
        let w = self.konst(n, 1)?.ok_or("the weight is missing")?;
        if s.len() != 3 || w.dims.len() != 4 {
            return Err(format!(
                "only 2-D convolutions are supported (input [N, {s:?}], weight {:?})",
                w.dims
            ));
        }
        let (o, kh, kw) = (w.dims[0], w.dims[2], w.dims[3]);
        if let Some(k) = a.ints("kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(format!(
                    "kernel_shape {k:?} disagrees with the weight {:?}",
                    w.dims
                ));
            }
        }
        let pair = |name: &str| -> R<[usize; 2]> {
            match a.ints(name) {
                None => Ok([1, 1]),
                Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
                    Ok([v[0] as usize, v[1] as usize])
                }
                Some(v) => Err(format!("{name} {v:?} must be two values >= 1")),
            }
        };
        let stride = pair("strides")?;
        let dilation = pair("dilations")?;
        let groups = usize::try_from(a.int("group", 1)).map_err(|_| "group must be >= 1")?;
        let span = [dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1];
        let padding = pads(a, [s[1], s[2]], stride, span)?;
        let cols = w.dims[1] * kh * kw;
        let wname = self.add_weight(&n.input[1], o, cols, w.as_f32())?;
        let bias = match self.konst(n, 2)? {
            Some(b) => Some(self.add_vector(&n.input[2], b.as_f32())?),
            None => None,
        };
        let op = Op::Conv2d {
            weight: wname,
            bias,
            kernel: [kh, kw],
            stride,
            padding,
            dilation,
            groups,
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    pub(super) fn batchnorm(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        if a.int("training_mode", 0) != 0 {
            return Err("training_mode = 1 is not an inference graph".into());
        }
        let x = self.act(n, 0)?;
        let mut names = Vec::new();
        for i in 1..5 {
            let t = self
                .konst(n, i)?
                .ok_or_else(|| format!("input {i} is missing"))?;
            names.push(self.add_vector(&n.input[i], t.as_f32())?);
        }
        let [gamma, beta, mean, var] =
            <[String; 4]>::try_from(names).map_err(|_| "four parameters")?;
        let op = Op::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            eps: a.float("epsilon", 1e-5),
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    pub(super) fn pool(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        let x = self.act(n, 0)?;
        let k = a.ints("kernel_shape").ok_or("kernel_shape is missing")?;
        if k.len() != 2 || k.iter().any(|&v| v < 1) {
            return Err(format!("kernel_shape {k:?}: only 2-D pooling is supported"));
        }
        let kernel = [k[0] as usize, k[1] as usize];
        let stride = match a.ints("strides") {
            Some(s) if s.len() == 2 && s.iter().all(|&v| v >= 1) => [s[0] as usize, s[1] as usize],
            Some(s) => return Err(format!("strides {s:?} must be two values >= 1")),
            None => [1, 1],
        };
        if a.int("ceil_mode", 0) != 0
            || a.ints("dilations")
                .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err("ceil-mode or dilated pooling is not supported yet".into());
        }
        let s = self.shape(&x);
        if s.len() != 3 {
            return Err(format!("needs [N, C, H, W], got [N, {s:?}]"));
        }
        let padding = pads(a, [s[1], s[2]], stride, kernel)?;
        let op = if n.op_type() == "MaxPool" {
            if n.output.len() > 1 && !n.output[1].is_empty() {
                return Err("MaxPool's Indices output is not supported".into());
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
        } else {
            if padding != [0, 0] {
                return Err("padded AveragePool is not supported yet".into());
            }
            Op::AvgPool { kernel, stride }
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    /// The mean over H and W: `[C]`, or `[C, 1, 1]` when the ONNX op keeps the dims.
    pub(super) fn global_pool(
        &mut self,
        n: &NodeProto,
        label: &str,
        x: String,
        keep: bool,
    ) -> R<()> {
        if self.shape(&x).len() != 3 {
            return Err(format!("needs [N, C, H, W], got [N, {:?}]", self.shape(&x)));
        }
        if !keep {
            return self.emit(label, n, Op::GlobalAvgPool, vec![x]).map(drop);
        }
        let out = self.out(n)?;
        let mid = self.unique(VALUE, &format!("{out}.mean"));
        let c = self.shape(&x)[0];
        let pooled = self.push(label, Op::GlobalAvgPool, vec![x], mid)?;
        let out = self.unique(VALUE, &out);
        let v = self.push(
            &format!("{label}.keepdims"),
            Op::Reshape {
                shape: vec![c, 1, 1],
            },
            vec![pooled],
            out,
        )?;
        self.set(n, Val::Act(v))
    }

    pub(super) fn reshape(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        let x = self.act(n, 0)?;
        let s = self.shape(&x);
        let t = self
            .konst(n, 1)?
            .and_then(|t| t.as_i64())
            .ok_or("the target shape is missing")?;
        let per: usize = s.iter().product();
        let allowzero = a.int("allowzero", 0) != 0;
        let first = *t.first().ok_or("the target shape is empty")?;
        let rest = &t[1..];
        let batch_kept =
            first == BATCH || (first == 0 && !allowzero) || (first == 1 && self.batch_one);
        let shape = if batch_kept {
            fold::reshape_dims(&s, rest, per)?
        } else if first == -1 && rest.iter().all(|&d| d > 0) {
            // [-1, d1, d2]: the batch is inferred, so the rest must hold one example exactly.
            let dims: Vec<usize> = rest.iter().map(|&d| d as usize).collect();
            if dims.iter().product::<usize>() != per {
                return Err(format!("Reshape to {t:?} changes the batch dimension"));
            }
            dims
        } else {
            return Err(format!("Reshape to {t:?} changes the batch dimension"));
        };
        let op = if shape.len() == 1 {
            Op::Flatten
        } else {
            Op::Reshape { shape }
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    pub(super) fn gemm(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        if a.int("transA", 0) != 0 {
            return Err("transA = 1 is not supported (the activation must be [N, F])".into());
        }
        let x = self.act(n, 0)?;
        let b = self.konst(n, 1)?.ok_or("B must be a constant weight")?;
        if b.dims.len() != 2 {
            return Err(format!("B has dims {:?}, not a matrix", b.dims));
        }
        let alpha = a.float("alpha", 1.0);
        let beta = a.float("beta", 1.0);
        let (rows, cols, data) = if a.int("transB", 0) != 0 {
            (b.dims[0], b.dims[1], b.as_f32())
        } else {
            let t = fold::transpose(&b, &[1, 0])?;
            (b.dims[1], b.dims[0], t.as_f32())
        };
        let data = if alpha == 1.0 {
            data
        } else {
            data.iter().map(|v| v * alpha).collect()
        };
        let weight = self.add_weight(&n.input[1], rows, cols, data)?;
        let bias = match self.konst(n, 2)? {
            Some(c) => {
                let v = c.as_f32();
                let v = match v.len() {
                    1 => vec![v[0] * beta; rows],
                    l if l == rows && c.dims.iter().filter(|&&d| d != 1).count() <= 1 => {
                        v.iter().map(|x| x * beta).collect()
                    }
                    _ => {
                        return Err(format!(
                            "C has dims {:?}; a per-output bias is supported",
                            c.dims
                        ))
                    }
                };
                Some(self.add_vector(&n.input[2], v)?)
            }
            None => None,
        };
        self.emit(label, n, Op::Linear { weight, bias }, vec![x])
            .map(drop)
    }

    pub(super) fn matmul(&mut self, n: &NodeProto, label: &str) -> R<()> {
        let x = self.act(n, 0)?;
        let s = self.shape(&x);
        let b = self
            .konst(n, 1)?
            .ok_or("the second input must be a constant weight")?;
        if s.len() != 1 || b.dims.len() != 2 {
            return Err(format!(
                "MatMul of [N, {s:?}] by {:?}: only [N, F] x [F, O] with a constant weight is \
                 supported so far",
                b.dims
            ));
        }
        // ONNX's [in, out] becomes lopper's [out, in].
        let t = fold::transpose(&b, &[1, 0])?;
        let weight = self.add_weight(&n.input[1], b.dims[1], b.dims[0], t.as_f32())?;
        self.emit(label, n, Op::Linear { weight, bias: None }, vec![x])
            .map(drop)
    }

    pub(super) fn add(&mut self, n: &NodeProto, label: &str) -> R<()> {
        let (p, q) = (self.input(n, 0)?.cloned(), self.input(n, 1)?.cloned());
        match (p, q) {
            (Some(Val::Act(x)), Some(Val::Act(y))) => {
                if self.shape(&x) != self.shape(&y) {
                    return Err(format!(
                        "Add of [N, {:?}] and [N, {:?}]: broadcasting two activations is not supported",
                        self.shape(&x),
                        self.shape(&y)
                    ));
                }
                self.emit(label, n, Op::Add, vec![x, y]).map(drop)
            }
            (Some(Val::Act(x)), Some(Val::Const(c))) => {
                self.fold_bias(&x, &n.input[0], &c, &n.input[1], n)
            }
            (Some(Val::Const(c)), Some(Val::Act(x))) => {
                self.fold_bias(&x, &n.input[1], &c, &n.input[0], n)
            }
            _ => Err("Add needs two inputs".into()),
        }
    }

    /// `layer(x) + c` where `c` is one value per output channel: the layer takes `c` as its bias.
    pub(super) fn fold_bias(
        &mut self,
        x: &str,
        xname: &str,
        c: &Tensor,
        cname: &str,
        n: &NodeProto,
    ) -> R<()> {
        let refuse = || {
            format!(
                "Add of a constant {:?} to an activation: only a per-channel bias right after a \
                 MatMul, Gemm or Conv without one is supported",
                c.dims
            )
        };
        // The layer's output must have no other reader, which would see it without the bias.
        let single_reader = self.readers.get(xname) == Some(&1);
        let idx = *self.producer.get(x).ok_or_else(refuse)?;
        let channels = self.shape(x)[0];
        let d = &c.dims;
        // [O] or [1, O] after a Linear; [O, 1, 1] or [1, O, 1, 1] after a Conv.
        let fits = c.len() == channels
            && match &self.graph.nodes[idx].op {
                Op::Linear { bias: None, .. } => d.last() == Some(&channels) && d.len() <= 2,
                Op::Conv2d { bias: None, .. } => {
                    d.len() >= 3 && d.len() <= 4 && d[d.len() - 3..] == [channels, 1, 1]
                }
                _ => false,
            };
        if !(fits && single_reader) {
            return Err(refuse());
        }
        let name = self.add_vector(cname, c.as_f32())?;
        match &mut self.graph.nodes[idx].op {
            Op::Linear { bias, .. } | Op::Conv2d { bias, .. } => *bias = Some(name),
            _ => return Err(refuse()),
        }
        self.set(n, Val::Act(x.to_string()))
    }
}
