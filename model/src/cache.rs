//! Key/value cache for incremental decoding.
//!
//! Buffers are allocated once for the whole generation (`[batch, kv_heads, capacity, head_dim]`
//! per layer) and written in place, so a decoding step costs no reallocation or concatenation.
//! A cache belongs to one batch of sequences; it is meant for sampling under `tch::no_grad`.

use tch::Tensor;

use crate::{ModelError, Qwen2};

#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    batch_size: i64,
    capacity: i64,
    len: i64,
}

impl KvCache {
    /// An empty cache for `batch_size` sequences of at most `capacity` tokens (prompt and
    /// completion together), on the model's device and in its activation kind.
    pub fn new(model: &Qwen2, batch_size: i64, capacity: i64) -> Result<Self, ModelError> {
        let config = model.config();
        if batch_size <= 0 || capacity <= 0 {
            return Err(ModelError::Input(format!(
                "KV cache needs a positive batch size and capacity, got {batch_size} and {capacity}"
            )));
        }
        if capacity > config.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "KV cache capacity {capacity} exceeds max_position_embeddings {}",
                config.max_position_embeddings
            )));
        }
        let shape = [
            batch_size,
            config.num_key_value_heads,
            capacity,
            config.head_dim,
        ];
        let options = (model.activation_kind(), model.device());
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for _ in 0..config.num_hidden_layers {
            keys.push(Tensor::f_zeros(shape, options)?);
            values.push(Tensor::f_zeros(shape, options)?);
        }
        Ok(Self {
            keys,
            values,
            batch_size,
            capacity,
            len: 0,
        })
    }

    /// Number of positions already cached.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    pub fn batch_size(&self) -> i64 {
        self.batch_size
    }

    /// Forgets the cached positions so the buffers can serve a new batch of the same size.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Replaces this cache's contents with rows of `source`: row `i` becomes `source`'s row
    /// `rows[i]` (`rows`: int64 `[batch_size]`), with all of its cached positions. Prompts that
    /// several rows continue are then prefilled once, in a smaller cache, and spread here.
    pub fn fill_from(&mut self, source: &KvCache, rows: &Tensor) -> Result<(), ModelError> {
        if rows.size() != [self.batch_size] {
            return Err(ModelError::Input(format!(
                "row selection has shape {:?}, the cache holds {} rows",
                rows.size(),
                self.batch_size
            )));
        }
        if source.len > self.capacity || source.keys.len() != self.keys.len() {
            return Err(ModelError::Input(format!(
                "a cache of {} layers and {} positions does not fit one of {} layers and capacity {}",
                source.keys.len(),
                source.len,
                self.keys.len(),
                self.capacity
            )));
        }
        let pairs = self
            .keys
            .iter()
            .zip(&source.keys)
            .chain(self.values.iter().zip(&source.values));
        for (target, from) in pairs {
            target
                .f_narrow(2, 0, source.len)?
                .f_copy_(&from.f_narrow(2, 0, source.len)?.f_index_select(0, rows)?)?;
        }
        self.len = source.len;
        Ok(())
    }

    /// Checks that `new_tokens` more positions fit before any layer writes.
    pub(crate) fn check_room(&self, batch_size: i64, new_tokens: i64) -> Result<(), ModelError> {
        if batch_size != self.batch_size {
            return Err(ModelError::Input(format!(
                "batch of {batch_size} does not match the KV cache's {}",
                self.batch_size
            )));
        }
        if self.len + new_tokens > self.capacity {
            return Err(ModelError::Input(format!(
                "{} cached + {new_tokens} new positions exceed the KV cache capacity {}",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Stores one layer's keys and values for the new positions (after the `len` cached ones)
    /// and returns that layer's keys and values for all positions so far.
    pub(crate) fn store(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (_, _, new, _) = k.size4()?;
        let (Some(keys), Some(values)) = (self.keys.get(layer), self.values.get(layer)) else {
            return Err(ModelError::Input(format!("KV cache has no layer {layer}")));
        };
        keys.f_narrow(2, self.len, new)?.f_copy_(k)?;
        values.f_narrow(2, self.len, new)?.f_copy_(v)?;
        Ok((
            keys.f_narrow(2, 0, self.len + new)?,
            values.f_narrow(2, 0, self.len + new)?,
        ))
    }

    /// Marks `new_tokens` positions as cached once every layer has stored them.
    pub(crate) fn advance(&mut self, new_tokens: i64) {
        self.len += new_tokens;
    }
}
