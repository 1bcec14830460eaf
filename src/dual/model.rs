//! A checked graph with its weights, ready to execute: the primal forward pass and per-node contexts.

use candle_core::{DType, Device, Tensor};
use petgraph::graph::NodeIndex;

use crate::error::{Context, Result};
use crate::ir::{Graph, NodeKind};
use crate::ops::{NodeCtx, Role};
use crate::weights::Weights;

pub struct Model {
    pub graph: Graph,
    pub weights: Weights,
    pub dtype: DType,
    pub device: Device,
    /// Dense matrices of affine ops, cached across batches while the weights are fixed (certification).
    /// `None` (the default) recomputes them per call, as training needs.
    pub matrix_cache: Option<std::sync::Mutex<std::collections::HashMap<usize, Tensor>>>,
    /// The input-direction grouping of exact bounds (structural: depends on the graph only), planned once.
    pub grouping: std::sync::OnceLock<Option<std::sync::Arc<super::grouping::Grouping>>>,
}

impl Model {
    pub fn new(graph: Graph, weights: Weights, dtype: DType, device: Device) -> Self {
        Model { graph, weights, dtype, device, matrix_cache: None, grouping: Default::default() }
    }

    /// Cache per-op matrices across calls; only valid while the weights do not change.
    pub fn with_fixed_weights(mut self) -> Self {
        self.matrix_cache = Some(Default::default());
        self
    }

    pub fn ctx(&self, i: NodeIndex) -> NodeCtx<'_> {
        let node = self.graph.node(i);
        NodeCtx {
            name: &node.name,
            attrs: &node.attrs,
            weights: self.weights.node(i),
            in_shapes: node.inputs.iter().map(|j| &self.graph.node(*j).shape).collect(),
            out_shape: &node.shape,
        }
    }

    /// Batch shape `[B, *shape]` of node `i`.
    pub fn batch_shape(&self, i: NodeIndex, b: usize) -> Vec<usize> {
        let mut v = vec![b];
        v.extend_from_slice(&self.graph.node(i).shape);
        v
    }

    /// The primal forward pass, `x: [B, *in] -> logits [B, K]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let vals = self.forward_all(x)?;
        let out = self.graph.output.index();
        vals.into_iter()
            .nth(out)
            .flatten()
            .ok_or_else(|| crate::error::Error::Usage("internal: output not computed".into()))
    }

    /// Every node's value on `x` (index = node index).
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = &self.graph;
        let mut vals: Vec<Option<Tensor>> = vec![None; g.dag.node_count()];
        for i in g.order() {
            let node = g.node(i);
            let v = match node.kind {
                NodeKind::Input => x.to_dtype(self.dtype).context(|| "converting the input".to_string())?,
                NodeKind::Op(op) => {
                    let ctx = self.ctx(i);
                    let inputs: Vec<Tensor> = node.inputs.iter().filter_map(|j| vals[j.index()].clone()).collect();
                    match op.role() {
                        Role::Affine => {
                            let y = op.linear(&ctx, &inputs)?;
                            match op.bias(&ctx)? {
                                Some(b) => y.broadcast_add(&b).context(|| format!("bias of `{}`", node.name))?,
                                None => y,
                            }
                        }
                        Role::Activation => op.activate(&ctx, &inputs[0])?,
                        Role::Unsupported => {
                            return Err(crate::error::Error::Usage(format!("`{}` has no dual rule", op.name())))
                        }
                    }
                }
            };
            vals[i.index()] = Some(v);
        }
        Ok(vals)
    }
}
